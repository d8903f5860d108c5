"""MYVDepthEstimatorLoader and MYVEstimateDepth inside a real (in-process) ComfyUI."""

import pytest
import torch

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import nodes as comfy_nodes

from myv_core.checkpoint import split_checkpoint
from myv_core.depth_estimation import dpt_state_dict_to_midas
from test_depth_estimation import frames, seeded, tiny_dpt_config
from tiny_models import tiny_unet

transformers = pytest.importorskip("transformers")
ESTIMATE_INPUTS = ["estimator", "images", "batch_size", "normalize", "temporal_smoothing"]


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


def estimate(pack, estimator, images, batch_size=2, normalize="per_frame", smoothing=0.0):
    return pack.nodes.depth_estimation.MYVEstimateDepth().estimate(estimator, images, batch_size, normalize, smoothing)[0]


def test_nodes_are_registered_with_their_inputs(pack):
    mappings = pack.NODE_CLASS_MAPPINGS
    loader, estimator = mappings["MYVDepthEstimatorLoader"], mappings["MYVEstimateDepth"]
    assert list(loader.INPUT_TYPES()["required"]) == ["model_name", "device", "dtype"]
    assert loader.RETURN_TYPES == ("MYV_DEPTH_ESTIMATOR",)
    inputs = estimator.INPUT_TYPES()["required"]
    assert list(inputs) == ESTIMATE_INPUTS
    assert inputs["normalize"][0] == ["per_frame", "per_clip"] and inputs["temporal_smoothing"][1]["default"] == 0.0
    assert estimator.RETURN_TYPES == ("IMAGE",)
    assert "MYV Estimate Depth" in pack.NODE_DISPLAY_NAME_MAPPINGS.values()


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
        patcher = load(pack, name)
        assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
        assert torch.allclose(estimate(pack, patcher, images), reference, atol=1e-4), name


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


def test_progress_once_per_frame_and_cancel_between_batches(pack, estimator_dir, unthrottled_progress):
    estimator = load(pack)
    images = frames(5, 24, 24)
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        estimate(pack, estimator, images, batch_size=2)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert calls == [(i, 5) for i in range(1, 6)]

    batches = []

    def cancel_after_first_frame(value, total, preview, node_id=None):
        batches.append(value)
        if value == 1:
            comfy.model_management.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(cancel_after_first_frame)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            estimate(pack, estimator, images, batch_size=2)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    assert batches == [1, 2]  # the first batch finished, the second never started


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


def test_second_run_reuses_the_loaded_estimator(pack, estimator_dir, monkeypatch):
    estimator = load(pack)
    network = estimator.model
    loads = []
    original = pack.nodes.depth_estimation.load_depth_estimator
    monkeypatch.setattr(pack.nodes.depth_estimation, "load_depth_estimator",
                        lambda *a, **k: loads.append(a) or original(*a, **k))
    images = frames(2, 24, 24)
    first = estimate(pack, estimator, images)
    second = estimate(pack, estimator, images)
    assert torch.equal(first, second) and estimator.model is network and not loads


def test_bf16_estimator(pack, estimator_dir):
    estimator = load(pack, dtype="bf16")
    assert {p.dtype for p in estimator.model.parameters()} == {torch.bfloat16}
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
