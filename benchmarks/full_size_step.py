"""Seconds per sampling step and peak memory of the full-size Make-Your-Video model (random weights).

    .venv/bin/python benchmarks/full_size_step.py [--frames 16] [--size 32] [--dtype fp16 bf16 ...] [--steps 2]
                                                  [--compile] [--pytorch-attention]

Builds the released architecture (every key and shape from tests/fixtures/myv_key_manifest_full.json,
1.6B UNet parameters) with random weights through the pack's own loading path (split, SD2 model in
ComfyUI, temporal layers attached), applies a random depth video and times ComfyUI sampling at cfg
7.5 (cond + uncond, as the official set-up). Random weights give the real cost, not a real video.

--dtype takes MYV Checkpoint Loader's weight_dtype names, one run each from the same random weights:
fp32, fp16, bf16 and the fp8 ones (stored in fp8, computed in ComfyUI's manual-cast dtype).
--compile runs the model through core "TorchCompileModel" (inductor) as a user would: the warm-up
step then includes the compile, and it prints how many graphs dynamo compiled and its graph breaks.
The model is then built without dynamic VRAM, since the core node asks for a non-dynamic clone
(which MYV Checkpoint Loader's cached_patcher_init gives a real checkpoint).
--pytorch-attention is ComfyUI's --use-pytorch-cross-attention (its choice on a GPU).

A benchmark, not a test: it prints, it asserts nothing. fp16 is for GPUs; the CPU runs fp32.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_step import REPO, PeakMemory, find_comfyui, load_comfyui, pick_device, sync  # noqa: E402


def random_full_model_state_dict(seed=0):
    manifest = json.loads((REPO / "tests" / "fixtures" / "myv_key_manifest_full.json").read_text())
    g = torch.Generator().manual_seed(seed)
    return {manifest["prefix"] + k: torch.randn(shape, generator=g) * 0.02 for k, shape in manifest["keys"].items()}


def time_variant(pack, parts, dtype, args, device):
    """Build one variant from the split weights, sample one warm-up and args.steps timed steps, print."""
    import comfy.model_management
    import comfy.sample

    start = time.perf_counter()
    base, _ = pack.nodes.loaders.spatial_model(parts, dtype, disable_dynamic=args.compile)
    model = pack.nodes.patching.attach_temporal(base, parts.temporal)
    if args.compile:
        from comfy_extras.nodes_torch_compile import TorchCompileModel
        from torch._dynamo.utils import counters
        counters.clear()
        model = TorchCompileModel.execute(model, "inductor")[0]
    label = f"{dtype}{' compiled' if args.compile else ''}"
    print(f"{label}: built in {time.perf_counter() - start:.0f} s", flush=True)

    g = torch.Generator().manual_seed(1)
    depth = torch.rand(args.frames, 8 * args.size, 8 * args.size, 3, generator=g)
    model = pack.nodes.depth.MYVApplyDepth().apply(model, depth, "per_frame")[0]
    positive = [[torch.randn(1, 77, 1024, generator=g), {}]]
    negative = [[torch.randn(1, 77, 1024, generator=g), {}]]
    latent = torch.zeros(args.frames, 4, args.size, args.size)

    def sample(steps):
        noise = comfy.sample.prepare_noise(latent, 0)
        return comfy.sample.sample(model, noise, steps, 7.5, "ddpm", "ddim_uniform", positive, negative, latent,
                                   disable_pbar=True, seed=0)

    memory = PeakMemory(device)
    with torch.inference_mode():
        memory.start()
        start = time.perf_counter()
        sample(1)  # warm-up: loads the model onto the device (and compiles it with --compile)
        sync(device)
        warm_up = time.perf_counter() - start
        start = time.perf_counter()
        sample(args.steps)
        sync(device)
        per_step = (time.perf_counter() - start) / args.steps
        peak = memory.stop()
    print(f"{label}: frames {args.frames}, {8 * args.size}x{8 * args.size}, cfg 7.5: {per_step:.2f} s per step "
          f"(warm-up step {warm_up:.1f} s), 50 steps ~ {50 * per_step / 60:.1f} min; "
          f"peak memory growth {peak / 2**30:.2f} GiB ({memory.how})", flush=True)
    if args.compile:
        print(f"{label}: {counters['stats']['unique_graphs']} graphs compiled, graph breaks "
              f"{dict(counters['graph_break']) or 'none'}", flush=True)
    del model, base
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="latent size (32 = 256x256 video)")
    parser.add_argument("--dtype", nargs="+", choices=["fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e4m3fn_fast",
                                                       "fp8_e5m2"],
                        help="MYV Checkpoint Loader's weight_dtype, one run each (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps to time (after one warm-up step)")
    parser.add_argument("--compile", action="store_true", help="through core TorchCompileModel (inductor)")
    parser.add_argument("--pytorch-attention", action="store_true",
                        help="ComfyUI's --use-pytorch-cross-attention (SDPA, its GPU default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--comfyui")
    args = parser.parse_args()
    device = pick_device(args.device)
    dtypes = args.dtype or ["fp16" if device == "cuda" else "fp32"]
    pack = load_comfyui(find_comfyui(args.comfyui), device, args.pytorch_attention)
    sys.path.append(str(REPO))
    from myv_core.checkpoint import split_checkpoint

    start = time.perf_counter()
    parts = split_checkpoint(random_full_model_state_dict())
    print(f"random full-size weights in {time.perf_counter() - start:.0f} s (device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
    for dtype in dtypes:
        time_variant(pack, parts, dtype, args, device)


if __name__ == "__main__":
    main()
