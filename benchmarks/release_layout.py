"""A file in the exact layout of the released model.ckpt, from shapes alone, and its MiDaS file.

The official LatentDepthDiffusion of configs/inference_256_v1.0.yaml saves 2528 tensors in a
Lightning dict ({"state_dict": ...}), 8.67 GB in float32. The published model.ckpt is 8.18 GB: the
same without the depth stage (the official loader falls back to dropping depth_stage_model.* and
reads MiDaS from dpt_hybrid-midas-501f0c75.pt, published beside it), so that is the default here:

- UNet, 1606 (model.diffusion_model.*): tests/fixtures/myv_key_manifest_full.json;
- VAE, 248 (first_stage_model.*): ldm's AutoencoderKL with the SD config (ch 128, ch_mult 1 2 4 4,
  2 res blocks, z 4, attention only in the middle), as `vae_shapes` spells it out;
- text encoder, 294 (cond_stage_model.*): FrozenOpenCLIPEmbedder, open_clip's ViT-H-14 text tower
  (width 1024, 24 blocks, 16 heads, context 77, vocabulary 49408) with the vision tower deleted;
- depth stage, 368 (depth_stage_model.model.*, only with depth_stage=True): MiDaS DPT-Hybrid,
  tests/fixtures/midas_dpt_hybrid_keys.json (the keys of dpt_hybrid-midas-501f0c75.pt);
- schedule buffers, 12: the DDPM buffers of the linear schedule (1000 steps, 0.00085 -> 0.012).

Weights are random (scripts/myv_runner/selfcheck.random_weights: N(0, 1/fan_in), norms one, biases
zero), so the files measure memory and time, never quality.
"""

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from myv_runner.selfcheck import random_weights  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
DEPTH_PREFIX = "depth_stage_model.model."
COUNTS = {"unet": 1606, "vae": 248, "text_encoder": 294, "depth": 368, "schedule": 12}


def unet_shapes():
    manifest = json.loads((FIXTURES / "myv_key_manifest_full.json").read_text())
    return {manifest["prefix"] + k: tuple(s) for k, s in manifest["keys"].items()}


def midas_shapes():
    return {k: tuple(s) for k, s in json.loads((FIXTURES / "midas_dpt_hybrid_keys.json").read_text())["keys"]}


def _conv(shapes, prefix, n_out, n_in, k):
    shapes[prefix + ".weight"] = (n_out, n_in, k, k)
    shapes[prefix + ".bias"] = (n_out,)


def _norm(shapes, prefix, n):
    shapes[prefix + ".weight"] = shapes[prefix + ".bias"] = (n,)


def _resnet(shapes, prefix, n_in, n_out):
    _norm(shapes, prefix + ".norm1", n_in)
    _conv(shapes, prefix + ".conv1", n_out, n_in, 3)
    _norm(shapes, prefix + ".norm2", n_out)
    _conv(shapes, prefix + ".conv2", n_out, n_out, 3)
    if n_in != n_out:
        _conv(shapes, prefix + ".nin_shortcut", n_out, n_in, 1)


def _middle(shapes, prefix, n):
    _resnet(shapes, prefix + ".block_1", n, n)
    _norm(shapes, prefix + ".attn_1.norm", n)
    for name in ("q", "k", "v", "proj_out"):
        _conv(shapes, f"{prefix}.attn_1.{name}", n, n, 1)
    _resnet(shapes, prefix + ".block_2", n, n)


def vae_shapes(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z=4, prefix="first_stage_model."):
    """ldm.modules.diffusionmodules.model Encoder/Decoder and AutoencoderKL's quant convs."""
    s = {}
    _conv(s, "encoder.conv_in", ch, 3, 3)
    n_in = ch
    for level, mult in enumerate(ch_mult):
        for block in range(num_res_blocks):
            _resnet(s, f"encoder.down.{level}.block.{block}", n_in, ch * mult)
            n_in = ch * mult
        if level != len(ch_mult) - 1:
            _conv(s, f"encoder.down.{level}.downsample.conv", n_in, n_in, 3)
    _middle(s, "encoder.mid", n_in)
    _norm(s, "encoder.norm_out", n_in)
    _conv(s, "encoder.conv_out", 2 * z, n_in, 3)
    top = ch * ch_mult[-1]
    _conv(s, "decoder.conv_in", top, z, 3)
    _middle(s, "decoder.mid", top)
    n_in = top
    for level in reversed(range(len(ch_mult))):
        for block in range(num_res_blocks + 1):
            _resnet(s, f"decoder.up.{level}.block.{block}", n_in, ch * ch_mult[level])
            n_in = ch * ch_mult[level]
        if level != 0:
            _conv(s, f"decoder.up.{level}.upsample.conv", n_in, n_in, 3)
    _norm(s, "decoder.norm_out", n_in)
    _conv(s, "decoder.conv_out", 3, n_in, 3)
    _conv(s, "quant_conv", 2 * z, 2 * z, 1)
    _conv(s, "post_quant_conv", z, z, 1)
    return {prefix + k: v for k, v in s.items()}


def open_clip_text_shapes(width=1024, layers=24, context=77, vocab=49408, prefix="cond_stage_model.model."):
    """open_clip's text tower as FrozenOpenCLIPEmbedder keeps it (the visual tower deleted)."""
    s = {"positional_embedding": (context, width), "text_projection": (width, width), "logit_scale": (),
         "token_embedding.weight": (vocab, width), "ln_final.weight": (width,), "ln_final.bias": (width,)}
    for i in range(layers):
        block = f"transformer.resblocks.{i}."
        for norm in ("ln_1", "ln_2"):
            s[block + norm + ".weight"] = s[block + norm + ".bias"] = (width,)
        s[block + "attn.in_proj_weight"], s[block + "attn.in_proj_bias"] = (3 * width, width), (3 * width,)
        s[block + "attn.out_proj.weight"], s[block + "attn.out_proj.bias"] = (width, width), (width,)
        s[block + "mlp.c_fc.weight"], s[block + "mlp.c_fc.bias"] = (4 * width, width), (4 * width,)
        s[block + "mlp.c_proj.weight"], s[block + "mlp.c_proj.bias"] = (width, 4 * width), (width,)
    return {prefix + k: v for k, v in s.items()}


def schedule_buffers(steps=1000, linear_start=0.00085, linear_end=0.012):
    """The 12 buffers ldm's DDPM.register_schedule saves, for the "linear" schedule, in float32."""
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, steps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    buffers = {
        "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": torch.cat([variance[1:2], variance[1:]]).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
    }
    return {k: v.float() for k, v in buffers.items()}


def release_shapes():
    """{part: {key: shape}} of the release's whole state dict (schedule buffers apart)."""
    parts = {"unet": unet_shapes(), "vae": vae_shapes(), "text_encoder": open_clip_text_shapes(),
             "depth": {DEPTH_PREFIX + k: v for k, v in midas_shapes().items()}}
    counts = {part: len(shapes) for part, shapes in parts.items()}
    expected = {part: n for part, n in COUNTS.items() if part in counts}
    if counts != expected:
        raise RuntimeError(f"release layout: tensor counts {counts}, the release has {expected}")
    return parts


def write_release(checkpoint, midas, depth_stage=False, seed=0):
    """model.ckpt (Lightning dict, float32; with the depth stage inside if depth_stage) and
    dpt_hybrid-midas-501f0c75.pt (the depth network alone): (tensors, bytes) of model.ckpt."""
    sd = {}
    for i, shapes in enumerate(release_shapes().values()):
        sd.update(random_weights(shapes, seed + i))
    sd.update(schedule_buffers())
    torch.save({k[len(DEPTH_PREFIX):]: v for k, v in sd.items() if k.startswith(DEPTH_PREFIX)}, midas)
    if not depth_stage:
        sd = {k: v for k, v in sd.items() if not k.startswith(DEPTH_PREFIX)}
    torch.save({"state_dict": sd, "epoch": 0, "global_step": 0}, checkpoint)
    return len(sd), sum(v.numel() * v.element_size() for v in sd.values())
