"""The pack's nodes inside a real (in-process) ComfyUI: loading, patching, sampling, clean-up."""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

import comfy.model_detection
import comfy.model_management
import comfy.sample
import comfy.utils
import nodes as comfy_nodes

from myv_core.checkpoint import split_checkpoint
from myv_core.temporal import TemporalConvBlock, TemporalTransformer
from tiny_models import tiny_unet

FRAMES = 5


@pytest.fixture()
def parts(fixtures_dir):
    return split_checkpoint(tiny_unet(fixtures_dir))


@pytest.fixture()
def temporal_file(model_dir, parts):
    save_file(parts.temporal, str(model_dir / "tiny_temporal.safetensors"))
    return "tiny_temporal.safetensors"


@pytest.fixture()
def base(pack, parts):
    """A plain 5-channel SD2 MODEL, as the core loader would give for the converter's spatial file."""
    return pack.nodes.loaders.build_spatial_model(parts, torch.float32)[0]


@pytest.fixture()
def video_model(pack, base, temporal_file):
    return pack.nodes.loaders.MYVTemporalModuleLoader().load(base, temporal_file)[0]


def conditioning(seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 64, generator=g), {}]]


def depth_images(frames=FRAMES, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(frames, size // 4, size // 4, 1, generator=g).repeat(1, 4, 4, 3)  # blocky depth


def latent(frames=FRAMES, size=64):
    return {"samples": torch.zeros(frames, 4, size // 8, size // 8)}


def ksampler(model, seed=3, steps=2, cfg=2.0, lat=None):
    return comfy_nodes.common_ksampler(model, seed, steps, cfg, "euler", "normal", conditioning(1),
                                       conditioning(2), lat or latent())[0]["samples"]


def temporal_modules(model):
    return sum(isinstance(m, (TemporalConvBlock, TemporalTransformer)) for m in model.model.diffusion_model.modules())


def test_unet_config_agrees_with_comfy_detection(pack, parts, fixtures_dir):
    """ComfyUI's own detector is the oracle for the SD2 config we derive from the weights."""
    detected = comfy.model_detection.detect_unet_config(parts.unet, "")
    assert pack.nodes.loaders.sd2_unet_config(parts.config) == detected


def test_apply_depth_and_core_ksampler_equal_video_ksampler(pack, video_model):
    depth = depth_images()
    via_core = ksampler(pack.nodes.depth.MYVApplyDepth().apply(video_model, depth, "per_frame")[0])
    via_pack = pack.nodes.sampling.MYVVideoKSampler().sample(
        video_model, conditioning(1), conditioning(2), depth, latent(), 3, 2, 2.0, "euler", "normal", 1.0,
        "per_frame")[0]["samples"]
    assert torch.equal(via_core, via_pack)
    assert via_core.shape == (FRAMES, 4, 8, 8) and torch.isfinite(via_core).all()
    per_clip = ksampler(pack.nodes.depth.MYVApplyDepth().apply(video_model, depth, "per_clip")[0])
    assert not torch.equal(per_clip, via_core)  # the normalisation reaches the UNet


def test_checkpoint_loader_and_temporal_loader_give_the_same_model(pack, model_dir, fixtures_dir, video_model):
    save_file(tiny_unet(fixtures_dir), str(model_dir / "full.safetensors"))
    full = pack.nodes.loaders.MYVCheckpointLoader().load("full.safetensors", "fp32")[0]
    apply = pack.nodes.depth.MYVApplyDepth().apply
    depth = depth_images()
    assert torch.equal(ksampler(apply(full, depth, "per_frame")[0]), ksampler(apply(video_model, depth, "per_frame")[0]))


def plain_sample(base):
    """Plain SD sampling with the base MODEL (the other branch of a workflow sharing the checkpoint)."""
    plain_cond = [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1)),
                   {"noise_concat": torch.zeros(FRAMES, 1, 8, 8)}]]
    return comfy.sample.sample(base, torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
                               2, 2.0, "euler", "normal", plain_cond, plain_cond, latent()["samples"],
                               disable_pbar=True)


def test_base_model_untouched(pack, base, video_model):
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    reference = plain_sample(base)
    ksampler(pack.nodes.depth.MYVApplyDepth().apply(video_model, depth_images(), "per_frame")[0])
    assert temporal_modules(base) == 0  # ejected right after sampling
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())
    assert set(before) == set(base.model.state_dict())
    assert torch.equal(plain_sample(base), reference)


def test_interrupted_run_leaves_nothing_behind(pack, base, video_model, unthrottled_progress):
    """Cancelled at the 2nd of 3 steps (ComfyUI 0.33's progress throttling off, or that update would not
    reach the hook and the cancel would land only at the last step)."""
    model = pack.nodes.depth.MYVApplyDepth().apply(video_model, depth_images(), "per_frame")[0]
    clean = ksampler(model, steps=3)
    plain = plain_sample(base)

    reached = []

    def interrupt_at_second_step(value, total, preview, node_id=None):
        # what ComfyUI's server hook does: the progress update is where a cancel lands
        reached.append(value)
        if value >= 2:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(interrupt_at_second_step)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            ksampler(model, steps=3)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert reached == [1, 2], reached
    assert temporal_modules(base) == 0
    assert torch.equal(plain_sample(base), plain)
    assert torch.equal(ksampler(model, steps=3), clean)


def test_frame_count_mismatch_names_both_numbers(pack, video_model):
    with pytest.raises(ValueError, match=r"depth has 4 frames but latent_image has 5"):
        pack.nodes.sampling.MYVVideoKSampler().sample(
            video_model, conditioning(1), conditioning(2), depth_images(4), latent(5), 0, 1, 1.0, "euler",
            "normal", 1.0, "per_frame")
    with pytest.raises(ValueError, match=r"depth has 4 frames but the latent has 5"):
        ksampler(pack.nodes.depth.MYVApplyDepth().apply(video_model, depth_images(4), "per_frame")[0])


def test_sampling_without_depth_says_what_to_connect(video_model, base):
    with pytest.raises(ValueError, match="MYV Apply Depth"):
        ksampler(video_model)
    assert temporal_modules(base) == 0


def test_four_channel_model_is_refused(pack, parts, temporal_file):
    w = parts.unet["input_blocks.0.0.weight"]
    four = dataclasses.replace(parts, unet=dict(parts.unet, **{"input_blocks.0.0.weight": w[:, :4].contiguous()}),
                               config=dataclasses.replace(parts.config, in_channels=4))
    model = pack.nodes.loaders.build_spatial_model(four, torch.float32)[0]
    with pytest.raises(ValueError, match="takes 4 input channels, Make-Your-Video needs 5"):
        pack.nodes.loaders.MYVTemporalModuleLoader().load(model, temporal_file)


def test_apply_depth_needs_a_video_model(pack, base):
    with pytest.raises(ValueError, match="not a Make-Your-Video model"):
        pack.nodes.depth.MYVApplyDepth().apply(base, depth_images(), "per_frame")


def test_half_precision_weights(pack, model_dir, fixtures_dir):
    """bf16 weights through comfy.ops (manual cast on the CPU) stay close to the fp32 model."""
    save_file(tiny_unet(fixtures_dir), str(model_dir / "full.safetensors"))
    load = pack.nodes.loaders.MYVCheckpointLoader().load
    apply = pack.nodes.depth.MYVApplyDepth().apply
    depth = depth_images()
    outputs = {}
    for dtype in ("fp32", "bf16"):
        model = load("full.safetensors", dtype)[0]
        layers = model.get_additional_models_with_key("makeyourvideo")[0].model
        assert {p.dtype for p in layers.parameters()} == {getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype])}
        outputs[dtype] = ksampler(apply(model, depth, "per_frame")[0], steps=1, cfg=1.0)
    assert (outputs["bf16"] - outputs["fp32"]).abs().max() < 0.05 * outputs["fp32"].abs().max()


def test_select_frames(pack):
    images = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1).repeat(1, 2, 2, 3)
    select = pack.nodes.sampling.MYVSelectFrames().select
    picked, count = select(images, 3, 2, 16)
    assert count == 16 and picked[:, 0, 0, 0].tolist() == list(range(3, 35, 2))
    assert select(images, 0, 1, 0)[1] == 40
    assert select(images, 35, 2, 16)[1] == 3
    with pytest.raises(ValueError, match="start: the clip has 40 frames"):
        select(images, 40, 1, 16)
