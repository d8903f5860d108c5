"""The trained micro model (tests/fixtures/myv_micro.safetensors) through the real nodes.

What the quality table in docs/micro_model.md reports, asserted with margins on a few held-out clips:
the videos follow the depth far better than a wrong depth explains, re-rendering moves the disc to
where the new depth puts it, chained windows have clearly fewer seams than independent runs, and one
64-frame pass keeps the background as still as a 16-frame one. Thresholds and the measured values
they guard are in docs/micro_model.md.
"""

import shutil
import sys

import pytest
import torch

from conftest import FIXTURES, ROOT

sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "scripts")]
import micro_metrics as metrics  # noqa: E402
from micro_model import data  # noqa: E402
from micro_model.network import MICRO_CONFIG  # noqa: E402
from micro_quality import RERENDER_DENOISE, MicroSampler, evaluation_clips, window_starts  # noqa: E402
from myv_runner.selfcheck import UNET_PREFIX, unet_shapes  # noqa: E402

CHECKPOINT = FIXTURES / "myv_micro.safetensors"
CLIPS = 4


@pytest.fixture(scope="module")
def clips():
    return evaluation_clips(CLIPS)


@pytest.fixture()
def sampler(pack, model_dir):
    shutil.copy(CHECKPOINT, model_dir / CHECKPOINT.name)
    model = pack.nodes.loaders.MYVCheckpointLoader().load(CHECKPOINT.name, "fp32")[0]
    return MicroSampler(pack, model)


def test_micro_model_is_the_official_layout():
    from safetensors.torch import load_file
    sd = load_file(str(CHECKPOINT))
    unet = {k[len(UNET_PREFIX):]: tuple(v.shape) for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    assert unet == {k: tuple(v) for k, v in unet_shapes(MICRO_CONFIG).items()}
    assert set(sd) - {UNET_PREFIX + k for k in unet} == {"betas", "alphas_cumprod"}


@torch.inference_mode()
def test_follows_depth_and_prompt(sampler, clips):
    right, wrong, prompts = [], [], []
    for i in range(CLIPS):
        video = sampler.one_pass(clips.depth[i, :16], int(clips.prompts[i]), 1000 + i)
        right.append(metrics.depth_iou(video, clips.coverage[i, :16]))
        wrong.append(metrics.depth_iou(video, clips.coverage[(i + 1) % CLIPS, :16]))
        prompts.append(metrics.prompt_choice(video, clips.coverage[i, :16], data.COLOURS) == int(clips.prompts[i]))
    right, wrong = sum(right) / CLIPS, sum(wrong) / CLIPS
    assert right >= 0.8, f"depth IoU {right:.3f}"
    assert right >= 4 * wrong, f"depth IoU {right:.3f} against {wrong:.3f} for a wrong depth"
    assert sum(prompts) >= CLIPS - 1, f"prompt colour right in {sum(prompts)} of {CLIPS} clips"


@torch.inference_mode()
def test_rerender_moves_the_disc_to_the_new_depth(sampler, clips):
    """denoise 0.6 from a clip with another layout: the disc ends where the new depth puts it."""
    target, source = [], []
    for i in range(CLIPS):
        j = (i + 1) % CLIPS
        video = sampler.one_pass(clips.depth[i, :16], int(clips.prompts[i]), 1000 + i,
                                 start=clips.latents[j, :16], denoise=RERENDER_DENOISE)
        target.append(metrics.depth_iou(video, clips.coverage[i, :16]))
        source.append(metrics.depth_iou(video, clips.coverage[j, :16]))
    target, source = sum(target) / CLIPS, sum(source) / CLIPS
    assert target >= 0.8 and target >= 4 * source, f"depth IoU: new layout {target:.3f}, source layout {source:.3f}"


@torch.inference_mode()
def test_chained_windows_have_fewer_seams_than_independent_runs(sampler, clips):
    chained, independent = [], []
    starts, chained_starts = window_starts(0), window_starts(4)
    for i in range(2):
        depth, prompt, seed = clips.depth[i], int(clips.prompts[i]), 1000 + i
        chained.append(metrics.seams(sampler.long_video(depth, prompt, seed, 4), chained_starts))
        independent.append(metrics.seams(sampler.independent(depth, prompt, seed), starts))
    chained, independent = sum(chained) / 2, sum(independent) / 2
    assert independent >= 1.5 * chained, f"seam ratio: chained {chained:.2f}, independent {independent:.2f}"


@torch.inference_mode()
def test_one_64_frame_pass_keeps_the_coherence_of_16_frames(sampler, clips):
    short, long = [], []
    for i in range(2):
        depth, prompt, seed = clips.depth[i], int(clips.prompts[i]), 1000 + i
        short.append(metrics.static_flicker(sampler.one_pass(depth[:16], prompt, seed), clips.coverage[i, :16]))
        long.append(metrics.static_flicker(sampler.one_pass(depth, prompt, seed), clips.coverage[i]))
    assert sum(long) <= 1.5 * sum(short), f"background flicker: 64 frames {long}, 16 frames {short}"
