"""Video Depth Anything: the official file layout, the windowed inference against the official
infer_video_depth on real frames, the window alignment and bounded memory."""

import importlib.util
import json

import pytest
import torch
from safetensors import safe_open

from conftest import FIXTURES, ROOT
from myv_core import video_depth
from myv_core.checkpoint import CheckpointError
from myv_core.depth_estimation import (DepthEstimator, convert_vda_state_dict, detect_layout, estimate_depth_and_native,
                                       estimate_steps, load_depth_estimator)
from myv_core.video_depth import INFER_LEN, WindowAligner, vda_input_size, window_count, window_inputs

transformers = pytest.importorskip("transformers")
REFERENCE = FIXTURES / "vda_reference.safetensors"


def fixture_generator():
    """scripts/make_vda_fixtures.py: the seeded weights the reference was made with."""
    spec = importlib.util.spec_from_file_location("make_vda_fixtures", ROOT / "scripts" / "make_vda_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vda_manifest():
    return json.loads((FIXTURES / "vda_small_keys.json").read_text())["keys"]


def save_official_vda(path):
    """A video_depth_anything_vits.pth as the official code saves it (every key, the position tables
    too), holding the seeded weights of the reference."""
    manifest = vda_manifest()
    weights = fixture_generator().seeded_vda_weights(manifest)
    for key, shape in manifest:
        if key.endswith(".pe"):  # (1, 32, channels) sinusoids, as the official PositionalEncoding makes
            weights[key] = video_depth.sinusoid(shape[1], shape[2], "cpu", torch.float32)[None]
    torch.save(weights, path)
    return path


def reference():
    """(frames IMAGE (N, H, W, 3) in [0, 1], official depth (N, H, W), depth range, input size)."""
    with safe_open(str(REFERENCE), "pt") as f:
        meta, frames, quantised = f.metadata(), f.get_tensor("frames"), f.get_tensor("depth")
    low, high = float(meta["low"]), float(meta["high"])
    depth = low + quantised.to(torch.float32) / 65535 * (high - low)
    return frames.float() / 255, depth, high - low, int(meta["input_size"])


@pytest.fixture(scope="module")
def vda_file(tmp_path_factory):
    return save_official_vda(tmp_path_factory.mktemp("vda") / "video_depth_anything_vits.pth")


@pytest.fixture(scope="module")
def vda(vda_file):
    return load_depth_estimator(vda_file)


def test_every_official_key_is_read():
    manifest = vda_manifest()
    sd = {key: torch.zeros(shape) for key, shape in manifest}
    layout, _ = detect_layout(sd)
    converted = convert_vda_state_dict(sd)
    tables = [key for key, _ in manifest if key.endswith(".pe")]
    assert layout == "video_depth_anything" and len(tables) == 8
    # every key but the 8 position tables lands somewhere; qkv becomes three tensors
    qkv = sum(key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias") for key, _ in manifest)
    assert len(converted) == len(manifest) - len(tables) + 2 * qkv
    with pytest.raises(CheckpointError, match="'x.pth': 1 keys are not part of a Video Depth Anything network: head.extra"):
        convert_vda_state_dict({**sd, "head.extra": torch.zeros(1)}, "'x.pth'")


def test_loads_the_official_small_layout(vda):
    assert vda.kind == "video_depth_anything" and vda.preferred_normalize == "per_clip"
    network = vda.network
    assert network.backbone.config.hidden_size == 384 and len(network.backbone.encoder.layer) == 12
    assert network.readout_layers == (2, 5, 8, 11)
    assert sum(p.numel() for p in network.parameters()) == sum(
        torch.Size(shape).numel() for key, shape in vda_manifest() if not key.endswith(".pe"))


@pytest.mark.parametrize("read_weights", [True, False])
def test_wrong_files_are_refused_by_name(tmp_path, vda_file, read_weights):
    sd = torch.load(vda_file, weights_only=True)
    del sd["head.motion_modules.3.temporal_transformer.proj_out.weight"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="'cut.pth': the weights do not fit VideoDepthNetwork: missing "
                                              r"\['motion_modules.3.proj_out.weight'\]"):
        load_depth_estimator(tmp_path / "cut.pth", read_weights=read_weights)
    # Depth Anything V2's original single-image release: pretrained.* and depth_head.*
    torch.save({"pretrained.cls_token": torch.zeros(1, 1, 384), "depth_head.projects.0.weight": torch.zeros(1)},
               tmp_path / "depth_anything_v2_vits.pth")
    with pytest.raises(CheckpointError, match="'depth_anything_v2_vits.pth' holds no supported depth network: .*"
                                              "Video Depth Anything's video_depth_anything_"):
        load_depth_estimator(tmp_path / "depth_anything_v2_vits.pth", read_weights=read_weights)
    sd = {k: v for k, v in torch.load(vda_file, weights_only=True).items()
          if not k.startswith("pretrained.blocks.") or k.split(".")[2] in ("0", "1")}
    torch.save(sd, tmp_path / "two_layers.pth")
    with pytest.raises(CheckpointError, match="'two_layers.pth': a 2-layer encoder"):
        load_depth_estimator(tmp_path / "two_layers.pth", read_weights=read_weights)


def test_matches_the_official_windowed_inference_on_real_frames(vda):
    """46 frames of a real clip: three windows, two alignments; within 1e-3 of the depth range
    (measured: 9e-6, the fixture's uint16 rounding is 8e-6)."""
    images, official, depth_range, input_size = reference()
    assert images.shape[0] >= 40 and window_count(images.shape[0]) == 3
    estimator = DepthEstimator(vda.network, vda.kind, input_size)
    depth, native = estimate_depth_and_native(estimator, images, batch_size=8)
    assert depth.shape == (46, 1, 45, 80) and native.shape == (46, 1, 56, 98)
    assert (depth[:, 0] - official).abs().max() / depth_range <= 1e-3
    # frame-wise chunks do not change the result
    chunked, _ = estimate_depth_and_native(estimator, images, batch_size=3)
    assert (chunked - depth).abs().max() / depth_range <= 1e-5


def test_the_temporal_layers_and_the_alignment_count(vda, monkeypatch):
    """What the parity test would catch: without the motion modules, or without aligning the
    windows, the depth is far from the official one."""
    images, official, depth_range, input_size = reference()
    estimator = DepthEstimator(vda.network, vda.kind, input_size)
    aligned, _ = video_depth.estimate_clip(estimator, images.permute(0, 3, 1, 2), 8)
    with monkeypatch.context() as patch:
        patch.setattr(WindowAligner, "scale_and_shift", lambda self, prediction: (1.0, 0.0))
        unaligned, _ = video_depth.estimate_clip(estimator, images.permute(0, 3, 1, 2), 8)
    assert (aligned[:, 0] - official).abs().max() / depth_range <= 1e-3
    assert (unaligned[:, 0] - official).abs().max() / depth_range > 1e-2
    saved = [m.proj_out.weight.clone() for m in vda.network.motion_modules]
    try:
        for module in vda.network.motion_modules:
            module.proj_out.weight.zero_()
        static, _ = video_depth.estimate_clip(estimator, images.permute(0, 3, 1, 2), 8)
    finally:
        for module, weight in zip(vda.network.motion_modules, saved):
            module.proj_out.weight.copy_(weight)
    assert (static[:, 0] - official).abs().max() / depth_range > 1e-2


def test_alignment_recovers_a_depth_seen_at_other_scales():
    """Windows that see one true depth at their own scale and shift come out as that depth."""
    frames = 70
    truth = torch.rand(frames, 1, 6, 5) + 0.5
    windows = window_inputs(frames)
    aligner, out, keys = WindowAligner(), [], None
    for number, indices in enumerate(windows):
        seen = indices if keys is None else keys + indices
        keys = [seen[k] for k in video_depth.KEYFRAMES]
        scale, shift = 1.0 + 0.5 * number, 0.1 * number
        out += aligner.add([truth[seen] * scale + shift])[0]
    out += aligner.finish()[0]
    assert len(windows) == 4 and len(out) >= frames
    assert torch.allclose(torch.stack(out[:frames]), truth, atol=1e-5)


def test_input_size_follows_the_official_rule():
    assert vda_input_size(540, 960) == 518 and vda_input_size(256, 256) == 518
    # 540x1920 (aspect 3.56 > 1.78): int(518 * 1.777 / 3.556) = 258 -> 18 patches -> 252
    assert vda_input_size(540, 1920) == 252 and vda_input_size(1920, 540) == 252


class CountingNetwork(torch.nn.Module):
    """Stands in for VideoDepthNetwork: mean brightness as depth; records the frames per call."""

    metric = False

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, pixels, chunk):
        self.calls.append(pixels.shape[0])
        return pixels.mean(dim=1) * self.weight + 3.0


def test_long_clips_run_window_by_window(monkeypatch):
    """200 frames: 10 windows (starts 0, 22, ..., 198) of 32 frames, never more preprocessed at once,
    a progress step and a cancel point each."""
    estimator = DepthEstimator(CountingNetwork(), "video_depth_anything", short_side=28)
    preprocessed = []
    preprocess = estimator.preprocess
    monkeypatch.setattr(estimator, "preprocess", lambda frames: preprocessed.append(frames.shape[0]) or preprocess(frames))
    before, after = [], []
    depth, native = estimate_depth_and_native(estimator, torch.rand(200, 20, 24, 3), 8,
                                              before_batch=lambda: before.append(1), after_batch=after.append)
    assert depth.shape == (200, 1, 20, 24) and native.shape == (200, 1, 28, 28)
    assert estimator.network.calls == [INFER_LEN] * 10 == [INFER_LEN] * estimate_steps(estimator, 200)
    assert max(preprocessed) == INFER_LEN and sum(preprocessed) == INFER_LEN + 9 * (INFER_LEN - video_depth.OVERLAP)
    assert len(before) == 10 and after == [1] * 10


def test_metric_file_joins_without_rescaling_and_inverts(vda, vda_file, tmp_path, monkeypatch):
    """metric_video_depth_anything_*.pth: the windows are joined as the official code joins a metric
    model's (no scale/shift fit), then 1 / depth, so near is bright like every estimator's output."""
    (tmp_path / "metric_video_depth_anything_vits.pth").symlink_to(vda_file)
    metric = load_depth_estimator(tmp_path / "metric_video_depth_anything_vits.pth")
    assert metric.network.metric and not vda.network.metric
    images, _, _, input_size = reference()
    frames = images[:40].permute(0, 3, 1, 2)
    depth, native = video_depth.estimate_clip(DepthEstimator(metric.network, metric.kind, input_size), frames, 8)
    with monkeypatch.context() as patch:
        patch.setattr(WindowAligner, "scale_and_shift", lambda self, prediction: (1.0, 0.0))
        joined, _ = video_depth.estimate_clip(DepthEstimator(vda.network, vda.kind, input_size), frames, 8)
    assert torch.allclose(depth, 1 / joined.clamp_min(video_depth.METRIC_NEAREST), rtol=1e-5)
    assert native.shape == (40, 1, 56, 98) and (native > 0).all()


def test_half_precision(vda, vda_file):
    """bf16 (what dtype bf16 gives): the depth comes back float32, finite, near the fp32 one
    (measured on 24 frames: mean 4e-3, max 1.8e-2 of the range)."""
    images, _, depth_range, input_size = reference()
    half = load_depth_estimator(vda_file, dtype=torch.bfloat16)
    assert {p.dtype for p in half.network.parameters()} == {torch.bfloat16}
    depth, native = estimate_depth_and_native(DepthEstimator(half.network, half.kind, input_size), images[:24], 8)
    full, _ = estimate_depth_and_native(DepthEstimator(vda.network, vda.kind, input_size), images[:24], 8)
    assert depth.dtype == native.dtype == torch.float32 and torch.isfinite(depth).all()
    assert (depth - full).abs().mean() / depth_range < 1e-2 and (depth - full).abs().max() / depth_range < 5e-2
