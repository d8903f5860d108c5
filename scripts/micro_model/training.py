"""Training the micro model: eps prediction on the official schedule, min-SNR weighted, resumable.

Each step draws a fresh batch of synthetic clips from a generator seeded with (seed, step), so a run
resumed from its state file draws exactly the batches an uninterrupted run would. The state file
(model, EMA and optimizer) is written every `save_every` steps and at the end; the exported
checkpoint holds the EMA weights in the official key layout.
"""

import math
import time

import torch
import torch.nn.functional as F

from . import data

BATCH = 8            # clips per step, FRAMES frames each
LEARNING_RATE = 1e-3
WARMUP = 200
EMA_DECAY = 0.999
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023: weight min(SNR, gamma) / SNR on the eps loss
EMPTY_PROMPT_P = 0.1  # prompt dropout, so that cfg has an unconditional model to push against


def learning_rate(step, total):
    """Linear warm-up, then cosine decay to a tenth."""
    if step < WARMUP:
        return LEARNING_RATE * (step + 1) / WARMUP
    progress = min(1.0, (step - WARMUP) / max(1, total - WARMUP))
    return LEARNING_RATE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch(step, seed, depth_to_latent):
    """The training batch of `step`: (x0, depth channel, context) with frames as the batch axis."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    clips = data.make_clips(BATCH, g)
    prompts = torch.where(torch.rand(BATCH, generator=g) < EMPTY_PROMPT_P,
                          torch.full_like(clips.prompts, data.PROMPTS), clips.prompts)
    context = data.prompt_embeddings()[prompts].repeat_interleave(data.FRAMES, dim=0)
    depth = depth_to_latent(clips.depth.flatten(0, 1), data.LATENT, data.LATENT, "per_frame")
    return clips.latents.flatten(0, 1), depth, context, g


def loss_of(net, x0, depth, context, g):
    """min-SNR weighted eps MSE at one random timestep per clip (shared by its frames)."""
    clips = x0.shape[0] // data.FRAMES
    t = torch.randint(len(net.alphas_cumprod), (clips,), generator=g)
    abar = net.alphas_cumprod[t].repeat_interleave(data.FRAMES)[:, None, None, None]
    noise = torch.randn(x0.shape, generator=g)
    x = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    eps = net(x, depth, t.repeat_interleave(data.FRAMES).float(), context, data.FRAMES)
    snr = abar / (1 - abar)
    weight = snr.clamp(max=MIN_SNR_GAMMA) / snr
    return (weight * (eps - noise) ** 2).mean(), F.mse_loss(eps, noise)


class Trainer:
    def __init__(self, net, seed, total_steps, depth_to_latent):
        self.net, self.seed, self.total = net, seed, total_steps
        self.depth_to_latent = depth_to_latent
        self.params = net.parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=LEARNING_RATE, weight_decay=0.0)
        self.ema = [p.detach().clone() for p in self.params]
        self.step = 0
        self.log = []  # (step, weighted loss, plain eps mse, seconds)

    def state(self):
        return {"step": self.step, "seed": self.seed, "total": self.total, "log": self.log,
                "params": [p.detach().clone() for p in self.params], "ema": self.ema,
                "optimizer": self.optimizer.state_dict()}

    def load(self, state):
        if state["seed"] != self.seed:
            raise ValueError(f"the state file was trained with --seed {state['seed']}, not {self.seed}")
        with torch.no_grad():
            for p, saved in zip(self.params, state["params"]):
                p.copy_(saved)
        self.ema = state["ema"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.log = state["step"], state["log"]

    def train_step(self):
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.total)
        start = time.perf_counter()
        x0, depth, context, g = batch(self.step, self.seed, self.depth_to_latent)
        weighted, plain = loss_of(self.net, x0, depth, context, g)
        self.optimizer.zero_grad(set_to_none=True)
        weighted.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1 - EMA_DECAY)
        self.step += 1
        self.log.append((self.step, weighted.item(), plain.item(), time.perf_counter() - start))

    def ema_state_dict(self):
        """The exported weights: the EMA, in the official layout."""
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
            sd = self.net.state_dict()
            for p, saved in zip(self.params, live):
                p.copy_(saved)
        return sd
