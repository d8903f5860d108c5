#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Builds its own virtual environment on a fresh machine, finds ComfyUI for the ComfyUI tier, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MYV_TEST_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
pip_install() {
    "$PY" -m pip install -q --disable-pip-version-check "$@" 2>"$VENV/pip.log" || { cat "$VENV/pip.log"; exit 1; }
}
# CPU-capable torch that also works with torchvision (ComfyUI imports it); kept if already there.
"$PY" -c "import torch, torchvision" 2>/dev/null || pip_install torch==2.14.1 torchvision==0.29.1
pip_install -r requirements.txt pytest

# The ComfyUI tier: COMFYUI_PATH, else the ComfyUI this pack sits in (custom_nodes/<pack>), else /opt/ComfyUI.
if [ -z "${COMFYUI_PATH:-}" ]; then
    if [ -f ../../main.py ] && [ -d ../../comfy ]; then COMFYUI_PATH="$(cd ../.. && pwd)"
    elif [ -f /opt/ComfyUI/main.py ]; then COMFYUI_PATH=/opt/ComfyUI; fi
fi
if [ -n "${COMFYUI_PATH:-}" ]; then
    export COMFYUI_PATH
    # ComfyUI's requirements without the torch family (installed above), plus requests (imported, unlisted).
    grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$COMFYUI_PATH/requirements.txt" > "$VENV/comfyui-requirements.txt"
    pip_install -r "$VENV/comfyui-requirements.txt" requests
fi
exec "$PY" -m pytest tests "$@"
