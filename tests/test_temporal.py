"""The temporal layers against the official implementation's outputs and its equations."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from myv_core import temporal
from myv_core.attention import causal_band_mask, temporal_attention
from myv_core.temporal import TemporalConvBlock, TemporalTransformer

TOL = 1e-4


@pytest.fixture(scope="module")
def cases(fixtures_dir):
    return load_file(str(fixtures_dir / "myv_tiny_cases.safetensors"))


def module_weights(cases, name):
    prefix = f"module.{name}.weights."
    return {k[len(prefix):]: v.float() for k, v in cases.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def transformer(cases):
    tt = TemporalTransformer(64, heads=4, head_dim=16)
    tt.load_state_dict(module_weights(cases, "temporal_transformer"), strict=True)
    return tt.eval()


@pytest.fixture(scope="module")
def conv(cases):
    block = TemporalConvBlock(64)
    block.load_state_dict(module_weights(cases, "temporal_conv"), strict=True)
    return block.eval()


@pytest.mark.parametrize("case", ["t24", "t7"])
@pytest.mark.parametrize("chunk_rows", [None, 24])
@torch.no_grad()
def test_temporal_transformer_matches_official(transformer, cases, case, chunk_rows, monkeypatch):
    """Whole batch, and (chunk_rows) a few sequences at a time as on the CPU for large inputs."""
    x = cases[f"module.temporal_transformer.case.{case}.x"]
    y = cases[f"module.temporal_transformer.case.{case}.y"]
    whole = transformer(x)
    if chunk_rows:
        monkeypatch.setattr(temporal, "CPU_CHUNK_ROWS", chunk_rows)
        chunked = transformer(x)
        assert x.shape[0] * x.shape[3] * x.shape[4] > max(1, chunk_rows // x.shape[2])  # more than one chunk
        assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-5)  # GEMMs of fewer rows may round differently
    assert (whole - y).abs().max().item() <= TOL


def test_temporal_transformer_gradients_through_chunks_and_geglu(cases, monkeypatch):
    """The in-place GEGLU product and the chunked sequences keep autograd's gradients (the micro model trains
    through them)."""
    torch.manual_seed(0)
    tt = TemporalTransformer(64, heads=4, head_dim=16)
    tt.load_state_dict(module_weights(cases, "temporal_transformer"), strict=True)
    x = cases["module.temporal_transformer.case.t7.x"].clone().requires_grad_(True)
    tt(x).square().sum().backward()
    grads = x.grad.clone(), tt.transformer_blocks[0].ff.net[0].proj.weight.grad.clone()
    tt.zero_grad()
    x.grad = None
    monkeypatch.setattr(temporal, "CPU_CHUNK_ROWS", 7)
    monkeypatch.setattr(temporal.GEGLU, "forward", lambda self, h: (lambda a, g: a * torch.nn.functional.gelu(g))(
        *self.proj(h).chunk(2, dim=-1)))
    tt(x).square().sum().backward()
    assert torch.allclose(x.grad, grads[0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(tt.transformer_blocks[0].ff.net[0].proj.weight.grad, grads[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["t20", "t1"])
@torch.no_grad()
def test_temporal_conv_matches_official(conv, cases, case):
    x = cases[f"module.temporal_conv.case.{case}.x"]
    y = cases[f"module.temporal_conv.case.{case}.y"]
    assert (conv(x) - y).abs().max().item() <= TOL


def official_style_mask(frames_max=64):
    """The official 64-frame mask construction, restated: row i allows columns max(0, i-15)..i."""
    mask = torch.zeros(frames_max, frames_max, dtype=torch.bool)
    for i in range(frames_max):
        mask[i, max(0, i - 15):i + 1] = True
    return mask


def test_band_mask_equals_official_and_extends_past_64():
    assert torch.equal(causal_band_mask(64), official_style_mask(64))
    mask = causal_band_mask(100)
    assert torch.equal(mask[:64, :64], official_style_mask(64))
    for i in (64, 80, 99):
        assert mask[i].nonzero().flatten().tolist() == list(range(i - 15, i + 1))
    assert causal_band_mask(1).tolist() == [[True]]


def test_attention_is_causal_and_banded_beyond_64_frames():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 100, 32, generator=g) for _ in range(3))
    rel = torch.randn(33, 16, generator=g)
    base = temporal_attention(q, k, v, rel, rel, heads=2)
    v2 = v.clone()
    v2[:, 70] += 1.0
    moved = (temporal_attention(q, k, v2, rel, rel, heads=2) - base).abs().amax(dim=(0, 2))
    assert moved[:70].max() == 0 and moved[86:].max() == 0  # frames 70..85 see frame 70
    assert (moved[70:86] > 0).all()


@torch.no_grad()
def test_transformer_runs_100_and_1_frames(transformer):
    for frames in (100, 1):
        x = torch.randn(1, 64, frames, 2, 3)
        y = transformer(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


@torch.no_grad()
def test_half_precision_follows_input_dtype(transformer, cases):
    x = cases["module.temporal_transformer.case.t24.x"]
    reference = transformer(x)
    half = TemporalTransformer(64, heads=4, head_dim=16, dtype=torch.bfloat16)
    half.load_state_dict(transformer.state_dict())
    y = half(x.bfloat16())
    assert y.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa; the output's scale is ~10.
    assert (y.float() - reference).abs().max() < 0.25


def test_operations_namespace_and_attention_function_are_used():
    built = []

    def counting(base):
        class Counted(base):
            def __init__(self, *args, **kwargs):
                built.append(base.__name__)
                super().__init__(*args, **kwargs)
        return Counted

    class Ops:
        Linear = counting(nn.Linear)
        Conv3d = counting(nn.Conv3d)
        GroupNorm = counting(nn.GroupNorm)
        LayerNorm = counting(nn.LayerNorm)

    calls = []

    def spy_attention(*args, **kwargs):
        calls.append(args[0].shape)
        return temporal_attention(*args, **kwargs)

    tt = TemporalTransformer(32, heads=2, head_dim=16, operations=Ops, attention=spy_attention)
    TemporalConvBlock(32, operations=Ops)
    assert built.count("Conv3d") == 5 and built.count("LayerNorm") == 3
    assert built.count("GroupNorm") == 6 and built.count("Linear") == 2 + 2 * 4 + 2
    for p in tt.parameters():
        nn.init.normal_(p, std=0.02)
    with torch.no_grad():
        tt(torch.randn(1, 32, 5, 2, 2))
    assert calls == [torch.Size([4, 5, 32])] * 2  # attn1 and attn2, (b*h*w, frames, inner)


def test_temporal_convolutions_pad_outside_the_convolution():
    """The frame axis is padded (replicate) before each temporal Conv3d, which itself pads no frame:
    a backend that ignores padding_mode (comfy.ops' cuDNN workaround) cannot zero-pad the edges."""
    block = TemporalConvBlock(32)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 5
    for conv in convs:
        assert conv.padding_mode == "zeros"
        assert conv.padding[0] == 0
        assert conv.padding[1:] == (conv.kernel_size[1] // 2, conv.kernel_size[2] // 2)
