"""torch.compile (inductor) through core "TorchCompileModel" against eager, and what a new shape costs.

    python benchmarks/torch_compile.py [--frames 16 24 32] [--size 16] [--steps 4] [--device auto]

In-process ComfyUI with its PyTorch SDPA attention (--use-pytorch-cross-attention, what it picks on
a GPU), the tiny model (tests/fixtures/myv_tiny_unet.safetensors) through MYVCheckpointLoader (fp32)
-> MYVApplyDepth -> comfy.sample.sample, euler, cfg 7.5 (cond and uncond in one UNet call).
Inductor's caches start empty (a fresh TORCHINDUCTOR_CACHE_DIR, no FX graph cache), so every
compile is a cold one.

Variants:
- eager: no compile, every shape (the first frame count, the further frame counts, then the first
  frame count at twice the latent size);
- core node: comfy_extras' TorchCompileModel.execute(model, "inductor"), i.e. torch's default
  dynamic=None, on the first shape only. On the next shape it compiles with symbolic sizes, which
  is very slow for this UNet (docs/torch_compile.md); --core-node-all-shapes runs it anyway;
- dynamic=False: set_torch_compile_wrapper(..., dynamic=False) on a clone, as compile nodes that
  expose "dynamic" (e.g. kijai's) do it: every new shape is a static compile of its own;
- dynamic=True (only when asked for with --variants): every size symbolic from the first compile.

Printed per variant and shape: the first sample's wall time (compile included), how many graphs
inductor compiled for it, the steady step time (median of --repeats samples of --steps steps,
divided by --steps) and its ratio to eager in the same run, and max |compiled - eager| of the
sampled latent over max |eager|. A benchmark, not a test: it asserts nothing about time.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch._dynamo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_step import CHECKPOINT, find_comfyui, load_checkpoint_model, load_comfyui, pick_device, sync  # noqa: E402

CFG = 7.5


class CountingInductor:
    """Inductor's compile_fx, counting the graphs it is handed (one per compile or recompile)."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs, **options):
        from torch._inductor.compile_fx import compile_fx
        self.graphs += 1
        return compile_fx(gm, example_inputs)


class Shape:
    """One frames x size case: its depth IMAGE, noise and conditioning, fixed for every variant."""

    def __init__(self, frames, size, steps, device):
        g = torch.Generator().manual_seed(frames * 1000 + size)
        self.frames, self.size, self.steps, self.device = frames, size, steps, device
        self.depth = torch.rand(frames, 8 * size, 8 * size, 3, generator=g)
        self.positive = [[torch.randn(1, 77, 64, generator=g), {}]]
        self.negative = [[torch.randn(1, 77, 64, generator=g), {}]]
        self.latent = torch.zeros(frames, 4, size, size)
        self.noise = torch.randn(self.latent.shape, generator=g)

    def sample(self, pack, model):
        """Seconds and result of sampling this shape with `model` (depth applied by MYV Apply Depth)."""
        import comfy.sample
        clip = pack.nodes.depth.MYVApplyDepth().apply(model, self.depth, "per_frame")[0]
        start = time.perf_counter()
        out = comfy.sample.sample(clip, self.noise, self.steps, CFG, "euler", "normal", self.positive,
                                  self.negative, self.latent, disable_pbar=True, seed=0)
        sync(self.device)
        return time.perf_counter() - start, out


def run_variant(name, pack, model, counter, shapes, repeats, eager):
    """Print one row per shape; `eager` maps (frames, size) -> (latent, step seconds), filled by eager."""
    for shape in shapes:
        key = (shape.frames, shape.size)
        before = counter.graphs if counter else 0
        first, out = shape.sample(pack, model)
        graphs = (counter.graphs - before) if counter else 0
        step = statistics.median(shape.sample(pack, model)[0] for _ in range(repeats)) / shape.steps
        if counter is None:
            eager[key] = (out, step)
        error = ((out - eager[key][0]).abs().max() / eager[key][0].abs().max()).item()
        print(f"{name:>13} {shape.frames:6d} {8 * shape.size:4d}px {first:9.1f} s {graphs:6d} "
              f"{1000 * step:9.1f} ms {step / eager[key][1]:8.2f} {error:11.1e}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 24, 32])
    parser.add_argument("--size", type=int, default=16, help="latent size (16 = 128x128 video)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--variants", nargs="+", default=["core node", "dynamic=False"],
                        choices=["core node", "dynamic=False", "dynamic=True"])
    parser.add_argument("--core-node-all-shapes", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="myv_inductor_")
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"  # a variant must not reuse another's compiled graph
    device = pick_device(args.device)
    comfyui = find_comfyui(args.comfyui)
    pack = load_comfyui(comfyui, device, pytorch_attention=True)
    import comfy.ldm.modules.attention
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    model = load_checkpoint_model(pack, CHECKPOINT)
    shapes = [Shape(f, args.size, args.steps, device) for f in args.frames]
    shapes.append(Shape(args.frames[0], 2 * args.size, args.steps, device))

    def core_node(counter):
        return TorchCompileModel.execute(model, counter)[0]

    def compiled(dynamic):
        def make(counter):
            m = model.clone(**({"disable_dynamic": True} if hasattr(model, "is_dynamic") else {}))
            set_torch_compile_wrapper(m, backend=counter, dynamic=dynamic)
            return m
        return make

    print(f"ComfyUI {comfyui}, torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"attention {comfy.ldm.modules.attention.optimized_attention.__name__}, cfg {CFG}, {args.steps} steps")
    print(f"{'variant':>13} {'frames':>6} {'size':>6} {'first sample':>12} {'graphs':>6} {'step':>12} "
          f"{'vs eager':>8} {'max |d|/max':>11}")
    eager = {}
    run_variant("eager", pack, model, None, shapes, args.repeats, eager)
    variants = [("core node", core_node, shapes if args.core_node_all_shapes else shapes[:1]),
                ("dynamic=False", compiled(False), shapes), ("dynamic=True", compiled(True), shapes)]
    for name, make, its_shapes in variants:
        if name in args.variants:
            torch._dynamo.reset()
            counter = CountingInductor()
            run_variant(name, pack, make(counter), counter, its_shapes, args.repeats, eager)


if __name__ == "__main__":
    main()
