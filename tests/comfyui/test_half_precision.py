"""Half precision end to end: MYVCheckpointLoader weight_dtype fp16 / bf16 against fp32.

On the CPU (this tier runs ComfyUI with --cpu) ComfyUI stores the weights in fp16/bf16 but computes
in fp32: comfy.model_management.unet_manual_cast(fp16 or bf16, cpu) returns torch.float32, so the
UNet and the temporal layers run comfy.ops.manual_cast layers that cast each weight to fp32 at
use. What this tier checks is therefore the weight dtypes through the node path (spatial UNet,
temporal layers, relative-position tables) and the effect of rounding the weights; the half
compute path of the attention itself is covered in tests/test_attention.py.
"""

import shutil

import pytest
import torch
from safetensors.torch import load_file

import comfy.model_management
import comfy.sample
import comfy.samplers

LATENT_SCALE = 0.18215
# Max |eps(half weights) - eps(fp32 weights)| over all elements, relative to the std of the fp32
# eps. The tiny fixture's weights are stored in fp16, so fp16 loses nothing: measured 0 (exactly
# equal on the CPU, where both compute in fp32). bf16 rounds them to 8 bits: measured 1.2e-2.
TOL = {"fp16": 0.01, "bf16": 0.05}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.fixture(scope="module")
def cases(fixtures_dir):
    return load_file(str(fixtures_dir / "myv_tiny_cases.safetensors"))


def load(pack, model_dir, fixtures_dir, weight_dtype):
    shutil.copy(fixtures_dir / "myv_tiny_unet.safetensors", model_dir / "myv_tiny.safetensors")
    model, _, _ = pack.nodes.loaders.MYVCheckpointLoader().load("myv_tiny.safetensors", weight_dtype)
    return model


def eps_of(model, x, t, context):
    """eps of one official-layout video x (5, frames, h, w) at timestep t: one euler step to 0."""
    frames = x.permute(1, 0, 2, 3)
    latent, depth = frames[:, :4], frames[:, 4:]
    sigma = float(model.get_model_object("model_sampling").sigmas[t])
    x_t = latent * (sigma ** 2 + 1) ** 0.5
    cond = [[context[None], {"noise_concat": depth}]]
    out = comfy.sample.sample_custom(model, x_t / sigma, 1.0, comfy.samplers.sampler_object("euler"),
                                     torch.tensor([sigma, 0.0]), cond, cond, torch.zeros_like(latent),
                                     disable_pbar=True, seed=0)
    return ((x_t - out * LATENT_SCALE) / sigma).permute(1, 0, 2, 3)


def test_cpu_computes_half_weights_in_fp32():
    cpu = torch.device("cpu")
    supported = [torch.float16, torch.bfloat16, torch.float32]
    for dtype in DTYPES.values():
        assert comfy.model_management.unet_manual_cast(dtype, cpu, supported) == torch.float32


@pytest.mark.parametrize("weight_dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("case", ["t16", "t40_rect"])
def test_half_weights_match_fp32(pack, model_dir, fixtures_dir, cases, weight_dtype, case):
    from comfyui_makeyourvideo.nodes.patching import KEY
    reference = load(pack, model_dir, fixtures_dir, "fp32")
    half = load(pack, model_dir, fixtures_dir, weight_dtype)
    dtype = DTYPES[weight_dtype]
    assert half.model.get_dtype() == dtype
    temporal = half.get_additional_models_with_key(KEY)[0].model
    tables = [p for n, p in temporal.named_parameters() if n.endswith("embeddings_table")]
    assert tables and all(p.dtype == dtype for p in temporal.parameters())

    x, timesteps, context = cases[f"case.{case}.x"], cases[f"case.{case}.timesteps"], cases[f"case.{case}.context"]
    want = eps_of(reference, x[0], int(timesteps[0]), context[0])
    got = eps_of(half, x[0], int(timesteps[0]), context[0])
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    rel = ((got - want).abs().max() / want.std()).item()
    assert rel <= TOL[weight_dtype], f"{weight_dtype} {case}: max |d eps| / std(eps) = {rel:.2e}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_temporal_group_norm_statistics_are_fp32_for_half_inputs(pack, dtype):
    """The GroupNorm of a temporal layer normalises over (channels/32, frames, h, w) at once. With
    half inputs PyTorch accumulates its mean and variance in fp32: a clip whose values sit on a
    large offset (where a half-precision sum of squares would lose everything) normalises to the
    fp32 result rounded once."""
    from comfyui_makeyourvideo.myv_core.temporal import TemporalTransformer
    g = torch.Generator().manual_seed(0)
    x = 60.0 + torch.randn(1, 64, 24, 8, 8, generator=g)  # mean 60, std 1: E[x^2] ~ 3600
    norm = TemporalTransformer(64, heads=2, head_dim=16).norm
    want = norm(x)
    half = TemporalTransformer(64, heads=2, head_dim=16, dtype=dtype).norm
    half.load_state_dict(norm.state_dict())
    got = half(x.to(dtype))
    assert got.dtype == dtype
    # The input rounding alone (60 + n in half: ulp 2^-5 (fp16) / 2^-2 (bf16) at 60) dominates.
    ulp_in = 60.0 * torch.finfo(dtype).eps
    assert (got.float() - want).abs().max().item() <= 2 * ulp_in + 4 * torch.finfo(dtype).eps * want.abs().max().item()
