"""Frames per second of MYV Estimate Depth's batched path against a plain per-frame loop.

    .venv/bin/python benchmarks/depth_speed.py [--frames 16] [--size 256] [--batch-sizes 4 8 16]

Both sides run the same full-size MiDaS DPT-Hybrid (seeded random weights in the original layout,
converted by the pack's key mapping, as tests/test_depth_estimation.py does) on the same frames in
the same run. The per-frame loop is the plain way: one frame at a time through the transformers
model with the same pre- and post-processing. A benchmark, not a test: it prints, it asserts nothing.
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
import transformers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from myv_core.depth_estimation import (DepthEstimator, convert_midas_state_dict, dpt_hybrid_config,  # noqa: E402
                                       estimate_depth)


def seeded_midas_estimator():
    spec = importlib.util.spec_from_file_location("make_midas_fixtures", REPO / "scripts" / "make_midas_fixtures.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    keys = json.loads((REPO / "tests" / "fixtures" / "midas_dpt_hybrid_keys.json").read_text())["keys"]
    sd = convert_midas_state_dict(fixtures.seeded_midas_weights(keys))
    network = transformers.DPTForDepthEstimation(dpt_hybrid_config(sd))
    network.load_state_dict(sd, strict=False)
    return DepthEstimator(network.eval(), "midas")


@torch.no_grad()
def per_frame_loop(estimator, images):
    frames = images.permute(0, 3, 1, 2)
    out = []
    for frame in frames:
        pixels = estimator.preprocess(frame[None])
        depth = estimator.network(pixel_values=pixels).predicted_depth
        out.append(estimator.postprocess(depth, frame.shape[-2:]))
    return torch.cat(out)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="frame height and width")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    estimator = seeded_midas_estimator()
    images = torch.rand(args.frames, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    estimate_depth(estimator, images[:2], batch_size=2)  # warm-up
    loop_time, reference = timed(lambda: per_frame_loop(estimator, images))
    print(f"MiDaS DPT-Hybrid (full size, random weights), {args.frames} frames {args.size}x{args.size}, "
          f"cpu, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'path':>22}  {'frames/s':>8}  {'vs loop':>7}  {'max |d|':>8}")
    print(f"{'per-frame loop':>22}  {args.frames / loop_time:>8.2f}  {1.0:>7.2f}  {0.0:>8.1e}")
    for batch in args.batch_sizes:
        seconds, depth = timed(lambda: estimate_depth(estimator, images, batch_size=batch))
        print(f"{'MYVEstimateDepth b=' + str(batch):>22}  {args.frames / seconds:>8.2f}  {loop_time / seconds:>7.2f}  "
              f"{(depth - reference).abs().max().item():>8.1e}")


if __name__ == "__main__":
    main()
