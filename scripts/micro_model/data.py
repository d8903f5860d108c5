"""The micro model's synthetic videos, in which the depth decides the layout.

A clip is one disc moving on a straight path that bounces off the frame's edges, over a static
background. Everything is drawn at the image size (64x64, what the depth estimator would see) and
taken to the 8x8 latent size the way the model sees it:

- depth: near = bright. The floor goes from 0.0 (top) to 0.3 (bottom); the disc is a sphere at
  0.6-1.0. The model gets it through myv_core.depth.depth_to_latent, as in sampling.
- latent x0 (the model's own latent space, i.e. a ComfyUI LATENT times 0.18215): the background is
  one random colour per clip, the same in every frame; the disc's colour is the prompt's colour plus
  a small random shade per clip. Pixels mix the two by the disc's coverage of the 8x8 cell.

Only the depth and the prompt are given to the model; the background colour and the shade are not,
so keeping them constant over a clip is the temporal layers' work, and windows sampled independently
disagree about them (seams). Pure torch, seeded: the same generator state gives the same clips.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGE = 64          # pixels; the latent is IMAGE // 8
LATENT = IMAGE // 8
FRAMES = 16         # training clip length, as the paper's
PROMPTS = 4         # prompt k draws the disc in COLOURS[k]; index PROMPTS is the empty prompt
TOKENS, CONTEXT_DIM = 2, 32
COLOURS = 1.2 * torch.tensor([[1.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 1.0, 0.0],
                              [0.0, -1.0, 0.0, 1.0], [0.0, 0.0, -1.0, -1.0]])
BACKGROUND_STD = 0.4
SHADE_STD = 0.1
RADIUS = (10.0, 16.0)   # pixels
SPEED = (1.0, 3.0)      # pixels per frame
FLOOR, NEAR = (0.0, 0.3), (0.6, 1.0)
PROMPT_SEED = 1234


def prompt_embeddings():
    """(PROMPTS + 1, TOKENS, CONTEXT_DIM): fixed random stand-ins for the text encoder's output; the
    last one, all zeros, is the empty prompt (negative / unconditional)."""
    g = torch.Generator().manual_seed(PROMPT_SEED)
    return torch.cat([torch.randn(PROMPTS, TOKENS, CONTEXT_DIM, generator=g), torch.zeros(1, TOKENS, CONTEXT_DIM)])


@dataclass
class Clips:
    latents: torch.Tensor   # (clips, frames, 4, LATENT, LATENT) x0 in the model's latent space
    depth: torch.Tensor     # (clips, frames, 1, IMAGE, IMAGE) near = bright, in [0, 1]
    coverage: torch.Tensor  # (clips, frames, 1, LATENT, LATENT) the disc's share of each latent cell
    centres: torch.Tensor   # (clips, frames, 2) the disc's centre (x, y) in latent cells
    prompts: torch.Tensor   # (clips,) int: which colour


def bounce(start, velocity, frames, low, high):
    """Positions along a straight path reflected at [low, high] (per coordinate)."""
    t = torch.arange(frames, dtype=torch.float32)[None, :, None]
    span = (high - low)[:, None, :]
    travelled = (start[:, None, :] - low[:, None, :]) + velocity[:, None, :] * t
    folded = torch.remainder(travelled, 2 * span)
    return low[:, None, :] + torch.where(folded > span, 2 * span - folded, folded)


def draw(centres, radius):
    """(coverage at IMAGE size, depth at IMAGE size) of discs at centres (clips, frames, 2) in pixels."""
    axis = torch.arange(IMAGE, dtype=torch.float32) + 0.5
    dx = axis[None, None, None, :] - centres[..., 0, None, None]
    dy = axis[None, None, :, None] - centres[..., 1, None, None]
    r = radius[:, None, None, None]
    distance = (dx ** 2 + dy ** 2).sqrt()
    inside = (r + 0.5 - distance).clamp(0, 1)  # one-pixel anti-aliased edge
    sphere = (1 - (distance / r).clamp(max=1) ** 2).sqrt()
    near = NEAR[0] + (NEAR[1] - NEAR[0]) * sphere
    floor = torch.linspace(FLOOR[0], FLOOR[1], IMAGE)[:, None].expand(IMAGE, IMAGE)
    depth = floor + inside * (near - floor)
    return inside.unsqueeze(2), depth.unsqueeze(2)


def make_clips(count, generator, frames=FRAMES, prompts=None):
    """`count` random clips of `frames` frames; prompts: (count,) ints to choose the colours."""
    g = generator
    radius = RADIUS[0] + (RADIUS[1] - RADIUS[0]) * torch.rand(count, generator=g)
    low = radius[:, None].expand(count, 2)
    high = IMAGE - low
    start = low + (high - low) * torch.rand(count, 2, generator=g)
    angle = 2 * torch.pi * torch.rand(count, generator=g)
    speed = SPEED[0] + (SPEED[1] - SPEED[0]) * torch.rand(count, generator=g)
    velocity = speed[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    if prompts is None:
        prompts = torch.randint(PROMPTS, (count,), generator=g)
    background = BACKGROUND_STD * torch.randn(count, 4, generator=g)
    colour = COLOURS[prompts] + SHADE_STD * torch.randn(count, 4, generator=g)

    centres = bounce(start, velocity, frames, low, high)
    inside, depth = draw(centres, radius)
    coverage = F.avg_pool2d(inside.flatten(0, 1), IMAGE // LATENT).unflatten(0, (count, frames))
    latents = (background[:, None, :, None, None] * (1 - coverage)
               + colour[:, None, :, None, None] * coverage)
    return Clips(latents, depth, coverage, centres / (IMAGE // LATENT), prompts)
