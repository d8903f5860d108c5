"""Fixtures for the Video Depth Anything tests, made with the official code on seeded random weights.

    python scripts/make_vda_fixtures.py --official /path/to/Video-Depth-Anything [--extra-path DIR]

`--official` is a checkout of DepthAnything/Video-Depth-Anything (for example
`git --git-dir=<its mirror> archive HEAD | tar -x -C /tmp/vda_official`). Its code imports cv2
(opencv), easydict, einops and torchvision; `--extra-path` adds a folder holding the ones the
Python running this script lacks (e.g. `pip install --target DIR easydict opencv-python-headless`).
None of them is a dependency of the pack: only this script and benchmarks/vda_parity.py need them.

Writes into tests/fixtures/:
- vda_small_keys.json: every key and shape of the official Small model (the layout of
  video_depth_anything_vits.pth), in the official order.
- vda_reference.safetensors: `frames`, the first CLIP_FRAMES frames of the checkout's
  assets/example_videos/davis_rollercoaster.mp4 shrunk to FRAME_SIZE (uint8 RGB), and `depth`, the
  official VideoDepthAnything.infer_video_depth of them (fp32, CPU, input_size INPUT_SIZE) on the
  seeded Small weights (`seeded_vda_weights`), stored as uint16 over its range (metadata `low`,
  `high`; the rounding is 1/131070 of the range).
"""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
MANIFEST = "vda_small_keys.json"
REFERENCE = "vda_reference.safetensors"
CLIP = "assets/example_videos/davis_rollercoaster.mp4"
CLIP_FRAMES = 46  # windows at frames 0, 22 and 44: two alignments, the last window mostly padding
FRAME_SIZE = (45, 80)  # (height, width): 16:9 like the clip, just under VDA's 1.78 aspect limit
INPUT_SIZE = 56  # the network sees 56x98 (4x7 patches) instead of 518x924: same code path, fast
WEIGHT_SEED = 2025
SMALL = {"encoder": "vits", "features": 64, "out_channels": [48, 96, 192, 384]}
# Buffers of the official model (the temporal position encodings): fixed values, not weights.
DERIVED_SUFFIX = ".pos_encoder.pe"


def _midas_fixtures():
    spec = importlib.util.spec_from_file_location("make_midas_fixtures", Path(__file__).with_name("make_midas_fixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seeded_vda_weights(manifest, seed=WEIGHT_SEED):
    """Seeded weights (make_midas_fixtures.seeded_weights) for every key of the official layout but
    the position-encoding buffers. Layer scales (`.gamma`) are near 1, so every DINOv2 block counts,
    and the motion modules' output projections are random, not zero as the official init makes them,
    so the temporal attention changes the depth."""
    weights = [(key, shape) for key, shape in manifest if not key.endswith(DERIVED_SUFFIX)]
    return _midas_fixtures().seeded_weights(weights, seed, "head.scratch.output_conv2.2.bias",
                                            scale_suffixes=(".weight", ".gamma"))


def read_clip(path, frames=CLIP_FRAMES, size=FRAME_SIZE):
    """(frames, height, width, 3) uint8 RGB: the clip's first frames, area-averaged to `size`."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    out = []
    while len(out) < frames:
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f"{path} has only {len(out)} frames, {frames} needed")
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return np.stack(out)


def official_depth(official, weights, frames, input_size=INPUT_SIZE):
    """The official infer_video_depth of uint8 RGB `frames` with `weights` (official layout), on the CPU in fp32."""
    sys.path.insert(0, str(official))
    from video_depth_anything.video_depth import VideoDepthAnything

    model = VideoDepthAnything(**SMALL)
    state = model.state_dict()
    state.update(weights)
    model.load_state_dict(state, strict=True)
    depth, _ = model.eval().infer_video_depth(frames, 8, input_size=input_size, device="cpu", fp32=True)
    return model, torch.from_numpy(depth)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, type=Path, help="Video-Depth-Anything checkout")
    parser.add_argument("--extra-path", action="append", default=[], help="extra sys.path entry (cv2, easydict)")
    args = parser.parse_args(argv)
    sys.path[:0] = args.extra_path
    torch.set_grad_enabled(False)

    frames = read_clip(args.official / CLIP)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    manifest_path = FIXTURES / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())["keys"]
        model, depth = official_depth(args.official, seeded_vda_weights(manifest), frames)
    else:  # the first run: the layout comes from the official model itself
        model, _ = official_depth(args.official, {}, frames[:1])
        manifest = [[k, list(v.shape)] for k, v in model.state_dict().items()]
        model, depth = official_depth(args.official, seeded_vda_weights(manifest), frames)
    manifest_path.write_text(json.dumps({
        "source": "DepthAnything/Video-Depth-Anything video_depth_anything/video_depth.py, "
                  f"VideoDepthAnything(**{SMALL}): the layout of video_depth_anything_vits.pth",
        "keys": manifest,
    }, indent=0) + "\n")
    print(f"{len(manifest)} keys -> {manifest_path}")

    low, high = depth.min().item(), depth.max().item()
    quantised = ((depth - low) / (high - low) * 65535).round().to(torch.int32).to(torch.uint16)
    from safetensors.torch import save_file
    save_file({"frames": torch.from_numpy(frames).contiguous(), "depth": quantised.contiguous()},
              str(FIXTURES / REFERENCE),
              metadata={"low": repr(low), "high": repr(high), "input_size": str(INPUT_SIZE),
                        "weight_seed": str(WEIGHT_SEED), "clip": CLIP})
    per_frame = depth.flatten(1)
    print(f"depth {tuple(depth.shape)} range {low:.4f}..{high:.4f}, mean per-frame std "
          f"{per_frame.std(dim=1).mean().item():.4f} -> {FIXTURES / REFERENCE}")


if __name__ == "__main__":
    main()
