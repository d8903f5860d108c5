"""MYVDepthEstimatorLoader and MYVEstimateDepth inside a real (in-process) ComfyUI."""

import gc
import weakref

import pytest
import torch

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import nodes as comfy_nodes

from comfy.patcher_extension import WrappersMP
from safetensors.torch import save_file

from conftest import comfyui_version
from myv_core.chaining import window_schedule
from myv_core.checkpoint import split_checkpoint
from myv_core.depth import depth_from_image, depth_to_latent
from myv_core.depth_estimation import dpt_state_dict_to_midas
from test_depth import PHOTOGRAPHS, official_get_batch_depth, photo_like_clip, photograph_clip
from test_depth_estimation import frames, seeded, tiny_dpt_config
from test_video_depth import reference, save_official_vda
from tiny_models import tiny_unet

transformers = pytest.importorskip("transformers")
ESTIMATE_INPUTS = ["estimator", "images", "batch_size", "normalize", "temporal_smoothing"]
NATIVE_DEPTH = "MYV_NATIVE_DEPTH"


@pytest.fixture(scope="module")
def tiny_dpt():
    return seeded(transformers.DPTForDepthEstimation(tiny_dpt_config()))


@pytest.fixture()
def estimator_dir(tmp_path, pack, tiny_dpt):
    """A temporary 'depth_estimators' folder with a tiny DPT as a transformers folder and as an
    original-layout MiDaS file, and a fake comfyui_controlnet_aux annotator cache beside it."""
    tiny_dpt.save_pretrained(tmp_path / "models" / "tiny-dpt")
    original = dpt_state_dict_to_midas(tiny_dpt.state_dict())
    torch.save(original, tmp_path / "models" / "tiny_midas.pt")
    aux = tmp_path / "custom_nodes" / "comfyui_controlnet_aux" / "ckpts" / "lllyasviel" / "Annotators"
    aux.mkdir(parents=True)
    torch.save(original, aux / "dpt_hybrid-midas-501f0c75.pt")
    folder_paths.add_model_folder_path("depth_estimators", str(tmp_path / "models"), is_default=True)
    folder_paths.add_model_folder_path("custom_nodes", str(tmp_path / "custom_nodes"))
    yield tmp_path
    folder_paths.folder_names_and_paths["depth_estimators"][0].remove(str(tmp_path / "models"))
    folder_paths.folder_names_and_paths["custom_nodes"][0].remove(str(tmp_path / "custom_nodes"))


def load(pack, name="tiny-dpt/model.safetensors", dtype="fp32"):
    return pack.nodes.depth_estimation.MYVDepthEstimatorLoader().load(name, "auto", dtype)[0]


def estimate_both(pack, estimator, images, batch_size=2, normalize="per_frame", smoothing=0.0):
    """MYV Estimate Depth's outputs: (depth IMAGE, native_depth)."""
    return pack.nodes.depth_estimation.MYVEstimateDepth().estimate(estimator, images, batch_size, normalize, smoothing)


def estimate(pack, estimator, images, batch_size=2, normalize="per_frame", smoothing=0.0):
    return estimate_both(pack, estimator, images, batch_size, normalize, smoothing)[0]


def test_nodes_are_registered_with_their_inputs(pack):
    mappings = pack.NODE_CLASS_MAPPINGS
    loader, estimator = mappings["MYVDepthEstimatorLoader"], mappings["MYVEstimateDepth"]
    assert list(loader.INPUT_TYPES()["required"]) == ["model_name", "device", "dtype"]
    assert loader.RETURN_TYPES == ("MYV_DEPTH_ESTIMATOR",)
    inputs = estimator.INPUT_TYPES()["required"]
    assert list(inputs) == ESTIMATE_INPUTS
    assert inputs["normalize"][0] == ["per_frame", "per_clip", "estimator"] and inputs["temporal_smoothing"][1]["default"] == 0.0
    assert inputs["normalize"][1]["default"] == "estimator"  # new nodes; saved ones keep their value
    assert estimator.RETURN_TYPES == ("IMAGE", NATIVE_DEPTH) and estimator.RETURN_NAMES == ("depth", "native_depth")
    assert "MYV Estimate Depth" in pack.NODE_DISPLAY_NAME_MAPPINGS.values()
    # native_depth (and the long-video sampler's noise) are appended as optional inputs, so the public
    # order stays and API prompts saved before them still validate
    for name, required, optional in [
            ("MYVApplyDepth", ["model", "depth", "normalize"], ["native_depth"]),
            ("MYVVideoKSampler", ["model", "positive", "negative", "depth", "latent_image", "seed", "steps", "cfg",
                                  "sampler_name", "scheduler", "denoise", "normalize"], ["native_depth"]),
            ("MYVLongVideoSampler", ["model", "positive", "negative", "depth", "latent_image", "seed", "steps", "cfg",
                                     "sampler_name", "scheduler", "window_frames", "context_frames", "normalize"],
             ["native_depth", "noise"])]:
        types = mappings[name].INPUT_TYPES()
        assert list(types["required"]) == required, name
        assert list(types["optional"]) == optional and types["optional"]["native_depth"][0] == NATIVE_DEPTH


def test_loader_lists_own_folder_and_controlnet_aux_cache(pack, estimator_dir):
    names = pack.nodes.depth_estimation.MYVDepthEstimatorLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert "tiny-dpt/model.safetensors" in names and "tiny_midas.pt" in names
    assert "comfyui_controlnet_aux/lllyasviel/Annotators/dpt_hybrid-midas-501f0c75.pt" in names


def test_every_route_gives_the_same_depth(pack, estimator_dir):
    images = frames(3, 40, 56)
    reference = estimate(pack, load(pack), images)
    assert reference.shape == (3, 40, 56, 3)
    assert reference.min() >= 0 and reference.max() <= 1 and reference.amax(dim=(1, 2, 3)).eq(1).all()
    assert torch.equal(reference[..., 0], reference[..., 1]) and torch.equal(reference[..., 0], reference[..., 2])
    for name in ("tiny_midas.pt", "comfyui_controlnet_aux/lllyasviel/Annotators/dpt_hybrid-midas-501f0c75.pt"):
        estimator = load(pack, name)
        assert estimator.kind == "midas" and isinstance(estimator.load(), comfy.model_patcher.ModelPatcher)
        assert torch.allclose(estimate(pack, estimator, images), reference, atol=1e-4), name


def test_depth_network_inside_a_make_your_video_checkpoint(pack, estimator_dir, model_dir, fixtures_dir, tiny_dpt):
    from safetensors.torch import save_file
    sd = tiny_unet(fixtures_dir)
    sd.update({"depth_stage_model.model." + k: v.contiguous()
               for k, v in dpt_state_dict_to_midas(tiny_dpt.state_dict()).items()})
    split_checkpoint(sd)  # a valid Make-Your-Video checkpoint
    save_file(sd, str(model_dir / "myv_with_depth.safetensors"))
    names = pack.nodes.depth_estimation.MYVDepthEstimatorLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert "makeyourvideo/myv_with_depth.safetensors" in names
    images = frames(2, 32, 32)
    assert torch.allclose(estimate(pack, load(pack, "makeyourvideo/myv_with_depth.safetensors"), images),
                          estimate(pack, load(pack), images), atol=1e-4)


def test_missing_and_wrong_files_are_named(pack, estimator_dir):
    with pytest.raises(ValueError, match="model_name: 'nope.pt' was not found in models/depth_estimators/"):
        load(pack, "nope.pt")
    torch.save({"encoder.weight": torch.zeros(2)}, estimator_dir / "models" / "other.pt")
    with pytest.raises(ValueError, match="'other.pt' holds no supported depth network"):
        load(pack, "other.pt")


def test_wrong_image_batch_is_named(pack, estimator_dir):
    with pytest.raises(ValueError, match="images: expected an IMAGE batch"):
        estimate(pack, load(pack), torch.rand(16, 16, 3))


def test_per_clip_and_smoothing_reach_the_output(pack, estimator_dir):
    estimator = load(pack)
    images = frames(4, 32, 32)
    per_frame = estimate(pack, estimator, images)
    per_clip = estimate(pack, estimator, images, normalize="per_clip")
    assert per_clip.min() == 0 and per_clip.max() == 1 and not torch.equal(per_clip, per_frame)
    smoothed = estimate(pack, estimator, images, smoothing=0.5)
    flicker = lambda d: (d[1:] - d[:-1]).abs().mean()  # noqa: E731
    assert flicker(smoothed) < flicker(per_frame)


def progress_calls(pack, estimator, images, batch_size):
    """The (value, total) pairs MYV Estimate Depth hands ComfyUI's progress hook."""
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        estimate(pack, estimator, images, batch_size=batch_size)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    return calls


def progress_until_cancel(pack, estimator, images, batch_size):
    """The progress values seen when Cancel is pressed at the first one (the run must raise)."""
    values = []

    def cancel_at_first_step(value, total, preview, node_id=None):
        values.append(value)
        if value == 1:
            comfy.model_management.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(cancel_at_first_step)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            estimate(pack, estimator, images, batch_size=batch_size)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    return values


def test_progress_once_per_frame_and_cancel_between_batches(pack, estimator_dir, unthrottled_progress):
    estimator = load(pack)
    images = frames(5, 24, 24)
    assert progress_calls(pack, estimator, images, 2) == [(i, 5) for i in range(1, 6)]
    # the first batch finished, the second never started
    assert progress_until_cancel(pack, estimator, images, 2) == [1, 2]


@pytest.mark.parametrize("free_frames, batches", [(0.5, [1] * 5), (3.5, [3, 2]), (100.0, [4, 1])])
def test_batches_hold_no_more_frames_than_the_free_memory(pack, estimator_dir, monkeypatch, free_frames, batches):
    """As core VAE Decode sizes its batches: at most batch_size frames per network call, fewer where the
    device's free memory holds fewer by the estimator's per-frame estimate; the depth is the same."""
    estimator = load(pack)
    images = frames(5, 24, 24)
    reference = estimate(pack, estimator, images, batch_size=1)
    per_frame = estimator.load().model.bytes_per_frame(24, 24)
    assert per_frame > 0
    seen = []
    network = pack.myv_core.depth_estimation.DepthEstimator.estimate_native
    monkeypatch.setattr(pack.myv_core.depth_estimation.DepthEstimator, "estimate_native",
                        lambda self, batch: seen.append(len(batch)) or network(self, batch))
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *args, **kwargs: int(free_frames * per_frame))
    depth = estimate(pack, estimator, images, batch_size=4)
    assert seen == batches
    torch.testing.assert_close(depth, reference, rtol=0, atol=1e-5)


def test_progress_through_comfyuis_own_throttling(pack, estimator_dir):
    """With ComfyUI's progress bar as it is (0.33 throttles, 0.3.64 does not), what reaches the hook
    still counts frames of the right total, rises, starts at the first frame and ends at the last."""
    estimator = load(pack)
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        estimate(pack, estimator, frames(5, 24, 24), batch_size=2)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    values = [value for value, _ in calls]
    assert {total for _, total in calls} == {5}, calls
    assert values[0] == 1 and values[-1] == 5 and values == sorted(set(values)), calls
    if not hasattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL"):  # no throttling: every frame
        assert values == [1, 2, 3, 4, 5], calls


def test_loader_reads_no_weights_and_estimate_lets_them_go(pack, estimator_dir, monkeypatch):
    """The loader checks the file on the meta device; MYV Estimate Depth reads the weights, and after
    it returns nothing holds them (not even until a garbage collection), so they take no memory
    through sampling. A second run reads them again and gives the same depth."""
    module = pack.myv_core.depth_estimation
    reads, networks = [], []
    original_read, original_load = module.read, pack.nodes.depth_estimation.load_depth_estimator
    monkeypatch.setattr(module, "read", lambda *a, **k: reads.append(a) or original_read(*a, **k))
    estimator = load(pack, "tiny_midas.pt")
    assert not reads and estimator.kind == "midas"

    def load_depth_estimator(*args, **kwargs):
        networks.append(weakref.ref(network := original_load(*args, **kwargs)))
        return network

    monkeypatch.setattr(pack.nodes.depth_estimation, "load_depth_estimator", load_depth_estimator)
    images = frames(2, 24, 24)
    gc.disable()
    try:
        first = estimate(pack, estimator, images)
        assert reads and len(networks) == 1 and networks[0]() is None
        second = estimate(pack, estimator, images)
        assert len(networks) == 2 and networks[1]() is None
    finally:
        gc.enable()
    assert torch.equal(first, second)


def test_bad_images_are_named_before_the_weights_are_read(pack, estimator_dir, monkeypatch):
    estimator = load(pack)
    monkeypatch.setattr(pack.nodes.depth_estimation, "load_depth_estimator",
                        lambda *a, **k: pytest.fail("weights read for a bad input"))
    with pytest.raises(ValueError, match="images: expected 1, 3 or 4 channels"):
        estimate(pack, estimator, torch.rand(2, 3, 24, 24))


def test_bf16_estimator(pack, estimator_dir):
    estimator = load(pack, dtype="bf16")
    assert estimator.dtype == torch.bfloat16
    assert {p.dtype for p in estimator.load().model.parameters()} == {torch.bfloat16}
    out = estimate(pack, estimator, frames(2, 24, 24))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_estimated_depth_drives_a_make_your_video_model(pack, estimator_dir, model_dir, fixtures_dir):
    """LoadImage-style IMAGE batch -> MYVEstimateDepth -> MYVApplyDepth -> core KSampler."""
    parts = split_checkpoint(tiny_unet(fixtures_dir))
    from safetensors.torch import save_file
    save_file(parts.temporal, str(model_dir / "tiny_temporal.safetensors"))
    base = pack.nodes.loaders.build_spatial_model(parts, torch.float32)[0]
    model = pack.nodes.loaders.MYVTemporalModuleLoader().load(base, "tiny_temporal.safetensors")[0]
    depth = estimate(pack, load(pack), frames(3, 64, 64))
    model = pack.nodes.depth.MYVApplyDepth().apply(model, depth, "per_frame")[0]
    g = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, 64, generator=g), {}]]
    samples = comfy_nodes.common_ksampler(model, 0, 1, 1.0, "euler", "normal", cond, cond,
                                          {"samples": torch.zeros(3, 4, 8, 8)})[0]["samples"]
    assert samples.shape == (3, 4, 8, 8) and torch.isfinite(samples).all()


# ---------------------------------------------------------------- the UNet's depth channel: official through native_depth

@pytest.fixture()
def video_model(pack, model_dir, fixtures_dir):
    parts = split_checkpoint(tiny_unet(fixtures_dir))
    save_file(parts.temporal, str(model_dir / "tiny_temporal.safetensors"))
    base = pack.nodes.loaders.build_spatial_model(parts, torch.float32)[0]
    return pack.nodes.loaders.MYVTemporalModuleLoader().load(base, "tiny_temporal.safetensors")[0]


def capturing(model, run_unet=True):
    """A clone of `model` whose UNet calls record their depth channel (input channel 5), one entry per
    call; run_unet=False answers zeros instead of running the UNet (the channel is all that is looked at)."""
    seen = []

    def capture(executor, x, *args, **kwargs):
        seen.append(x[:, 4:5].detach().clone())
        return executor(x, *args, **kwargs) if run_unet else torch.zeros_like(x[:, :4])

    model = model.clone()
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test_capture", capture)
    return model, seen


def cond(seed):
    return [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(seed)), {}]]


def video_ksampler_channels(pack, model, depth, native, normalize="per_frame", cfg=2.0, run_unet=True):
    """MYV Video KSampler, 1 step: the depth channel of every UNet call, split into its cond/uncond
    chunks ((frames, 1, h, w) each)."""
    frames, height, width = depth.shape[0], depth.shape[1] // 8, depth.shape[2] // 8
    model, seen = capturing(model, run_unet)
    pack.nodes.sampling.MYVVideoKSampler().sample(model, cond(1), cond(2), depth,
                                                  {"samples": torch.zeros(frames, 4, height, width)}, 0, 1, cfg,
                                                  "euler", "normal", 1.0, normalize, native_depth=native)
    return [chunk for call in seen for chunk in call.split(frames)]


def channel_error(channels, official):
    """(max, mean) |channel - official| over every captured chunk."""
    diff = torch.stack([(c - official).abs() for c in channels])
    return diff.max().item(), diff.mean().item()


def test_estimate_depth_outputs_the_native_maps(pack, estimator_dir, tiny_dpt):
    """native_depth: the network's output at 384x384 before any resize; the IMAGE is unchanged (frame
    size and aspect, the same numbers as before native_depth existed)."""
    images = frames(3, 40, 56)
    image, native = estimate_both(pack, load(pack), images)
    assert isinstance(native, pack.nodes.depth_estimation.NativeDepth) and native.image is image
    assert native.raw.shape == (3, 1, 384, 384) and native.raw.dtype == torch.float32 and native.kind == "midas"
    assert (native.normalize, native.temporal_smoothing) == ("per_frame", 0.0)
    x = (images.permute(0, 3, 1, 2) - 0.5) / 0.5
    with torch.no_grad():
        direct = tiny_dpt(pixel_values=torch.nn.functional.interpolate(x, size=(384, 384), mode="bicubic")).predicted_depth
    assert torch.allclose(native.raw[:, 0], direct, atol=1e-5, rtol=1e-5)
    assert image.shape == (3, 40, 56, 3)
    resized = torch.nn.functional.interpolate(native.raw, size=(40, 56), mode="bicubic", align_corners=False)
    assert torch.equal(image, pack.nodes.depth_estimation.depth_images(resized, "per_frame", 0.0))
    _, smoothed = estimate_both(pack, load(pack), images, normalize="per_clip", smoothing=0.3)
    assert (smoothed.normalize, smoothed.temporal_smoothing) == ("per_clip", 0.3)


@pytest.mark.parametrize("mode", ["per_frame", "per_clip"])
def test_default_nodes_give_the_unet_the_official_depth_channel(pack, estimator_dir, tiny_dpt, video_model, mode):
    """MYV Estimate Depth -> (depth, native_depth) -> MYV Apply Depth + core KSampler, MYV Video KSampler,
    MYV Long Video Sampler: every UNet call (cond and uncond) sees the official get_batch_depth channel
    of its frames within 1e-3 (it is exact); the depth IMAGE alone (resized twice) does not."""
    clip = photo_like_clip(6, 64, 64)
    depth, native = estimate_both(pack, load(pack), clip, normalize=mode)
    official = official_get_batch_depth(tiny_dpt, clip, (8, 8), temporal_norm=mode == "per_clip")

    applied, seen = capturing(pack.nodes.depth.MYVApplyDepth().apply(video_model, depth, mode, native)[0],
                              run_unet=False)
    comfy_nodes.common_ksampler(applied, 0, 1, 2.0, "euler", "normal", cond(1), cond(2),
                                {"samples": torch.zeros(6, 4, 8, 8)})
    via_apply = [chunk for call in seen for chunk in call.split(6)]
    via_ksampler = video_ksampler_channels(pack, video_model, depth, native, mode, run_unet=False)
    before = video_ksampler_channels(pack, video_model, depth, None, mode, run_unet=False)
    assert len(via_apply) == len(via_ksampler) == 2  # cond + uncond
    assert channel_error(via_apply, official)[0] <= 1e-3 and channel_error(via_ksampler, official)[0] <= 1e-3
    assert channel_error(via_ksampler, official)[0] <= 1e-6  # measured: 0
    assert channel_error(before, official)[0] > 1e-2

    model, seen = capturing(video_model, run_unet=False)
    pack.nodes.long_video.MYVLongVideoSampler().sample(model, cond(1), cond(2), depth,
                                                       {"samples": torch.zeros(1, 4, 8, 8)}, 0, 1, 2.0, "euler",
                                                       "normal", 4, 2, mode, native_depth=native)
    windows = window_schedule(6, 4, 2)
    assert len(seen) == len(windows)
    for window, call in zip(windows, seen):
        for chunk in call.split(window.stop - window.start):
            assert (chunk - official[window.start:window.stop]).abs().max() <= 1e-6


def test_native_depth_with_another_depth_video_is_refused(pack, estimator_dir, video_model):
    depth, native = estimate_both(pack, load(pack), frames(4, 32, 32))
    other, _ = estimate_both(pack, load(pack), frames(3, 32, 32))
    with pytest.raises(ValueError, match="native_depth has 4 frames but depth has 3: connect the depth and "
                                         "native_depth outputs of the same MYV Estimate Depth"):
        pack.nodes.depth.MYVApplyDepth().apply(video_model, other, "per_frame", native)
    with pytest.raises(ValueError, match="native_depth has 4 frames but depth has 3"):
        pack.nodes.sampling.MYVVideoKSampler().sample(video_model, cond(1), cond(2), other,
                                                      {"samples": torch.zeros(3, 4, 4, 4)}, 0, 1, 1.0, "euler",
                                                      "normal", 1.0, "per_frame", native_depth=native)
    with pytest.raises(ValueError, match="depth is not the depth IMAGE of the MYV Estimate Depth"):
        pack.nodes.long_video.MYVLongVideoSampler().sample(video_model, cond(1), cond(2), 1.0 - depth,
                                                           {"samples": torch.zeros(1, 4, 4, 4)}, 0, 1, 1.0, "euler",
                                                           "normal", 4, 2, "per_frame", native_depth=native)
    # the latent still has to match the (shared) frame count
    with pytest.raises(ValueError, match="depth has 4 frames but latent_image has 5"):
        pack.nodes.sampling.MYVVideoKSampler().sample(video_model, cond(1), cond(2), depth,
                                                      {"samples": torch.zeros(5, 4, 4, 4)}, 0, 1, 1.0, "euler",
                                                      "normal", 1.0, "per_frame", native_depth=native)


def test_without_native_depth_nothing_changes(pack, estimator_dir, video_model):
    """Old workflows (native_depth unconnected): the channel is made from the depth IMAGE, as before."""
    depth = estimate(pack, load(pack), frames(4, 64, 64))
    channels = video_ksampler_channels(pack, video_model, depth, None, run_unet=False)
    expected = depth_to_latent(depth_from_image(depth), 8, 8, "per_frame")
    assert all(torch.equal(c, expected) for c in channels)


@pytest.mark.parametrize("name", PHOTOGRAPHS)
def test_depth_channel_before_and_after_on_photographs(pack, estimator_dir, tiny_dpt, video_model, name):
    """The small twin of docs/depth.md's figure: 16 frames of a real photograph (scikit-image) panned or zoomed,
    256x256, the tiny DPT-Hybrid (seeded random weights), MYV Estimate Depth (defaults) -> MYV Video
    KSampler (cfg 7.5, latent 32x32); error of the UNet's depth channel against the official
    get_batch_depth, without native_depth (before) and with it (after). `pytest -s` prints them;
    benchmarks/depth_channel.py measures the full-size network."""
    clip = photograph_clip(name)
    depth, native = estimate_both(pack, load(pack), clip, batch_size=8)
    official = official_get_batch_depth(tiny_dpt, clip, (32, 32))
    before = channel_error(video_ksampler_channels(pack, video_model, depth, None, cfg=7.5, run_unet=False), official)
    after = channel_error(video_ksampler_channels(pack, video_model, depth, native, cfg=7.5, run_unet=False), official)
    print(f"\n{name}: ComfyUI {comfyui_version()}, tiny DPT-Hybrid, 16 frames 256x256 -> 32x32: before max "
          f"{before[0]:.2e} mean {before[1]:.2e}; after max {after[0]:.2e} mean {after[1]:.2e}")
    assert after[0] <= 1e-3 and before[0] > 1e-3


# ---------------------------------------------------------------- Video Depth Anything

VDA_NAME = "video_depth_anything_vits.pth"


@pytest.fixture(scope="module")
def vda_dir(pack, tmp_path_factory):
    """A depth_estimators folder with the official Small layout on the reference's seeded weights."""
    folder = tmp_path_factory.mktemp("vda_models")
    save_official_vda(folder / VDA_NAME)
    folder_paths.add_model_folder_path("depth_estimators", str(folder))
    yield folder
    folder_paths.folder_names_and_paths["depth_estimators"][0].remove(str(folder))


def load_vda(pack, input_size):
    """MYV Depth Estimator Loader on the official file; the reference's input size (the official
    infer_video_depth's parameter) instead of 518 keeps the test fast."""
    class SmallInput(pack.nodes.depth_estimation.DepthEstimatorFile):
        def load(self):
            patcher = super().load()
            patcher.model.short_side = input_size
            return patcher

    return SmallInput(*load(pack, VDA_NAME))


def test_estimate_depth_matches_official_video_depth_anything(pack, vda_dir):
    """46 real frames, three windows: MYV Estimate Depth's per-clip depth IMAGE equals the official
    infer_video_depth normalised over the clip, within 1e-3 (measured: 1e-5)."""
    images, official, _, input_size = reference()
    names = pack.nodes.depth_estimation.MYVDepthEstimatorLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert VDA_NAME in names
    estimator = load_vda(pack, input_size)
    depth, native = estimate_both(pack, estimator, images, batch_size=8, normalize="estimator")
    expected = (official - official.min()) / (official.max() - official.min())
    assert depth.shape == (46, 45, 80, 3) and (depth[..., 0] - expected).abs().max() <= 1e-3
    assert native.normalize == "per_clip" and native.kind == "video_depth_anything"
    assert native.raw.shape == (46, 1, 56, 98)
    assert torch.equal(depth, estimate(pack, estimator, images, batch_size=8, normalize="per_clip"))


def test_video_depth_anything_progress_per_window_and_cancel(pack, vda_dir, unthrottled_progress):
    images, _, _, input_size = reference()
    estimator = load_vda(pack, input_size)
    assert progress_calls(pack, estimator, images, 8) == [(1, 3), (2, 3), (3, 3)]
    assert progress_until_cancel(pack, estimator, images, 8) == [1]  # the second window never started


def test_estimator_normalisation_keeps_midas_per_frame(pack, estimator_dir):
    images = frames(3, 24, 24)
    assert torch.equal(estimate(pack, load(pack), images, normalize="estimator"), estimate(pack, load(pack), images))
