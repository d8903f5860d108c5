"""Tiny Make-Your-Video checkpoints in the official layout, generated at test time."""

import torch
from safetensors.torch import load_file

UNET_PREFIX = "model.diffusion_model."


def tiny_unet(fixtures_dir):
    """The official tiny UNet (keys with the model.diffusion_model. prefix), float32."""
    return {k: v.float() for k, v in load_file(str(fixtures_dir / "myv_tiny_unet.safetensors")).items()}


def tiny_full_checkpoint(fixtures_dir, depth=True, seed=0):
    """A whole LatentDepthDiffusion-shaped state dict: UNet + small stand-ins for the other parts."""
    g = torch.Generator().manual_seed(seed)
    sd = tiny_unet(fixtures_dir)
    sd.update({
        "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3, generator=g),
        "first_stage_model.decoder.conv_out.bias": torch.randn(3, generator=g),
        "cond_stage_model.model.token_embedding.weight": torch.randn(10, 8, generator=g),
        "cond_stage_model.model.positional_embedding": torch.randn(77, 8, generator=g),
        "betas": torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64),
        "alphas_cumprod": torch.linspace(1.0, 0.1, 1000),
        "scale_factor": torch.tensor(0.18215),
        "logvar": torch.zeros(1000),
    })
    if depth:
        sd["depth_stage_model.model.pretrained.model.cls_token"] = torch.randn(1, 1, 8, generator=g)
    return sd
