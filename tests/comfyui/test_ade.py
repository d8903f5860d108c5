"""Make-Your-Video under AnimateDiff-Evolved's evolved sampling (context windows, FreeNoise, FreeInit, views,
prompt schedules), with ADE loaded in-process (the `ade` fixture) and the tiny model of test_long_video.

ADE needs no motion model for this: ADE_UseEvolvedSampling takes any MODEL, runs the UNet on windows of the
frames (the latent batch) and names each window's clip frames in transformer_options["ad_params"]["sub_idxs"],
possibly non-contiguous (Standard Uniform's strides) or wrapping (Looped Uniform). Outside its windows sub_idxs is
None until the first window ran, then still the previous step's last window (the whole-clip calls of the next
step, e.g. CALC_COND_BATCH wrappers that run before ADE's, see it).
"""

import os
import sys
from dataclasses import dataclass, field

import pytest
import torch

import comfy.sample
from comfy.patcher_extension import WrappersMP

from myv_core.depth import depth_from_image, depth_to_latent

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder: test_long_video's tiny model
from test_long_video import SIZE, STEPS, base_and_video, cond, depth_clip, temporal_modules  # noqa: E402,F401

FRAMES = 12
KEY = "makeyourvideo"  # the pack's key in transformer_options (nodes/patching.py)


@dataclass
class Call:
    """What one UNet call (DIFFUSION_MODEL) saw."""
    sub_idxs: list  # ad_params["sub_idxs"], copied: ADE replaces it in that shared dict per window
    chunks: int  # cond/uncond chunks stacked on the batch axis
    frames: int  # the frame count the pack's APPLY_MODEL wrapper gave its temporal layers
    depth: torch.Tensor = field(repr=False)  # x[:, 4], the depth channel
    context: torch.Tensor = field(repr=False)  # the cross-attention rows


def sample_with_ade(pack, ade, model, context_options, sample_settings=None, positive=None, cfg=2.0,
                    normalize="per_frame"):
    """MYV Apply Depth + ADE_UseEvolvedSampling, sampled; (output latent, the UNet calls, the clip's depth channel)."""
    images = depth_clip(FRAMES)
    model = pack.nodes.depth.MYVApplyDepth().apply(model, images, normalize)[0]
    model = ade("ADE_UseEvolvedSampling", model=model, context_options=context_options, sample_settings=sample_settings)
    calls = []

    def capture(executor, x, timesteps, context, y, control, transformer_options, *args, **kwargs):
        sub_idxs = (transformer_options.get("ad_params") or {}).get("sub_idxs")
        calls.append(Call(None if sub_idxs is None else list(sub_idxs), len(transformer_options["cond_or_uncond"]),
                          transformer_options[KEY]["frames"], x[:, 4].clone(), context.clone()))
        return executor(x, timesteps, context, y, control, transformer_options, *args, **kwargs)

    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test", capture)
    latent = torch.zeros(FRAMES, 4, SIZE, SIZE)
    out = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), STEPS, cfg, "euler", "normal",
                              positive or cond(1), cond(2), latent, disable_pbar=True, seed=0)
    return out, calls, depth_to_latent(depth_from_image(images), SIZE, SIZE, normalize)[:, 0]


def check_windows(calls, expected):
    """Every UNet call ran on an ADE window, holds exactly its frames and their depth; the windows that ran."""
    assert calls
    for call in calls:
        assert call.sub_idxs is not None, "a UNet call outside ADE's context windows"
        assert call.frames == len(call.sub_idxs)
        assert call.depth.shape[0] == call.chunks * len(call.sub_idxs)
        assert torch.equal(call.depth, expected[call.sub_idxs].repeat(call.chunks, 1, 1)), f"depth of {call}"
    windows = {tuple(call.sub_idxs) for call in calls}
    assert len(windows) > 1
    return windows


@pytest.mark.parametrize("normalize", ["per_frame", "per_clip"])
def test_depth_follows_standard_static_windows(pack, ade, base_and_video, normalize):
    """Standard Static at its defaults (overlap 4, pyramid) with a context length that windows the clip.
    per_clip: normalised over the whole clip, not per window."""
    base, video = base_and_video
    options = ade("ADE_StandardStaticContextOptions", context_length=8)
    out, calls, expected = sample_with_ade(pack, ade, video, options, normalize=normalize)
    windows = check_windows(calls, expected)
    assert windows == {tuple(range(0, 8)), tuple(range(4, 12))}
    assert out.shape == (FRAMES, 4, SIZE, SIZE) and torch.isfinite(out).all()
    assert temporal_modules(base) == 0


def test_depth_follows_strided_uniform_windows(pack, ade, base_and_video):
    """Standard Uniform with context_stride 2: windows such as [0, 2, 4, ...] besides contiguous ones."""
    base, video = base_and_video
    options = ade("ADE_StandardUniformContextOptions", context_length=6, context_stride=2, context_overlap=2)
    out, calls, expected = sample_with_ade(pack, ade, video, options)
    windows = check_windows(calls, expected)
    assert any(window[1] - window[0] == 2 for window in windows)  # a strided window ran
    assert torch.isfinite(out).all() and temporal_modules(base) == 0


def test_depth_follows_looped_windows(pack, ade, base_and_video):
    """Looped Uniform, closed loop: windows that wrap from the clip's end to its start, e.g. [8, ..., 11, 0, 1]."""
    base, video = base_and_video
    options = ade("ADE_LoopedUniformContextOptions", context_length=6, context_overlap=2, closed_loop=True)
    out, calls, expected = sample_with_ade(pack, ade, video, options)
    windows = check_windows(calls, expected)
    assert any(list(window) != sorted(window) for window in windows)  # a wrapping window ran
    assert torch.isfinite(out).all() and temporal_modules(base) == 0


def test_freenoise_and_freeinit(pack, ade, base_and_video):
    """FreeNoise sample settings with FreeInit, 2 iterations: each iteration samples all windows again."""
    base, video = base_and_video
    options = ade("ADE_StandardStaticContextOptions", context_length=8)
    free_init = ade("ADE_IterationOptsFreeInit", iterations=2)
    settings = ade("ADE_AnimateDiffSamplingSettings", noise_type="FreeNoise", iteration_opts=free_init)
    out, calls, expected = sample_with_ade(pack, ade, video, options, settings, cfg=1.0)
    assert out.shape == (FRAMES, 4, SIZE, SIZE) and torch.isfinite(out).all()
    windows = check_windows(calls, expected)
    assert len(calls) == 2 * STEPS * len(windows)  # cfg 1: one call per window and step, in both iterations
    assert temporal_modules(base) == 0


def test_view_options(pack, ade, base_and_video):
    """Standard Static view options inside Standard Static context options. Views only split the frames
    for motion models (ADE hands them to its motion modules); without one, every UNet call still gets a
    context window, whose depth must be right."""
    base, video = base_and_video
    views = ade("ADE_StandardStaticViewOptions", view_length=4, view_overlap=1)
    options = ade("ADE_StandardStaticContextOptions", context_length=8, view_opts=views)
    out, calls, expected = sample_with_ade(pack, ade, video, options)
    check_windows(calls, expected)
    assert out.shape == (FRAMES, 4, SIZE, SIZE) and torch.isfinite(out).all()
    assert temporal_modules(base) == 0


@pytest.mark.parametrize("windows", ["strided", "looped_whole_clip"])
def test_prompt_schedule_reaches_each_window(pack, ade, base_and_video, windows):
    """A prompt schedule (one cross-attention row and one pooled_output row per frame): every window's UNet
    call gets exactly its frames' rows. cfg 1, so each call holds the positive prompt only.

    strided: Standard Uniform with context_stride 2. looped_whole_clip: Looped Uniform, closed, as long as
    the clip (use_on_equal_length): every window holds all frames, most of them rotated, e.g. [8, ..., 11, 0, ..., 7].
    """
    base, video = base_and_video
    g = torch.Generator().manual_seed(3)
    rows = torch.randn(FRAMES, 77, 64, generator=g)
    schedule = [[rows, {"pooled_output": torch.randn(FRAMES, 32, generator=g)}]]
    if windows == "strided":
        options = ade("ADE_StandardUniformContextOptions", context_length=6, context_stride=2, context_overlap=2)
    else:
        options = ade("ADE_LoopedUniformContextOptions", context_length=FRAMES, closed_loop=True,
                      use_on_equal_length=True)
    out, calls, expected = sample_with_ade(pack, ade, video, options, positive=schedule, cfg=1.0)
    check_windows(calls, expected)
    for call in calls:
        assert call.chunks == 1
        assert torch.equal(call.context, rows[call.sub_idxs]), f"prompt rows of {call}"
    assert torch.isfinite(out).all() and temporal_modules(base) == 0
