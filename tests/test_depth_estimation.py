"""Depth estimation in pure torch + transformers: MiDaS key conversion and numeric parity with the
official code, every weight layout, pre-processing, normalisation and temporal stability."""

import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import ROOT
from myv_core.checkpoint import CheckpointError
from myv_core.depth_estimation import (DPT_UNUSED_PREFIXES, MIDAS_UNUSED_PREFIXES, DepthEstimator,
                                       convert_midas_state_dict, depth_anything_size, depth_images,
                                       dpt_hybrid_config, dpt_state_dict_to_midas, estimate_depth,
                                       estimate_depth_and_native, flicker,
                                       load_depth_estimator, normalize_depth, smooth_temporally)

transformers = pytest.importorskip("transformers")


def fixture_generator():
    """scripts/make_midas_fixtures.py: the seeded weights and frame the reference was made with."""
    spec = importlib.util.spec_from_file_location("make_midas_fixtures", ROOT / "scripts" / "make_midas_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest(fixtures_dir):
    return [(k, tuple(s)) for k, s in json.loads((fixtures_dir / "midas_dpt_hybrid_keys.json").read_text())["keys"]]


# ---------------------------------------------------------------- tiny models made here

def tiny_dpt_config():
    """A small DPT-Hybrid (BiT stem 32, stages of 1 block, 4 ViT layers of width 64) that takes 384x384."""
    return transformers.DPTConfig(
        is_hybrid=True, hidden_size=64, num_hidden_layers=4, num_attention_heads=1, intermediate_size=128,
        layer_norm_eps=1e-6, image_size=384, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
        backbone_featmap_shape=[1, 512, 24, 24],
        backbone_config={"model_type": "bit", "global_padding": "same", "layer_type": "bottleneck",
                         "depths": [1, 1, 1], "hidden_sizes": [128, 256, 512, 1024], "embedding_size": 32,
                         "out_features": ["stage1", "stage2", "stage3"], "embedding_dynamic_padding": True},
        neck_hidden_sizes=[128, 256, 64, 64], reassemble_factors=[1, 1, 1, 0.5], fusion_hidden_size=32)


def seeded(model, seed=0):
    """Deterministic non-trivial weights (the default init leaves biases and some heads at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif p.ndim >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.02 * noise)
        model.head.head[4].bias.fill_(0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_dpt():
    return seeded(transformers.DPTForDepthEstimation(tiny_dpt_config()))


@pytest.fixture()
def tiny_dpt_folder(tmp_path, tiny_dpt):
    tiny_dpt.save_pretrained(tmp_path / "tiny-dpt")
    return tmp_path / "tiny-dpt"


def tiny_depth_anything():
    config = transformers.DepthAnythingConfig(
        backbone_config={"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
                         "intermediate_size": 64, "patch_size": 14, "image_size": 518,
                         "out_indices": [1, 2, 3, 4], "apply_layernorm": True, "reshape_hidden_states": False},
        reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    torch.manual_seed(0)
    return transformers.DepthAnythingForDepthEstimation(config).eval()


def frames(count=3, height=40, width=56, seed=0):
    """IMAGE batch (frames, H, W, 3) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, height // 8, width // 8, generator=g)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


# ---------------------------------------------------------------- original MiDaS file

def test_every_original_key_is_converted_to_dpt_hybrid(manifest):
    meta = {k: torch.empty(s, device="meta") for k, s in manifest}
    converted = convert_midas_state_dict(meta)
    config = dpt_hybrid_config(converted)
    with torch.device("meta"):
        reference = transformers.DPTForDepthEstimation(config).state_dict()
    assert set(converted) == set(reference)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in reference.items()}
    dropped = {k for k in meta if k.startswith(MIDAS_UNUSED_PREFIXES)}
    assert dropped == {"pretrained.model.head.weight", "pretrained.model.head.bias"}  # ImageNet classifier
    qkv = [k for k in meta if ".attn.qkv." in k]
    assert len(converted) == len(meta) - len(dropped) + 2 * len(qkv)  # every other key placed once
    # the derived config is Intel/dpt-hybrid-midas' architecture
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
            config.image_size) == (768, 12, 12, 3072, 384)
    assert list(config.backbone_config.depths) == [3, 4, 9] and config.backbone_config.embedding_size == 64
    assert list(config.neck_hidden_sizes) == [256, 512, 768, 768] and config.fusion_hidden_size == 256
    assert list(config.backbone_featmap_shape) == [1, 1024, 24, 24]
    assert list(config.backbone_out_indices)[2:] == [8, 11]  # MiDaS hooks blocks 8 and 11


def test_conversion_is_invertible(manifest):
    g = torch.Generator().manual_seed(0)
    original = {k: torch.randn(s, generator=g) for k, s in manifest if len(s) <= 2 and math.prod(s) < 5000}
    original.update({k: torch.randn(s, generator=g) for k, s in manifest if ".attn.qkv." in k and "blocks.0." in k})
    back = dpt_state_dict_to_midas(convert_midas_state_dict(original))
    kept = {k for k in original if not k.startswith(MIDAS_UNUSED_PREFIXES)}
    assert set(back) == kept and all(torch.equal(back[k], original[k]) for k in kept)


def test_unknown_original_key_is_named(manifest):
    meta = {k: torch.empty(s, device="meta") for k, s in manifest}
    meta["pretrained.model.dist_token"] = torch.empty(1, 1, 768, device="meta")
    with pytest.raises(CheckpointError, match="dist_token.*Only dpt_hybrid-midas-501f0c75.pt"):
        convert_midas_state_dict(meta, "'x.pt'")


def test_midas_numeric_parity_with_official_code(manifest, fixtures_dir):
    """Seeded random weights in the original layout, converted and run by transformers, against the
    official MiDaS forward + get_batch_depth resizes (scripts/make_midas_fixtures.py, CPU float32).
    Tolerance: 1e-4 of the output's maximum (measured 2e-6)."""
    generator = fixture_generator()
    reference = load_file(str(fixtures_dir / "midas_dpt_hybrid_reference.safetensors"))
    weights = generator.seeded_midas_weights([[k, list(s)] for k, s in manifest])
    sd = convert_midas_state_dict(weights)
    network = transformers.DPTForDepthEstimation(dpt_hybrid_config(sd))
    missing, unexpected = network.load_state_dict(sd, strict=False)
    assert not unexpected and not missing
    estimator = DepthEstimator(network.eval(), "midas")
    frame = reference["frame"]
    # The generator still makes the stored frame (to the last bit but one: bilinear interpolation's
    # rounding depends on the thread count, 1.2e-7 with one thread).
    torch.testing.assert_close(frame, generator.seeded_frame(), rtol=0, atol=1e-6)
    with torch.no_grad():
        depth_384 = estimator(estimator.preprocess(frame)).unsqueeze(1)
    depth = estimator.estimate(frame)
    scale = reference["depth_384"].abs().max()
    assert scale > 1 and (reference["depth_384"] > 0).float().mean() > 0.5  # not a degenerate map
    assert (depth_384 - reference["depth_384"]).abs().max() < 1e-4 * scale
    assert depth.shape == reference["depth"].shape == (1, 1, 96, 128)
    assert (depth - reference["depth"]).abs().max() < 1e-4 * scale


# ---------------------------------------------------------------- every layout, tiny

def test_all_dpt_layouts_load_to_the_same_network(tmp_path, tiny_dpt, tiny_dpt_folder):
    sd = tiny_dpt.state_dict()
    original = dpt_state_dict_to_midas(sd)
    torch.save(original, tmp_path / "dpt_hybrid-midas-tiny.pt")
    save_file({"depth_stage_model.model." + k: v for k, v in original.items()} |
              {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 5, 3, 3)},
              str(tmp_path / "myv_with_depth.safetensors"))
    save_file({"model." + k: v for k, v in original.items()}, str(tmp_path / "myv_depth.safetensors"))
    save_file({k: v.contiguous() for k, v in sd.items() if not k.startswith(DPT_UNUSED_PREFIXES)},
              str(tmp_path / "dpt_no_config.safetensors"))
    images = frames()
    expected = estimate_depth(DepthEstimator(tiny_dpt, "midas"), images)
    for path in (tiny_dpt_folder, tiny_dpt_folder / "model.safetensors", tmp_path / "dpt_hybrid-midas-tiny.pt",
                 tmp_path / "myv_with_depth.safetensors", tmp_path / "myv_depth.safetensors",
                 tmp_path / "dpt_no_config.safetensors"):
        estimator = load_depth_estimator(path)
        assert estimator.kind == "midas"
        assert torch.allclose(estimate_depth(estimator, images), expected, atol=1e-5, rtol=1e-5), path.name
        checked = load_depth_estimator(path, read_weights=False)  # what MYV Depth Estimator Loader does
        assert checked.kind == "midas" and all(t.is_meta for t in checked.state_dict().values()), path.name
        assert checked.state_dict().keys() == estimator.state_dict().keys()


def test_midas_path_equals_transformers_on_the_official_preprocessing(tiny_dpt):
    images = frames(2, 50, 70)
    x = images.permute(0, 3, 1, 2)
    restated = F.interpolate((x - 0.5) / 0.5, size=(384, 384), mode="bicubic", align_corners=False)
    estimator = DepthEstimator(tiny_dpt, "midas")
    assert torch.allclose(estimator.preprocess(x), restated, atol=1e-6)
    with torch.no_grad():
        direct = tiny_dpt(pixel_values=restated).predicted_depth
    direct = F.interpolate(direct.unsqueeze(1), size=(50, 70), mode="bicubic", align_corners=False)
    assert torch.allclose(estimate_depth(estimator, images), direct, atol=1e-6)


def test_batch_size_does_not_change_the_result(tiny_dpt):
    estimator = DepthEstimator(tiny_dpt, "midas")
    images = frames(5)
    one = estimate_depth(estimator, images, batch_size=1)
    for batch_size in (2, 5, 16):
        assert torch.allclose(estimate_depth(estimator, images, batch_size=batch_size), one, atol=1e-5)


def test_depth_anything_folder(tmp_path):
    tiny_depth_anything().save_pretrained(tmp_path / "da")
    estimator = load_depth_estimator(tmp_path / "da" / "model.safetensors")
    assert estimator.kind == "depth_anything"
    images = frames(2, 30, 44)
    raw = estimate_depth(estimator, images, batch_size=1)
    assert raw.shape == (2, 1, 30, 44) and torch.isfinite(raw).all()
    sized, native = estimate_depth_and_native(estimator, images, batch_size=2)  # native: its input size
    assert native.shape == (2, 1, *depth_anything_size(30, 44)) and torch.allclose(sized, raw, atol=1e-5)
    out = depth_images(raw, "per_frame")
    assert out.shape == (2, 30, 44, 3) and out.min() >= 0 and out.max() <= 1
    assert depth_anything_size(96, 128) == (518, 686) and depth_anything_size(518, 518) == (518, 518)
    x = images.permute(0, 3, 1, 2)
    resized = F.interpolate(x, size=depth_anything_size(30, 44), mode="bicubic", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(estimator.preprocess(x), (resized - mean) / std, atol=1e-6)
    (tmp_path / "da" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_depth_estimator(tmp_path / "da" / "model.safetensors")


def test_half_precision_estimator(tiny_dpt):
    images = frames(2)
    reference = estimate_depth(DepthEstimator(tiny_dpt, "midas"), images)
    half = DepthEstimator(transformers.DPTForDepthEstimation(tiny_dpt_config()), "midas")
    half.network.load_state_dict(tiny_dpt.state_dict())
    half.to(torch.bfloat16)
    out = estimate_depth(half, images)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # bf16 keeps ~3 significant digits and a random network amplifies rounding: same map, not same values
    correlation = torch.corrcoef(torch.stack([out.flatten(), reference.flatten()]))[0, 1]
    assert correlation > 0.95, correlation


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("read_weights", [True, False])
def test_missing_and_wrong_files(tmp_path, read_weights):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_depth_estimator(tmp_path / "nothing.pt", read_weights=read_weights)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 5, 3, 3)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(CheckpointError, match="no supported depth network: it is a diffusion model"):
        load_depth_estimator(tmp_path / "unet.safetensors", read_weights=read_weights)
    save_file({"encoder.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a depth estimator"):
        load_depth_estimator(tmp_path / "other.safetensors", read_weights=read_weights)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(CheckpointError, match="without model.safetensors"):
        load_depth_estimator(tmp_path / "empty_folder", read_weights=read_weights)


def test_image_batch_of_the_wrong_shape(tiny_dpt):
    estimator = DepthEstimator(tiny_dpt, "midas")
    with pytest.raises(ValueError, match=r"images: expected an IMAGE batch .* got \(8, 8, 3\)"):
        estimate_depth(estimator, torch.rand(8, 8, 3))
    with pytest.raises(ValueError, match="images: expected 1, 3 or 4 channels"):
        estimate_depth(estimator, torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="no frames"):
        estimate_depth(estimator, torch.rand(0, 8, 8, 3))
    with pytest.raises(ValueError, match="batch_size"):
        estimate_depth(estimator, torch.rand(1, 8, 8, 3), batch_size=0)


# ---------------------------------------------------------------- normalisation, near = bright

def test_near_is_bright_and_range():
    ramp = torch.linspace(2.0, 10.0, 16).view(1, 1, 1, 16).expand(2, 1, 4, 16)  # inverse depth: right is near
    out = depth_images(ramp, "per_frame")
    assert out.shape == (2, 4, 16, 3) and torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])
    assert out[:, :, -1, 0].eq(1).all() and out[:, :, 0, 0].eq(0).all()  # nearest = white, farthest = black
    assert (out[0, 0, 1:, 0] > out[0, 0, :-1, 0]).all()
    assert depth_images(torch.full((1, 1, 4, 4), 3.0)).eq(0).all()  # flat frame: no NaN


def test_per_clip_keeps_relative_brightness():
    base = torch.linspace(0.0, 1.0, 8).view(1, 1, 1, 8)
    clip = torch.cat([base * 1.0 + 1, base * 0.5 + 1])
    per_frame = normalize_depth(clip, "per_frame")
    per_clip = normalize_depth(clip, "per_clip")
    assert torch.allclose(per_frame[0], per_frame[1])  # each frame spans 0..1
    assert per_clip.min() == 0 and per_clip.max() == 1
    assert per_clip[1].max() < 0.6  # the second frame stays darker: one scale for the clip
    with pytest.raises(ValueError, match="normalize"):
        normalize_depth(clip, "per_video")


SCENARIOS = {"approach": (0.0, 0.0), "drift": (0.10, 0.05)}  # (gain jitter, offset jitter)


def synthetic_clip(scenario, frames_count=16, size=64, seed=0):
    """A deterministic stand-in for an estimator's raw output on a clip (frames, 1, H, W), and its truth.

    Truth (inverse depth, near = large): a ground plane ramp (0.2 far at the top .. 0.6 near at the
    bottom) and a textured square that slides right while approaching the camera (0.5 -> 1.0), so the
    clip's nearest value grows frame by frame. "Estimate" = truth + pixel noise (std 0.01), and in the
    "drift" scenario also the per-frame scale/shift ambiguity of relative depth networks: a gain of
    1 +- 10 % and an offset of +- 0.05, drawn per frame.
    """
    gain_jitter, offset_jitter = SCENARIOS[scenario]
    g = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0.2, 0.6, size).view(size, 1).expand(size, size)
    texture = 0.03 * torch.rand(size, size, generator=g)
    truth = []
    for t in range(frames_count):
        frame = rows.clone()
        left, top, side = 4 + 2 * t, 16, 20
        frame[top:top + side, left:left + side] = 0.5 + 0.5 * t / (frames_count - 1) + texture[:side, :side]
        truth.append(frame)
    truth = torch.stack(truth).unsqueeze(1)
    gain = 1 + gain_jitter * (2 * torch.rand(frames_count, 1, 1, 1, generator=g) - 1)
    offset = offset_jitter * (2 * torch.rand(frames_count, 1, 1, 1, generator=g) - 1)
    estimate = truth * gain + offset + 0.01 * torch.randn(truth.shape, generator=g)
    return estimate, truth


def flicker_table():
    """(scenario, normalize, smoothing, flicker, truth's flicker, error) rows; the truth is normalised
    the same way, error = mean |D - truth|."""
    rows = []
    for scenario in SCENARIOS:
        estimate, truth = synthetic_clip(scenario)
        for mode in ("per_frame", "per_clip"):
            truth_images = depth_images(truth, mode)
            for strength in (0.0, 0.3, 0.5):
                images = depth_images(estimate, mode, strength)
                rows.append((scenario, mode, strength, flicker(images), flicker(truth_images),
                             (images - truth_images).abs().mean().item()))
    return rows


def test_temporal_smoothing():
    estimate, _ = synthetic_clip("drift")
    normalized = normalize_depth(estimate, "per_frame")
    assert torch.equal(smooth_temporally(normalized, 0.0), normalized)
    smoothed = smooth_temporally(normalized, 0.5)
    assert smoothed.min() >= normalized.min() and smoothed.max() <= normalized.max()
    # zero lag: smoothing the reversed clip is the reversed smoothed clip
    assert torch.allclose(smooth_temporally(normalized.flip(0), 0.5), smoothed.flip(0), atol=1e-6)
    constant = torch.full((5, 1, 2, 2), 0.25)
    assert torch.allclose(smooth_temporally(constant, 0.7), constant)
    with pytest.raises(ValueError, match="temporal_smoothing"):
        smooth_temporally(normalized, 1.0)


def test_flicker_per_clip_and_smoothing():
    """per_clip removes the flicker of a changing range, per_frame that of estimator drift; smoothing
    lowers both. `pytest -s` prints the table quoted in docs/depth.md."""
    rows = flicker_table()
    value = {(scenario, mode, s): f for scenario, mode, s, f, _, _ in rows}
    assert value[("approach", "per_clip", 0.0)] < value[("approach", "per_frame", 0.0)]
    assert value[("drift", "per_frame", 0.0)] < value[("drift", "per_clip", 0.0)]
    for scenario in SCENARIOS:
        for mode in ("per_frame", "per_clip"):
            assert value[(scenario, mode, 0.5)] < value[(scenario, mode, 0.3)] < value[(scenario, mode, 0.0)]
    print("\nflicker = mean |D[t] - D[t-1]| of the depth video D in [0, 1]; truth = the same for the noiseless "
          "truth normalised the same way (motion alone); error = mean |D - truth|")
    print(f"{'scenario':<9} {'normalize':<10} {'smoothing':>9} {'flicker':>8} {'truth':>7} {'error':>7}")
    for scenario, mode, strength, f, truth, error in rows:
        print(f"{scenario:<9} {mode:<10} {strength:>9.1f} {f:>8.4f} {truth:>7.4f} {error:>7.4f}")
