"""Tiny Make-Your-Video checkpoints in the official layout, generated at test time.

The parity tests' UNet is the official tiny fixture (tests/fixtures/myv_tiny_unet.safetensors). What
the tests share with the runner's self-check (the random depth estimator folder, the generated clip,
the TAESD VAE, a whole random checkpoint built from the official key layout) comes from the pack's
scripts/myv_runner/selfcheck.py, re-exported here.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from myv_runner.selfcheck import (taesd_state_dict, tiny_checkpoint, tiny_depth_estimator,  # noqa: E402,F401
                                  unet_shapes, write_test_clip)

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


def tiny_server_checkpoint(fixtures_dir, vae=None, context_dim=1024, seed=0, std=0.02):
    """A whole tiny Make-Your-Video checkpoint that a real ComfyUI server can run end to end.

    The tiny UNet with the cross-attention of every SPATIAL transformer (sub-module 1 of a block,
    e.g. input_blocks.1.1, middle_block.1, output_blocks.3.1) widened to `context_dim`, so a fixed
    [1, 2, 1024] conditioning such as core LotusConditioning fits: to_k / to_v [C, 64] become random
    [C, context_dim]. Temporal transformers (sub-module 2, with relative-position tables) keep their
    [C, C] self-attention-only to_k / to_v. `vae` (a state dict without prefix, e.g. TAESD weights)
    goes under "first_stage_model.". Float32, keys in the official layout.
    """
    g = torch.Generator().manual_seed(seed)
    sd = tiny_unet(fixtures_dir)
    widened = 0
    for key in list(sd):
        if not key.endswith((".attn2.to_k.weight", ".attn2.to_v.weight")):
            continue
        block_path = key[len(UNET_PREFIX):].split(".")
        sub = block_path[1] if block_path[0] == "middle_block" else block_path[2]
        if sub != "1":
            continue  # a temporal transformer (or anything else that is not the spatial one)
        channels = sd[key].shape[0]
        sd[key] = torch.randn(channels, context_dim, generator=g) * std
        widened += 1
    if not widened:
        raise ValueError("tiny UNet has no spatial cross-attention to widen")
    if vae:
        sd.update({"first_stage_model." + k: v.float().contiguous() for k, v in vae.items()})
    return sd
