"""The trained micro model (tests/fixtures/myv_micro.safetensors) through the real nodes.

What the quality table in docs/micro_model.md reports, asserted with margins on a few held-out clips:
the videos follow the depth far better than a wrong depth explains, re-rendering moves the disc to
where the new depth puts it, chained windows have clearly fewer seams than independent runs, one
64-frame pass keeps the background as still as a 16-frame one, MYV Long Video Sampler is as coherent
as one pass, and a two-prompt schedule is followed by every way of sampling a long clip. Thresholds
and the measured values they guard are in docs/micro_model.md and docs/long_video.md.
"""

import inspect
import shutil
import sys

import pytest
import torch

from conftest import ADE, ADE_MISSING, FIXTURES, ROOT

sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "scripts")]
import micro_metrics as metrics  # noqa: E402
from micro_model import data  # noqa: E402
from micro_model.network import MICRO_CONFIG  # noqa: E402
from micro_quality import RERENDER_DENOISE, STEPS, MicroSampler, evaluation_clips, window_starts  # noqa: E402
from myv_runner.selfcheck import UNET_PREFIX, unet_shapes  # noqa: E402

CHECKPOINT = FIXTURES / "myv_micro.safetensors"
CLIPS = 4


@pytest.fixture(scope="module")
def clips():
    return evaluation_clips(CLIPS)


@pytest.fixture(scope="module")
def sampler(pack, tmp_path_factory):
    import folder_paths
    folder = tmp_path_factory.mktemp("micro")
    shutil.copy(CHECKPOINT, folder / CHECKPOINT.name)
    folder_paths.add_model_folder_path("makeyourvideo", str(folder))
    try:
        model = pack.nodes.loaders.MYVCheckpointLoader().load(CHECKPOINT.name, "fp32")[0]
    finally:
        folder_paths.folder_names_and_paths["makeyourvideo"][0].remove(str(folder))
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


@torch.inference_mode()
def test_long_video_sampler_is_as_coherent_as_one_pass(sampler, clips):
    """At its defaults (context 2, shared noise), 64 frames: the background drifts at most 1.25x as far as
    in one pass, no seams (ratio <= 1.15), and the disc follows the depth as well (IoU within 0.02)."""
    inputs = sampler.pack.nodes.long_video.MYVLongVideoSampler.INPUT_TYPES()
    context, noise = inputs["required"]["context_frames"][1]["default"], inputs["optional"]["noise"][1]["default"]
    one, long, seams = [], [], []
    for i in range(2):
        depth, prompt, seed = clips.depth[i], int(clips.prompts[i]), 1000 + i
        one.append(sampler.one_pass(depth, prompt, seed))
        long.append(sampler.long_video(depth, prompt, seed, context, noise))
        seams.append(metrics.seams(long[-1], window_starts(context)))
    drift = [sum(metrics.drift(v, clips.coverage[i]) for i, v in enumerate(videos)) / 2 for videos in (one, long)]
    iou = [sum(metrics.depth_iou(v, clips.coverage[i]) for i, v in enumerate(videos)) / 2 for videos in (one, long)]
    assert drift[1] <= 1.25 * drift[0], f"background drift: long video {drift[1]:.3f}, one pass {drift[0]:.3f}"
    assert sum(seams) / 2 <= 1.15, f"seam ratio {seams}"
    assert iou[1] >= iou[0] - 0.02, f"depth IoU: long video {iou[1]:.3f}, one pass {iou[0]:.3f}"


SCHEDULE_FRAMES, SWITCH, NEAR_SWITCH = 48, 24, 4
SCHEDULE_PATHS = ("one pass", "MYV Long Video Sampler", "core context windows", "ADE Standard Static",
                  "ADE Standard Uniform")


def core_window_steps():
    """ComfyUI 0.3.64's core windows run on a frames-as-batch latent only when steps + 1 = frames."""
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    new = "causal_window_fix" in inspect.signature(ContextWindowsManualNode.execute).parameters
    return STEPS if new else SCHEDULE_FRAMES - 1


@pytest.fixture(scope="module")
def scheduled(sampler, clips, request):
    """Two clips of 48 frames with a two-prompt schedule (one cond row per frame, a per-frame pooled_output),
    sampled in every path: {path: [video per clip]}, and the schedules."""
    schedules = [[i] * SWITCH + [(i + 1) % data.PROMPTS] * (SCHEDULE_FRAMES - SWITCH) for i in range(2)]
    paths = {
        "one pass": lambda d, p, s: sampler.one_pass(d, p, s),
        "MYV Long Video Sampler": lambda d, p, s: sampler.long_video(d, p, s, 2),
        "core context windows": lambda d, p, s: sampler.core_windows(d, p, s, steps=core_window_steps())[0],
    }
    if ADE:
        ade = request.getfixturevalue("ade").mappings
        paths["ADE Standard Static"] = lambda d, p, s: sampler.ade(ade, d, p, s)
        paths["ADE Standard Uniform"] = lambda d, p, s: sampler.ade(ade, d, p, s, "ADE_StandardUniformContextOptions")
    with torch.inference_mode():
        videos = {name: [run(clips.depth[i, :SCHEDULE_FRAMES], schedules[i], 1000 + i) for i in range(2)]
                  for name, run in paths.items()}
    return videos, schedules


def schedule_followed(video, coverage, schedule):
    """The share of frames away from the switch whose disc has its scheduled prompt's colour."""
    frames = [t for t in range(len(schedule)) if abs(t - SWITCH) >= NEAR_SWITCH]
    return sum(metrics.prompt_choice(video[t:t + 1], coverage[t:t + 1], data.COLOURS) == schedule[t]
               for t in frames) / len(frames)


@pytest.mark.parametrize("path", SCHEDULE_PATHS)
def test_prompt_schedule_is_followed(scheduled, clips, path):
    videos, schedules = scheduled
    if path not in videos:
        pytest.skip(f"AnimateDiff-Evolved: {ADE_MISSING}")
    for i, video in enumerate(videos[path]):
        share = schedule_followed(video, clips.coverage[i, :SCHEDULE_FRAMES], schedules[i])
        assert share >= 0.9, f"{path}, clip {i}: scheduled prompt followed in {share:.0%} of the frames"


@pytest.mark.parametrize("path", ["ADE Standard Static", "ADE Standard Uniform"])
def test_ade_windows_follow_the_depth_as_core_windows_do(scheduled, clips, path):
    videos, _ = scheduled
    if path not in videos:
        pytest.skip(f"AnimateDiff-Evolved: {ADE_MISSING}")
    iou = {name: sum(metrics.depth_iou(v, clips.coverage[i, :SCHEDULE_FRAMES]) for i, v in enumerate(videos[name])) / 2
           for name in (path, "core context windows")}
    assert iou[path] >= iou["core context windows"] - 0.02, f"depth IoU {iou}"
