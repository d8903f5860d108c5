#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this, once per ComfyUI).
#
# ComfyUI tier: COMFYUI_PATH, else the ComfyUI this pack sits in (ComfyUI/custom_nodes/<pack>).
# Python: MYV_TEST_VENV (a venv, made if missing), else the python3 on PATH when it already has torch
# and torchvision (and torchaudio where ComfyUI imports it), e.g. ComfyUI's own environment, else a
# venv in .venv with a CPU-capable torch. Into that Python it installs the pack's requirements,
# pytest and ComfyUI's requirements without the torch family; it never installs torch into a Python
# that already has one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${COMFYUI_PATH:-}" ] && [ -f ../../main.py ] && [ -d ../../comfy ]; then
    COMFYUI_PATH="$(cd ../.. && pwd)"
fi
comfyui_version=""
if [ -n "${COMFYUI_PATH:-}" ]; then
    export COMFYUI_PATH
    comfyui_version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$COMFYUI_PATH/comfyui_version.py" 2>/dev/null || true)
fi
# 0.3.x imports torchaudio only in its audio nodes; later releases import it from comfy.sd, and the
# newest torchaudio on the package index here is 2.11.0, which needs torch 2.11.0.
if [ -n "$comfyui_version" ] && [[ "$comfyui_version" != 0.3.* ]]; then
    torch_modules="torch, torchvision, torchaudio"
    torch_pins=(torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0)
else
    torch_modules="torch, torchvision"
    torch_pins=(torch==2.14.1 torchvision==0.29.1)
fi

has_torch() { "$1" -c "import $torch_modules" 2>/dev/null; }

if [ -n "${MYV_TEST_VENV:-}" ]; then
    VENV="$MYV_TEST_VENV"
elif has_torch python3; then
    VENV=""
else
    VENV=.venv
fi
log="$(mktemp)"
pip_install() {
    "$PY" -m pip install -q --disable-pip-version-check "$@" 2>"$log" || { cat "$log"; exit 1; }
}
MARK=made-by-tests-run.sh
make_venv() {  # only over nothing or over a venv this script made
    if [ -e "$VENV" ] && [ ! -f "$VENV/$MARK" ]; then
        echo "tests/run.sh: $VENV is not a working venv with torch, and this script did not make it: fix or remove it" >&2
        exit 1
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    touch "$VENV/$MARK"
    pip_install "${torch_pins[@]}"
}
if [ -n "$VENV" ]; then
    PY="$VENV/bin/python"
    has_torch "$PY" || make_venv  # missing, broken, or built for another ComfyUI
else
    PY="$(command -v python3)"
fi
echo "tests/run.sh: Python $PY; ComfyUI ${COMFYUI_PATH:-none} ${comfyui_version}"
pip_install -r requirements.txt -r tests/requirements.txt
if [ -n "${COMFYUI_PATH:-}" ]; then
    # requests: imported by ComfyUI 0.3.64 without being listed.
    grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$COMFYUI_PATH/requirements.txt" > "$log.req"
    pip_install -r "$log.req" requests
fi
rm -f "$log" "$log.req"
exec "$PY" -m pytest tests "$@"
