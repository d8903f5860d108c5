"""MYVLongVideoSampler and depth under windows, in an in-process ComfyUI with the tiny model."""

import inspect

import pytest
import torch
from safetensors.torch import save_file

import comfy.model_management
import comfy.utils
from comfy.patcher_extension import WrappersMP
from comfy_extras.nodes_context_windows import ContextWindowsManualNode

from myv_core.chaining import shared_noise_index, window_schedule
from myv_core.checkpoint import split_checkpoint
from myv_core.depth import depth_from_image, depth_to_latent
from myv_core.temporal import TemporalConvBlock, TemporalTransformer
from tiny_models import tiny_unet

STEPS = 2
SIZE = 16  # latent size; at 8 the 1-frame case leaves single-value GroupNorm groups at the 1x1 level


@pytest.fixture(scope="module")
def base_and_video(pack, fixtures_dir, tmp_path_factory):
    import folder_paths
    folder = tmp_path_factory.mktemp("models")
    parts = split_checkpoint(tiny_unet(fixtures_dir))
    save_file(parts.temporal, str(folder / "temporal.safetensors"))
    folder_paths.add_model_folder_path("makeyourvideo", str(folder))
    base = pack.nodes.loaders.build_spatial_model(parts, torch.float32)[0]
    video = pack.nodes.loaders.MYVTemporalModuleLoader().load(base, "temporal.safetensors")[0]
    yield base, video
    folder_paths.folder_names_and_paths["makeyourvideo"][0].remove(str(folder))


def cond(seed):
    return [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(seed)), {}]]


def depth_clip(frames, seed=0):
    """A bright square moving over a random backdrop: a depth video with real structure."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.rand(frames, 8 * SIZE, 8 * SIZE, 1, generator=g) * 0.3
    for t in range(frames):
        x = (3 * t) % (5 * SIZE)
        clip[t, 2 * SIZE:5 * SIZE, x:x + 3 * SIZE] = 1.0
    return clip.repeat(1, 1, 1, 3)


def long_sample(pack, model, frames, seed=5, window=16, context=4, cfg=1.0, latent_frames=1, normalize="per_frame",
                noise="shared", positive=None):
    latent = {"samples": torch.zeros(latent_frames, 4, SIZE, SIZE)}
    return pack.nodes.long_video.MYVLongVideoSampler().sample(
        model, positive or cond(1), cond(2), depth_clip(frames), latent, seed, STEPS, cfg, "euler", "normal", window,
        context, normalize, noise=noise)[0]["samples"]


def temporal_modules(model):
    return sum(isinstance(m, (TemporalConvBlock, TemporalTransformer)) for m in model.model.diffusion_model.modules())


@pytest.mark.parametrize("frames", [1, 15, 16, 17, 40, 100])
def test_output_has_exactly_n_frames(pack, base_and_video, frames):
    out = long_sample(pack, base_and_video[1], frames)
    assert out.shape == (frames, 4, SIZE, SIZE) and torch.isfinite(out).all()


@pytest.mark.parametrize("noise_mode", ["shared", "independent"])
def test_context_frames_are_the_previous_windows_frames(pack, base_and_video, noise_mode):
    model = base_and_video[1]
    frames = 40
    out = long_sample(pack, model, frames, cfg=2.0, noise=noise_mode)
    windows = window_schedule(frames, 16, 4)
    depth = depth_from_image(depth_clip(frames))
    noise = comfy.sample.prepare_noise(torch.zeros(frames, 4, SIZE, SIZE), 5)
    if noise_mode == "shared":
        noise = noise[shared_noise_index(frames, 16, 5)]
    video = torch.zeros(frames, 4, SIZE, SIZE)
    for window in windows:
        raw = pack.nodes.long_video.sample_window(model, window, video, noise, depth, "per_frame", 5, STEPS, 2.0,
                                                  "euler", "normal", cond(1), cond(2))
        # The kept frames come back from masked sampling unchanged (up to the latent scaling round trip) ...
        kept = video[window.start:window.start + window.keep]
        assert torch.allclose(raw[:window.keep], kept, rtol=0, atol=1e-5)
        video[window.start + window.keep:window.stop] = raw[window.keep:]
        # ... and the node's output holds exactly what each window generated.
        assert torch.equal(out[window.start + window.keep:window.stop], raw[window.keep:])
    assert torch.equal(out, video)


def test_same_seed_same_video(pack, base_and_video):
    model = base_and_video[1]
    first, second = long_sample(pack, model, 20, seed=7), long_sample(pack, model, 20, seed=7)
    assert torch.equal(first, second)
    assert not torch.equal(first, long_sample(pack, model, 20, seed=8))


def test_per_clip_depth_uses_the_whole_clip(pack):
    depth = depth_from_image(depth_clip(30))
    depth[25:] *= 3.0  # the clip's maximum lies outside the window
    call = pack.nodes.patching.VideoCall(depth, "per_clip", latent_frames=range(8, 24))
    got = call.latent_depth(SIZE, SIZE, "cpu")[call.clip_frames({}, 16)]
    assert torch.equal(got, depth_to_latent(depth, SIZE, SIZE, "per_clip")[8:24])
    assert got.max() < 1.0  # a window-local normalisation would reach 1


def test_interruption_between_windows(pack, base_and_video, unthrottled_progress):
    """Cancelled when the first window's last step is reported (ComfyUI 0.33's progress throttling off,
    or that update might not reach the hook)."""
    base, model = base_and_video

    def cancel_after_first_window(value, total, preview, node_id=None):
        if value == STEPS:
            comfy.model_management.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(cancel_after_first_window)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            long_sample(pack, model, 40)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert not comfy.model_management.processing_interrupted()
    assert temporal_modules(base) == 0
    assert long_sample(pack, model, 17).shape[0] == 17


@pytest.mark.parametrize("window, context, latent_frames, noise, message", [
    (16, 16, 1, "shared", "context_frames must be between 0 and window_frames - 1 = 15"),
    (0, 0, 1, "shared", "window_frames must be at least 1"),
    (16, 4, 12, "shared", "depth has 10 frames but latent_image has 12"),
    (16, 4, 1, "freenoise", "noise must be one of"),
])
def test_invalid_settings(pack, base_and_video, window, context, latent_frames, noise, message):
    with pytest.raises(ValueError, match=message):
        long_sample(pack, base_and_video[1], 10, window=window, context=context, latent_frames=latent_frames,
                    noise=noise)


CONTEXT_WINDOW_OPTIONS = set(inspect.signature(ContextWindowsManualNode.execute).parameters)
NEW_CONTEXT_WINDOWS = "causal_window_fix" in CONTEXT_WINDOW_OPTIONS  # ComfyUI 0.33 and later
# The node's defaults for what 0.33 added (freenoise has no Python default there).
NEW_DEFAULTS = {"freenoise": False} if NEW_CONTEXT_WINDOWS else {}
new_context_windows_only = pytest.mark.skipif(not NEW_CONTEXT_WINDOWS, reason="this ComfyUI's context "
                                              "windows have no causal_window_fix / freenoise")


def sample_with_context_windows(pack, model, frames, steps, length, overlap, **options):
    """Sample through MYVApplyDepth + core "Context Windows (Manual)"; the UNet calls' window frames
    (as ComfyUI's own window slicing gives them) and depth channels."""
    images = depth_clip(frames)
    model = pack.nodes.depth.MYVApplyDepth().apply(model, images, "per_frame")[0]
    model = ContextWindowsManualNode.execute(model, length, overlap, "standard_static", 1, False, "pyramid", 0,
                                             **options).result[0]
    seen = []

    def capture(executor, x, timesteps, context, y, control, transformer_options, *args, **kwargs):
        window = transformer_options["context_window"]
        index = window.get_tensor(torch.arange(frames), dim=0).tolist()
        seen.append((index, x[:, 4].clone()))
        return executor(x, timesteps, context, y, control, transformer_options, *args, **kwargs)

    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test", capture)
    comfy.sample.sample(model, torch.randn(frames, 4, SIZE, SIZE), steps, 1.0, "euler", "normal", cond(1),
                        cond(2), torch.zeros(frames, 4, SIZE, SIZE), disable_pbar=True, seed=0)
    return seen, depth_to_latent(depth_from_image(images), SIZE, SIZE, "per_frame")[:, 0]


def test_depth_is_sliced_per_core_context_window_with_defaults(pack, base_and_video):
    """Core "Context Windows (Manual)" with its defaults, dim 0: every UNet call gets its own frames' depth.

    ComfyUI 0.3.64's IndexListContextHandler.set_step compares the per-frame timesteps with the
    step sigmas, which only works for a 4D frames-as-batch latent when steps + 1 == frames; 0.33 has
    no such limit. With 0.33's default causal_window_fix every window after the first also carries
    the frame before it, in front.
    """
    frames = 8 if not NEW_CONTEXT_WINDOWS else 20
    steps, length = (7, 4) if frames == 8 else (3, 8)
    seen, expected = sample_with_context_windows(pack, base_and_video[1], frames, steps, length, 1, **NEW_DEFAULTS)
    assert len({tuple(index) for index, _ in seen}) > 1
    if NEW_CONTEXT_WINDOWS:
        assert any(len(index) == 9 and index[0] == index[1] - 1 for index, _ in seen)  # an anchored window
    for index, channel in seen:
        assert torch.equal(channel, expected[index])


@new_context_windows_only
@pytest.mark.parametrize("causal_window_fix", [True, False])
@pytest.mark.parametrize("freenoise", [True, False])
def test_depth_follows_causal_window_fix_and_freenoise(pack, base_and_video, causal_window_fix, freenoise):
    seen, expected = sample_with_context_windows(pack, base_and_video[1], 22, 2, 8, 2, freenoise=freenoise,
                                                 causal_window_fix=causal_window_fix)
    lengths = {len(index) for index, _ in seen}
    assert lengths == ({8, 9} if causal_window_fix else {8})
    for index, channel in seen:
        assert torch.equal(channel, expected[index])


def test_context_windows_off_the_frame_axis_are_refused(pack, base_and_video):
    images = depth_clip(8)
    model = pack.nodes.depth.MYVApplyDepth().apply(base_and_video[1], images, "per_frame")[0]
    model = ContextWindowsManualNode.execute(model, 4, 1, "standard_static", 1, False, "pyramid", 2,
                                             **NEW_DEFAULTS).result[0]
    with pytest.raises(ValueError, match="set the context windows' dim to 0"):
        comfy.sample.sample(model, torch.randn(8, 4, SIZE, SIZE), 7, 1.0, "euler", "normal", cond(1), cond(2),
                            torch.zeros(8, 4, SIZE, SIZE), disable_pbar=True, seed=0)


def schedule(frames, seed=3):
    """A prompt schedule: one cond row per frame, and a per-frame pooled_output."""
    rows = torch.randn(frames, 77, 64, generator=torch.Generator().manual_seed(seed))
    return [[rows, {"pooled_output": rows[:, 0]}]]


def test_long_video_windows_get_their_frames_schedule_rows(pack, base_and_video):
    """cfg 1 runs only the positive cond: every window's UNet call sees the rows of exactly its frames."""
    frames, positive = 40, schedule(40)
    seen = []

    def capture(executor, x, timesteps, context, y, control, transformer_options, *args, **kwargs):
        seen.append(context.clone())
        return executor(x, timesteps, context, y, control, transformer_options, *args, **kwargs)

    model = base_and_video[1].clone()
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test", capture)
    long_sample(pack, model, frames, positive=positive)
    windows = window_schedule(frames, 16, 4)
    assert len(seen) == len(windows) * STEPS
    for k, window in enumerate(windows):
        for context in seen[k * STEPS:(k + 1) * STEPS]:
            assert torch.equal(context, positive[0][0][window.start:window.stop])


def test_per_frame_entries_of_a_cond_are_narrowed(pack):
    from comfy.conds import CONDCrossAttn, CONDRegular
    rows = torch.arange(10.0)[:, None, None].expand(10, 3, 4)
    cond = {"cross_attn": rows, "pooled_output": rows[:, 0], "mask": torch.ones(1, 2, 2),
            "model_conds": {"c_crossattn": CONDCrossAttn(rows), "y": CONDRegular(torch.zeros(1, 4))}}
    index = [8, 9, 0, 1]  # e.g. a looped window
    out = pack.nodes.patching.cond_for_frames(cond, 10, index)
    assert torch.equal(out["cross_attn"], rows[index]) and torch.equal(out["pooled_output"], rows[index, 0])
    assert torch.equal(out["model_conds"]["c_crossattn"].cond, rows[index])
    assert out["mask"] is cond["mask"] and out["model_conds"]["y"] is cond["model_conds"]["y"]  # 1 row: all frames
    assert cond["cross_attn"] is rows  # the caller's cond is left as it was


@pytest.mark.parametrize("rows", [5, 11])
def test_a_schedule_that_does_not_fit_the_clip_is_refused(pack, base_and_video, rows):
    message = f"positive conditioning: its cross_attn has {rows} rows but the video has 10 frames"
    with pytest.raises(ValueError, match=message):
        long_sample(pack, base_and_video[1], 10, positive=schedule(rows))
    model = pack.nodes.depth.MYVApplyDepth().apply(base_and_video[1], depth_clip(10), "per_frame")[0]
    with pytest.raises(ValueError, match=message):
        comfy.sample.sample(model, torch.randn(10, 4, SIZE, SIZE), STEPS, 1.0, "euler", "normal", schedule(rows),
                            cond(2), torch.zeros(10, 4, SIZE, SIZE), disable_pbar=True, seed=0)
