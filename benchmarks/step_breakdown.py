"""Where one sampling step of the tiny model goes, by module type (this pack through ComfyUI).

    .venv/bin/python benchmarks/step_breakdown.py [--frames 16] [--cfg 7.5] [--pytorch-attention]

A benchmark, not a test. Runs the same step as benchmarks/unet_step.py's "ours" side (MYV Checkpoint
Loader, MYV Apply Depth, one euler step through comfy.sample.sample_custom) with forward hooks on
ComfyUI's SpatialTransformer, its CrossAttention and FeedForward, ResBlock, and the pack's
TemporalTransformer and TemporalConvBlock, and prints each type's time per step and its share of the
step. Types nest (CrossAttention and FeedForward are inside SpatialTransformer), so shares do not add
up to 100 %. The hooks add a little time of their own.
"""

import argparse
import collections
import importlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_step import OursSide, find_comfyui  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--size", type=int, default=32, help="latent height = width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pytorch-attention", action="store_true",
                        help="ComfyUI's --use-pytorch-cross-attention (its choice on a GPU)")
    args = parser.parse_args()

    job = dict(device="cpu", frames=args.frames, cfg=args.cfg, comfyui=find_comfyui(args.comfyui),
               pytorch_attention=args.pytorch_attention, size=args.size, seed=0, timestep=500)
    side = OursSide(job)
    from comfy.ldm.modules.attention import CrossAttention, FeedForward, SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
    temporal = importlib.import_module("comfyui_makeyourvideo.myv_core.temporal")
    types = {"SpatialTransformer (ComfyUI)": SpatialTransformer, "  CrossAttention (ComfyUI)": CrossAttention,
             "  FeedForward (ComfyUI)": FeedForward, "ResBlock (ComfyUI)": ResBlock,
             "TemporalTransformer (pack)": temporal.TemporalTransformer,
             "TemporalConvBlock (pack)": temporal.TemporalConvBlock}
    spent = collections.defaultdict(float)

    def hook(module, name):
        started = []
        module.register_forward_pre_hook(lambda m, a: started.append(time.perf_counter()))
        module.register_forward_hook(lambda m, a, o: spent.__setitem__(name, spent[name] + time.perf_counter()
                                                                      - started.pop()))

    layers = side.model.get_additional_models_with_key("makeyourvideo")[0].model
    for module in (*side.model.model.diffusion_model.modules(), *layers.modules()):
        for name, kind in types.items():
            if type(module) is kind:
                hook(module, name)
    with torch.inference_mode():
        side.step()  # warm-up
        spent.clear()
        start = time.perf_counter()
        for _ in range(args.repeats):
            side.step()
        step = (time.perf_counter() - start) / args.repeats
    print(f"{args.frames} frames, cfg {args.cfg}, latent {args.size}x{args.size}, ComfyUI attention: "
          f"{side.info['attention']}, {torch.get_num_threads()} threads: {step * 1e3:.0f} ms per step")
    for name in types:
        print(f"{name:30s} {spent[name] / args.repeats * 1e3:8.1f} ms  {spent[name] / args.repeats / step:5.0%}")


if __name__ == "__main__":
    main()
