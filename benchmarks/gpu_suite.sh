#!/usr/bin/env bash
# Every GPU figure that README.md and docs/performance.md ask for, in one run, the quick ones first:
#
#     bash benchmarks/gpu_suite.sh [OUTDIR]
#
# Run it with ComfyUI's Python as python3 (or PYTHON=/path/to/python) and COMFYUI_PATH set, or from
# ComfyUI/custom_nodes/<this pack>. Each step writes OUTDIR/<step>.log (default benchmarks/gpu-results)
# and goes on when one fails, so a run cut short still leaves what it measured:
#   environment         torch, CUDA and the GPU;
#   attention_tests     tests/test_attention.py, whose CUDA cases test the Triton kernel on the GPU;
#   temporal_attention  the attention op (Triton kernel) against the official formulation, 16-256 frames
#                       at the first level of the full-size UNet (2x32x32 sequences, 5 heads);
#   full_size_16        full-size model, 16 frames 256x256 cfg 7.5: step time and peak VRAM per weight dtype;
#   full_size_64        the same in one 64-frame pass, fp16 (MYV Long Video Sampler stays at the 16-frame peak);
#   long_video          chained windows, core context windows and one pass through the nodes (tiny model);
#   compiled            full size, 16 frames, fp16 through core TorchCompileModel (compile time included).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/gpu-results}"
py="${PYTHON:-python3}"
mkdir -p "$out"

step() {
    local name=$1
    shift
    echo "=== $name: $*"
    PYTHONUNBUFFERED=1 "$py" "$@" 2>&1 | tee "$out/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]}"
}

step environment -c "import torch; print(torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
step attention_tests -m pytest tests/test_attention.py -q -p no:cacheprovider
step temporal_attention benchmarks/temporal_attention.py --device cuda --frames 16 64 256 --seqs 2x32x32 --heads 5
step full_size_16 benchmarks/full_size_step.py --dtype fp16 bf16 fp8_e4m3fn fp8_e4m3fn_fast --steps 3
step full_size_64 benchmarks/full_size_step.py --frames 64 --dtype fp16 --steps 2
step long_video benchmarks/long_video.py --frames 32 64 128 --device cuda
step compiled benchmarks/full_size_step.py --dtype fp16 --compile --steps 3
