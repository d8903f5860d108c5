"""Speed and peak memory of each depth estimator, and Video Depth Anything's memory over long clips.

    python benchmarks/depth_estimators.py [--frames 32] [--size 256 256] [--batch-size 4] [--threads 1]
    python benchmarks/depth_estimators.py --long 64 256 1024 [--size 64 64] [--short-side 126]

Default: MiDaS DPT-Hybrid (seeded weights in the original layout, as benchmarks/depth_speed.py),
Depth Anything V2 Small (transformers' random init) and Video Depth Anything Small (the seeded
weights of scripts/make_vda_fixtures.py, official layout, renamed by the pack's loader code) run
MYV Estimate Depth's core (estimate_depth_and_native) on the same --frames random frames at their
shipped input sizes (MiDaS 384x384; the others short side 518, so 518x518 for square frames), each in
a fresh subprocess on the CPU in fp32. Prints frames per second and the peak memory of the call:
growth of the resident set (VmHWM after a reset, over the resident set just before; the weights are
loaded before), and how much of it is the returned depth.

--long: Video Depth Anything alone on clips of each length at --short-side (smaller than 518 so
that 1000+ frames take minutes on a CPU; the windowing is the same at any size). Peak growth minus
the returned depth is the working memory, which should not grow with the clip.
A benchmark, not a test: it prints, it asserts nothing.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]
from myv_core.depth_estimation import (KINDS, DepthEstimator, convert_vda_state_dict,  # noqa: E402
                                       estimate_depth_and_native, vda_configs)
from myv_core.video_depth import VideoDepthNetwork, window_count  # noqa: E402

NAMES = {"midas": "MiDaS DPT-Hybrid", "depth_anything": "Depth Anything V2 Small",
         "video_depth_anything": "Video Depth Anything Small"}


def seeded_vda_network():
    sys.path.insert(0, str(REPO / "scripts"))
    from make_vda_fixtures import FIXTURES, MANIFEST, seeded_vda_weights

    manifest = json.loads((FIXTURES / MANIFEST).read_text())["keys"]
    sd = convert_vda_state_dict(seeded_vda_weights(manifest))
    network = VideoDepthNetwork(*vda_configs(sd))
    network.load_state_dict(sd, strict=True)
    return network.eval()


def depth_anything_v2_small():
    """transformers' DepthAnythingForDepthEstimation at Depth-Anything-V2-Small-hf's shapes, random init."""
    import transformers

    backbone = transformers.Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                         image_size=518, patch_size=14, out_indices=[3, 6, 9, 12],
                                         apply_layernorm=True, reshape_hidden_states=False)
    config = transformers.DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384, patch_size=14,
                                              neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64,
                                              head_hidden_size=32)
    return transformers.DepthAnythingForDepthEstimation(config).eval()


def build(kind, short_side):
    if kind == "midas":
        from depth_speed import seeded_midas_estimator
        return seeded_midas_estimator()
    network = depth_anything_v2_small() if kind == "depth_anything" else seeded_vda_network()
    return DepthEstimator(network, kind, short_side)


def worker(job):
    from unet_step import PeakMemory

    torch.set_num_threads(job["threads"])
    estimator = build(job["kind"], job["short_side"])
    images = torch.rand(job["frames"], *job["size"], 3, generator=torch.Generator().manual_seed(0))
    memory = PeakMemory("cpu")
    memory.start()
    start = time.perf_counter()
    depth, native = estimate_depth_and_native(estimator, images, job["batch_size"])
    seconds = time.perf_counter() - start
    peak = memory.stop()
    out = depth.numel() * depth.element_size() + native.numel() * native.element_size()
    print(json.dumps({"seconds": seconds, "peak": peak, "out": out, "native": list(native.shape[-2:]),
                      "how": memory.how, "params": sum(p.numel() for p in estimator.network.parameters())}))


def run(job):
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{job}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n):
    return n / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
                        help="frame size (default 256 256; 64 64 with --long)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--long", type=int, nargs="+", metavar="FRAMES", help="Video Depth Anything over these lengths")
    parser.add_argument("--short-side", type=int, default=None, help="input short side (default 518; 126 with --long)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    size = args.size or ([64, 64] if args.long else [256, 256])
    short_side = args.short_side or (126 if args.long else 518)
    common = {"size": size, "batch_size": args.batch_size, "threads": args.threads, "short_side": short_side}
    print(f"torch {torch.__version__}, CPU, fp32, {args.threads} thread(s), batch_size {args.batch_size}, "
          f"frames {size[0]}x{size[1]}")
    if args.long:
        print(f"{'frames':>6}  {'windows':>7}  {'s':>7}  {'frames/s':>8}  {'peak MiB':>8}  {'depth out MiB':>13}  "
              f"{'working MiB':>11}")
        for frames in args.long:
            r = run({**common, "kind": "video_depth_anything", "frames": frames})
            print(f"{frames:>6}  {window_count(frames):>7}  {r['seconds']:>7.1f}  {frames / r['seconds']:>8.2f}  "
                  f"{mib(r['peak']):>8.0f}  {mib(r['out']):>13.1f}  {mib(r['peak'] - r['out']):>11.0f}")
        print(f"input {r['native'][0]}x{r['native'][1]}; peak memory by {r['how']}")
        return
    print(f"{'estimator':>28}  {'params M':>8}  {'input':>9}  {'frames':>6}  {'s':>7}  {'frames/s':>8}  {'peak MiB':>8}")
    for kind in args.kinds:
        r = run({**common, "kind": kind, "frames": args.frames})
        print(f"{NAMES[kind]:>28}  {r['params'] / 1e6:>8.1f}  {r['native'][0]:>4}x{r['native'][1]:<4}  {args.frames:>6}  "
              f"{r['seconds']:>7.1f}  {args.frames / r['seconds']:>8.3f}  {mib(r['peak']):>8.0f}")
    print(f"peak memory by {r['how']}: growth of the call over the resident set with the weights loaded")


if __name__ == "__main__":
    main()
