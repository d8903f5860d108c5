#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this, once per ComfyUI).
#
# ComfyUI tier: COMFYUI_PATH, else the ComfyUI this pack sits in (ComfyUI/custom_nodes/<pack>).
# Python: a venv of the pack's own, MYV_TEST_VENV (default .venv-tests), made if missing or broken.
# When the python3 on PATH has torch and torchvision (and torchaudio where ComfyUI imports it), e.g.
# ComfyUI's own environment, the venv sees that Python's packages (every site directory on its path,
# through a .pth file: --system-site-packages alone would miss a venv's own) and gets only what they
# lack; ComfyUI's Python is left exactly as it was. Otherwise the venv has its own CPU-capable torch.
# Into the venv go the pack's requirements, the test-only packages and ComfyUI's requirements without
# the torch family; torch is never installed over one the venv already sees.
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

VENV="${MYV_TEST_VENV:-.venv-tests}"
PY="$VENV/bin/python"
BASE=""
if has_torch python3; then
    BASE="$(python3 -c 'import sys; print(sys.executable)')"
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
    echo "${BASE:-own torch}" > "$VENV/$MARK"
    if [ -n "$BASE" ]; then
        # The base Python's package folders, after the venv's own (which shadow them for what pip adds).
        "$BASE" -c 'import os, sys; print("\n".join(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")))' \
            > "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/myv-base-python.pth"
    else
        pip_install "${torch_pins[@]}"
    fi
}
made_for() { local base; base="$(cat "$VENV/$MARK")"; echo "${base:-own torch}"; }  # empty: made before bases
# Made again when missing, broken, built for another ComfyUI or (if this script made it) another base.
if ! has_torch "$PY" || { [ -f "$VENV/$MARK" ] && [ "$(made_for)" != "${BASE:-own torch}" ]; }; then
    make_venv
fi
echo "tests/run.sh: Python $PY (${BASE:+packages of $BASE, }own venv); ComfyUI ${COMFYUI_PATH:-none} ${comfyui_version}"
pip_install -r requirements.txt -r tests/requirements.txt
if [ -n "${COMFYUI_PATH:-}" ]; then
    # requests: imported by ComfyUI 0.3.64 without being listed.
    grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$COMFYUI_PATH/requirements.txt" > "$log.req"
    pip_install -r "$log.req" requests
fi
rm -f "$log" "$log.req"
exec "$PY" -m pytest tests "$@"
