"""The micro model steered by a per-clip consistent depth video, as Video Depth Anything gives it.

    python benchmarks/micro_vda.py [--clips 4] [--frames 16 64] [--comfyui PATH]

Depth flicker of an estimator with random weights on a real clip says nothing, so this asks the
other question with the trained micro model (tests/fixtures/myv_micro.safetensors): does a depth
video that is one consistent relative depth for the whole clip, normalised per_clip (what MYV
Estimate Depth gives with Video Depth Anything at its default normalisation), steer the model worse
than the per-frame normalisation it was trained with? The held-out clips of benchmarks/micro_quality.py
(seed 100) have a known depth; each is sampled in one pass (MYV Video KSampler, 20 euler steps, cfg
5) under:

- the clip's depth, per_frame in the sampler: as trained;
- the clip's depth, per_clip in the sampler: the per-clip consistent depth video (the micro clips'
  depth spans the same range in every frame, so this is close to the first by construction);
- the clip's depth scaled by 0.3 -> 1.0 over the clip (a scene whose depth range changes, as when
  something approaches), per_frame (every frame re-stretched) and per_clip (kept consistent);
- the clip's depth with a smooth random field of +-5 % of its range added to every frame
  independently, per_frame: what a frame-by-frame estimator's flicker looks like, for scale.

Prints benchmarks/micro_metrics.py's metrics averaged over the clips: depth IoU and track (the disc
where and as the depth says), prompt, flicker and drift (the static background's change between
neighbouring frames and between the first and the last). A benchmark, not a test: it asserts nothing.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import micro_quality as quality  # noqa: E402

NOISE = 0.05


def flickering(depth, seed):
    """depth + an independent smooth random field per frame, NOISE of the clip's range either way."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(depth.shape[0], 1, 4, 4, generator=g) * 2 - 1
    field = F.interpolate(coarse, size=depth.shape[-2:], mode="bicubic", align_corners=False)
    return depth + NOISE * (depth.max() - depth.min()) * field


CONDITIONS = {
    "consistent depth, per_frame (as trained)": (lambda depth, seed: depth, "per_frame"),
    "consistent depth, per_clip (Video Depth Anything's default)": (lambda depth, seed: depth, "per_clip"),
    "depth scale 0.3 -> 1.0, per_frame": (lambda depth, seed: quality.growing_depth(depth), "per_frame"),
    "depth scale 0.3 -> 1.0, per_clip": (lambda depth, seed: quality.growing_depth(depth), "per_clip"),
    f"per-frame noise +-{NOISE:.0%} of the range, per_frame": (flickering, "per_frame"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()

    pack = quality.load_comfyui(quality.find_comfyui(args.comfyui), "cpu")
    sampler = quality.MicroSampler(pack, quality.load_checkpoint_model(pack, quality.CHECKPOINT))
    clips = quality.evaluation_clips(args.clips, frames=max(args.frames))
    table = {}
    with torch.inference_mode():
        for i in range(args.clips):
            depth, coverage, centres = clips.depth[i], clips.coverage[i], clips.centres[i]
            prompt, seed = int(clips.prompts[i]), 1000 + i
            for frames in args.frames:
                for name, (make, normalize) in CONDITIONS.items():
                    latents = sampler.one_pass(make(depth[:frames], seed), prompt, seed, normalize=normalize)
                    values = {
                        "depth IoU": quality.metrics.depth_iou(latents, coverage[:frames]),
                        "track": quality.metrics.track_error(latents, centres[:frames]),
                        "prompt": float(quality.metrics.prompt_choice(latents, coverage[:frames],
                                                                      quality.data.COLOURS) == prompt),
                        "flicker": quality.metrics.static_flicker(latents, coverage[:frames]),
                        "drift": quality.metrics.drift(latents, coverage[:frames]),
                    }
                    row = table.setdefault(f"{frames} frames, {name}", {})
                    for key, value in values.items():
                        row.setdefault(key, []).append(value)
            print(f"clip {i + 1}/{args.clips} done", flush=True)
    print(quality.markdown({name: {k: sum(v) / len(v) for k, v in row.items()} for name, row in table.items()}))


if __name__ == "__main__":
    main()
