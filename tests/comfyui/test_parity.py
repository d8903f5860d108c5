"""Whole-UNet parity with the official model, through MYVCheckpointLoader and ComfyUI's sampler."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

import comfy.sample
import comfy.samplers

TOL = 1e-4
CASES = ["t16", "t24", "t1", "t40_rect"]
LATENT_SCALE = 0.18215  # SD latent format: sampling returns denoised / 0.18215


@pytest.fixture(scope="module")
def cases(fixtures_dir):
    return load_file(str(fixtures_dir / "myv_tiny_cases.safetensors"))


@pytest.fixture()
def tiny_model(pack, model_dir, fixtures_dir):
    shutil.copy(fixtures_dir / "myv_tiny_unet.safetensors", model_dir / "myv_tiny.safetensors")
    model, clip, vae = pack.nodes.loaders.MYVCheckpointLoader().load("myv_tiny.safetensors", "fp32")
    assert clip is None and vae is None  # the tiny checkpoint is a UNet only
    return model


def eps_via_sampler(model, x, t, context, cfg=1.0, negative_context=None):
    """The model's eps for one official-layout video x (5, frames, h, w) at integer timestep t.

    One euler step from sigma_t to 0 returns the denoised latent; eps = (x_t - denoised) / sigma_t.
    The depth channel goes in through ComfyUI's generic `noise_concat` cond (already normalised data).
    """
    frames = x.permute(1, 0, 2, 3)  # (frames, 5, h, w): frames are the batch
    latent, depth = frames[:, :4], frames[:, 4:]
    sigma = float(model.get_model_object("model_sampling").sigmas[t])
    x_t = latent * (sigma ** 2 + 1) ** 0.5  # the UNet sees x_t / sqrt(sigma^2 + 1) = latent
    positive = [[context[None], {"noise_concat": depth}]]
    negative = [[(context if negative_context is None else negative_context)[None], {"noise_concat": depth}]]
    out = comfy.sample.sample_custom(model, x_t / sigma, cfg, comfy.samplers.sampler_object("euler"),
                                     torch.tensor([sigma, 0.0]), positive, negative, torch.zeros_like(latent),
                                     disable_pbar=True, seed=0)
    eps = (x_t - out * LATENT_SCALE) / sigma
    return eps.permute(1, 0, 2, 3)  # (4, frames, h, w)


@pytest.mark.parametrize("case", CASES)
def test_whole_unet_matches_official(tiny_model, cases, case):
    x, eps = cases[f"case.{case}.x"], cases[f"case.{case}.eps"]
    timesteps, context = cases[f"case.{case}.timesteps"], cases[f"case.{case}.context"]
    for b in range(x.shape[0]):  # frames travel as the batch: one video per sampling call
        got = eps_via_sampler(tiny_model, x[b], int(timesteps[b]), context[b])
        assert (got - eps[b]).abs().max().item() <= TOL, (case, b)


def test_cond_and_uncond_batched_as_two_videos(tiny_model, cases):
    """With cfg != 1 the UNet sees both chunks in one call (2 videos); each must stay its own video."""
    x, t, context = cases["case.t16.x"][0], int(cases["case.t16.timesteps"][0]), cases["case.t16.context"]
    cond = eps_via_sampler(tiny_model, x, t, context[0])
    uncond = eps_via_sampler(tiny_model, x, t, context[1])
    guided = eps_via_sampler(tiny_model, x, t, context[0], cfg=3.0, negative_context=context[1])
    assert (guided - (uncond + 3.0 * (cond - uncond))).abs().max().item() <= 1e-3
