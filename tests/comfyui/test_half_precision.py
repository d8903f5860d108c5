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
from safetensors.torch import load_file, save_file

import comfy.model_management
import comfy.model_patcher
import comfy.ops
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


# --- What an NVIDIA GPU does in half precision, emulated on the CPU with ComfyUI's own switches ---

def save_fp32_release(fixtures_dir, model_dir):
    """The tiny model saved in float32, as the released model.ckpt is."""
    from tiny_models import tiny_unet
    save_file(tiny_unet(fixtures_dir), str(model_dir / "myv_tiny_fp32.safetensors"))
    return "myv_tiny_fp32.safetensors"


def parameter_dtypes(model):
    from comfyui_makeyourvideo.nodes.patching import KEY
    unet = {p.dtype for p in model.model.diffusion_model.parameters()}
    temporal = {p.dtype for p in model.get_additional_models_with_key(KEY)[0].model.parameters()}
    return unet, temporal


def eps_error(reference, model, cases):
    x, timesteps, context = cases["case.t16.x"], cases["case.t16.timesteps"], cases["case.t16.context"]
    want = eps_of(reference, x[0], int(timesteps[0]), context[0])
    got = eps_of(model, x[0], int(timesteps[0]), context[0])
    assert torch.isfinite(got).all()
    return ((got - want).abs().max() / want.std()).item()


# Max |eps(half) - eps(fp32)| / std(eps(fp32)), computing in half on the CPU, case t16: measured
# 3.6e-3 (fp16) and 3.1e-2 (bf16) on ComfyUI 0.33.0, torch 2.11.0 (2026-12-01).
HALF_COMPUTE_TOL = {"fp16": 0.02, "bf16": 0.1}


@pytest.mark.parametrize("weight_dtype", ["fp16", "bf16"])
def test_half_precision_step_under_dynamic_vram(pack, model_dir, fixtures_dir, cases, dynamic_vram, weight_dtype):
    name = save_fp32_release(fixtures_dir, model_dir)
    half = pack.nodes.loaders.MYVCheckpointLoader().load(name, weight_dtype)[0]
    dtype = DTYPES[weight_dtype]
    assert half.model.manual_cast_dtype is None
    assert parameter_dtypes(half) == ({dtype}, {dtype})

    reference = pack.nodes.loaders.MYVCheckpointLoader().load(name, "fp32")[0]
    rel = eps_error(reference, half, cases)
    assert rel <= HALF_COMPUTE_TOL[weight_dtype], f"{weight_dtype}: max |d eps| / std(eps) = {rel:.2e}"


def test_temporal_module_loader_on_a_bf16_model_under_dynamic_vram(pack, model_dir, fixtures_dir, cases, dynamic_vram):
    """The converter's fp32 temporal file on a bf16 5-channel MODEL: the temporal layers follow the MODEL."""
    from comfyui_makeyourvideo.myv_core.checkpoint import split_checkpoint
    from tiny_models import tiny_unet
    parts = split_checkpoint(tiny_unet(fixtures_dir))
    save_file(parts.temporal, str(model_dir / "myv_tiny_temporal.safetensors"))
    base = pack.nodes.loaders.build_spatial_model(parts, torch.bfloat16)[0]
    model = pack.nodes.loaders.MYVTemporalModuleLoader().load(base, "myv_tiny_temporal.safetensors")[0]
    assert parameter_dtypes(model) == ({torch.bfloat16}, {torch.bfloat16})
    x, timesteps, context = cases["case.t16.x"], cases["case.t16.timesteps"], cases["case.t16.context"]
    assert torch.isfinite(eps_of(model, x[0], int(timesteps[0]), context[0])).all()


def cudnn_convolution_on_cpu(calls):
    """torch.cudnn_convolution's arithmetic on the CPU: numeric zero padding, no padding_mode."""
    def convolution(input, weight, padding, stride, dilation, groups, benchmark, deterministic, allow_tf32):
        calls.append(tuple(padding))
        return torch.nn.functional.conv3d(input, weight, None, stride, padding, dilation, groups)
    return convolution


@pytest.mark.skipif(not hasattr(comfy.ops, "NVIDIA_MEMORY_CONV_BUG_WORKAROUND"),
                    reason="this ComfyUI has no NVIDIA conv3d workaround")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_temporal_conv_edges_with_the_nvidia_conv3d_workaround(pack, cases, monkeypatch, dtype):
    """comfy.ops' Conv3d calls torch.cudnn_convolution for half weights on cuDNN 9.10-9.14, passing only
    the numeric padding: the edge frames of every frame must still match the official block."""
    from comfyui_makeyourvideo.myv_core.temporal import TemporalConvBlock
    calls = []
    monkeypatch.setattr(comfy.ops, "NVIDIA_MEMORY_CONV_BUG_WORKAROUND", True)
    monkeypatch.setattr(torch, "cudnn_convolution", cudnn_convolution_on_cpu(calls), raising=False)
    prefix = "module.temporal_conv.weights."
    weights = {k[len(prefix):]: v for k, v in cases.items() if k.startswith(prefix)}
    block = TemporalConvBlock(64, dtype=dtype, operations=comfy.ops.disable_weight_init)
    block.load_state_dict({k: v.to(dtype) for k, v in weights.items()})
    x, y = cases["module.temporal_conv.case.t20.x"], cases["module.temporal_conv.case.t20.y"]
    with torch.no_grad():
        got = block(x.to(dtype)).float()
    assert len(calls) == 5  # every convolution of the block went through the workaround
    per_frame = (got - y).abs().amax(dim=(0, 1, 3, 4))
    interior = per_frame[1:-1].max()
    # Half-precision rounding alone, as in the interior frames. Measured: at most 0.92 (fp16) and 1.11
    # (bf16) eps * max|y| on every frame; with the padding inside the convolution the edges were 2.9,
    # about 600 (fp16) and 75 (bf16) eps * max|y|.
    assert max(per_frame[0], per_frame[-1]) <= 2 * interior, per_frame.tolist()
    assert per_frame.max() <= 4 * torch.finfo(dtype).eps * y.abs().max()


def test_unet_and_temporal_layers_are_dynamic_models(pack, model_dir, fixtures_dir, dynamic_vram, monkeypatch):
    """Both patchers come from CoreModelPatcher, the class core loaders use (ModelPatcherDynamic under
    dynamic VRAM): load_models_gpu frees memory the dynamic way only when every model of the set,
    additional models included, is dynamic."""
    built = []

    def core_model_patcher(model, *args, **kwargs):
        built.append(type(model).__name__)
        return comfy.model_patcher.ModelPatcher(model, *args, **kwargs)

    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", core_model_patcher)
    pack.nodes.loaders.MYVCheckpointLoader().load(save_fp32_release(fixtures_dir, model_dir), "bf16")
    assert built == ["BaseModel", "TemporalLayers"]


FP8 = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
# Max |eps(fp8 weights) - eps(fp32)| / std(eps(fp32)), case t16, computing in fp32 (CPU manual cast):
# measured 0.19 (e4m3fn, 3 mantissa bits) and 0.33 (e5m2, 2 bits) on ComfyUI 0.33.0 and 0.3.64
# (2026-12-01); 0.19 with bf16 compute under emulated dynamic VRAM. The tiny random model's weights
# are all of one scale, so this is the rounding of every weight, not a quality figure.
FP8_TOL = {"fp8_e4m3fn": 0.3, "fp8_e4m3fn_fast": 0.3, "fp8_e5m2": 0.5}


@pytest.mark.parametrize("weight_dtype", list(FP8))
def test_fp8_weights_compute_in_the_manual_cast_dtype(pack, model_dir, fixtures_dir, cases, weight_dtype):
    """fp8 storage for every UNet and temporal weight, computing in fp32 on the CPU (manual cast)."""
    name = save_fp32_release(fixtures_dir, model_dir)
    model = pack.nodes.loaders.MYVCheckpointLoader().load(name, weight_dtype)[0]
    assert parameter_dtypes(model) == ({FP8[weight_dtype]}, {FP8[weight_dtype]})
    assert model.model.manual_cast_dtype == torch.float32
    assert model.model.model_config.optimizations["fp8"] == (weight_dtype == "fp8_e4m3fn_fast")
    reference = pack.nodes.loaders.MYVCheckpointLoader().load(name, "fp32")[0]
    rel = eps_error(reference, model, cases)
    assert rel <= FP8_TOL[weight_dtype], f"{weight_dtype}: max |d eps| / std(eps) = {rel:.2e}"


def test_fp8_weights_under_dynamic_vram(pack, model_dir, fixtures_dir, cases, dynamic_vram, monkeypatch):
    """A GPU without fp8 compute: fp8 weights, bf16 compute (unet_manual_cast's answer there)."""
    monkeypatch.setattr(comfy.model_management, "unet_manual_cast",
                        lambda dtype, *args, **kwargs: None if dtype in DTYPES.values() else torch.bfloat16)
    name = save_fp32_release(fixtures_dir, model_dir)
    model = pack.nodes.loaders.MYVCheckpointLoader().load(name, "fp8_e4m3fn")[0]
    assert parameter_dtypes(model) == ({torch.float8_e4m3fn}, {torch.float8_e4m3fn})
    assert model.model.manual_cast_dtype == torch.bfloat16
    reference = pack.nodes.loaders.MYVCheckpointLoader().load(name, "fp32")[0]
    rel = eps_error(reference, model, cases)
    assert rel <= FP8_TOL["fp8_e4m3fn"] + HALF_COMPUTE_TOL["bf16"]


def test_non_dynamic_delegates_are_built_once(pack, model_dir, fixtures_dir, dynamic_patchers, monkeypatch):
    """Hooked conds make every sampler call get_non_dynamic_delegate() on 0.33: the first call reads
    the checkpoint again (UNet and temporal layers), later calls reuse those weights; the delegates run
    exactly as the model they stand for and leave it unchanged."""
    from comfyui_makeyourvideo.myv_core import checkpoint
    from comfyui_makeyourvideo.nodes.patching import KEY
    name = save_fp32_release(fixtures_dir, model_dir)
    dynamic_patchers()
    model = pack.nodes.loaders.MYVCheckpointLoader().load(name, "fp32")[0]
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    reads = []
    read = checkpoint.file_state_dict
    monkeypatch.setattr(checkpoint, "file_state_dict", lambda path: reads.append(path) or read(path))
    first, second = model.get_non_dynamic_delegate(), model.get_non_dynamic_delegate()
    assert len(reads) == 2  # the spatial factory and the temporal one, once each
    for delegate in (first, second):
        assert not delegate.is_dynamic() and not delegate.get_additional_models_with_key(KEY)[0].is_dynamic()
    assert first.model is second.model and first.model is not model.model
    temporal = [m.get_additional_models_with_key(KEY)[0].model for m in (model, first, second)]
    assert temporal[1] is temporal[2] and temporal[1] is not temporal[0]
    assert all(torch.equal(a, b) for a, b in zip(temporal[0].state_dict().values(), temporal[1].state_dict().values()))
    assert all(torch.equal(before[k], v) for k, v in first.model.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())
