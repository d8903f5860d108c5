"""The pack's Video Depth Anything against the official infer_video_depth, rerun from a checkout.

    python benchmarks/vda_parity.py --official /path/to/Video-Depth-Anything [--extra-path DIR]
        [--frames 46] [--size 45 80] [--input-size 56] [--threads 1]

Both sides get the same seeded Small weights in the official layout (scripts/make_vda_fixtures.py:
seeded_vda_weights; the pack reads them from a saved .pth through MYV Depth Estimator Loader's
reader) and the same uint8 frames: the first --frames of the checkout's
assets/example_videos/davis_rollercoaster.mp4 shrunk to --size. The official side runs
VideoDepthAnything.infer_video_depth (fp32, CPU, --input-size); the pack's side
estimate_depth_and_native with the same input size. Prints the windows, the time of each side and
the largest difference relative to the official depth's range, overall and per window. --input-size
518 --size 540 960 is the shipped setting (slow on a CPU: about a minute per window and thread).
The official code needs cv2, easydict, einops and torchvision (see make_vda_fixtures.py).
A benchmark, not a test: it prints, it asserts nothing (tests/test_video_depth.py holds the test).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]
import make_vda_fixtures as script  # noqa: E402
from myv_core.depth_estimation import DepthEstimator, estimate_depth_and_native, load_depth_estimator  # noqa: E402
from myv_core.video_depth import INFER_LEN, OVERLAP, sinusoid, window_count  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="Video-Depth-Anything checkout")
    parser.add_argument("--extra-path", action="append", default=[], help="extra sys.path entry (cv2, easydict)")
    parser.add_argument("--frames", type=int, default=46)
    parser.add_argument("--size", type=int, nargs=2, default=[45, 80], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--input-size", type=int, default=56)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sys.path[:0] = args.extra_path
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    frames = script.read_clip(args.official / script.CLIP, args.frames, tuple(args.size))
    manifest = [[k, list(v.shape)] for k, v in script.official_depth(args.official, {}, frames[:1])[0].state_dict().items()]
    weights = script.seeded_vda_weights(manifest)
    start = time.perf_counter()
    _, official = script.official_depth(args.official, weights, frames, args.input_size)
    official_s = time.perf_counter() - start

    for key, shape in manifest:
        if key.endswith(script.DERIVED_SUFFIX):
            weights[key] = sinusoid(shape[1], shape[2], "cpu", torch.float32)[None]
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(weights, Path(tmp) / "video_depth_anything_vits.pth")
        del weights
        loaded = load_depth_estimator(Path(tmp) / "video_depth_anything_vits.pth")
    estimator = DepthEstimator(loaded.network, loaded.kind, args.input_size)
    start = time.perf_counter()
    ours, _ = estimate_depth_and_native(estimator, torch.from_numpy(frames).float() / 255, batch_size=8)
    ours_s = time.perf_counter() - start

    depth_range = (official.max() - official.min()).item()
    error = (ours[:, 0] - official).abs().flatten(1).amax(dim=1) / depth_range
    windows = window_count(args.frames)
    print(f"{args.frames} frames {args.size[0]}x{args.size[1]}, input size {args.input_size}, {windows} windows, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"official {official_s:.1f} s, pack {ours_s:.1f} s; official depth range {depth_range:.4f}")
    step = INFER_LEN - OVERLAP
    for window in range(windows):
        first, last = window * step, min(args.frames, window * step + INFER_LEN) - 1
        print(f"  window {window}: frames {first}..{last}: max error / range {error[first:last + 1].max().item():.2e}")
    print(f"max |pack - official| / official range: {error.max().item():.2e}")


if __name__ == "__main__":
    main()
