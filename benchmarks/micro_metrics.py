"""Quality metrics of the micro model's videos (scripts/micro_model/data.py), against the clip they were
sampled for. Latents are (frames, 4, 8, 8) in the model's latent space (a ComfyUI LATENT x 0.18215).

The data make each metric well defined: the background is one colour per clip and never moves, the
disc is the only object, its cells are known from the depth (coverage), and the prompt alone decides
its colour.
"""

import torch

from myv_core.chaining import change_ratio


def objectness(latents):
    """(frames, 8, 8): how far each cell's colour is from its frame's background colour, taken as the
    per-channel median over the frame's cells (the disc covers at most a fifth of them)."""
    background = latents.flatten(2).median(dim=2).values[..., None, None]
    return (latents - background).norm(dim=1)


def object_cells(coverage):
    """(frames, 64) bool: the cells the depth puts the disc in (more than half covered)."""
    return coverage.flatten(1) > 0.5


def depth_iou(latents, coverage):
    """Depth adherence: per frame, the IoU of the k most object-like cells of the video with the k cells
    the depth puts the disc in (k = their number), averaged over frames. Scale-free: only the ranking
    of objectness counts. 1 = the disc is exactly where the depth says; a video whose disc is
    elsewhere scores what a wrong depth scores (report both)."""
    truth = object_cells(coverage)
    k = truth.sum(dim=1)
    order = objectness(latents).flatten(1).argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    predicted = ranks < k[:, None]
    inter = (predicted & truth).sum(dim=1).float()
    union = (predicted | truth).sum(dim=1).float()
    return float((inter / union.clamp(min=1)).mean())


def prompt_choice(latents, coverage, colours):
    """Prompt adherence: the index of the prompt colour nearest to the mean colour of the cells the
    depth puts the disc in, over the whole clip (compare with the prompt used; chance = 1 / prompts)."""
    cells = object_cells(coverage)
    colour = latents.permute(0, 2, 3, 1).flatten(1, 2)[cells].mean(dim=0)
    return int((colours - colour).norm(dim=1).argmin())


def static_flicker(latents, coverage):
    """Temporal coherence where nothing moves: mean |frame t+1 - frame t| over the cells the disc does
    not touch in either frame (the background is static in the data, so any change is flicker)."""
    free = (coverage[1:] == 0) & (coverage[:-1] == 0)
    change = (latents[1:] - latents[:-1]).abs().mean(dim=1, keepdim=True)
    return float(change[free].mean())


def drift(latents, coverage):
    """Long-range coherence where nothing moves: mean |last frame - first frame| over the cells the disc
    touches in neither (flicker's measure across the whole clip: 0 = the background keeps its colour)."""
    free = (coverage[-1] == 0) & (coverage[0] == 0)
    change = (latents[-1] - latents[0]).abs().mean(dim=0, keepdim=True)
    return float(change[free].mean())


def track_error(latents, centres):
    """Temporal coherence of the motion: mean distance, in latent cells, between the objectness-weighted
    centre of the video's disc (cells above half the frame's top objectness) and the disc centre the
    depth moves along."""
    weight = objectness(latents)
    weight = weight * (weight > 0.5 * weight.flatten(1).amax(dim=1)[:, None, None])
    axis = torch.arange(weight.shape[-1], dtype=torch.float32) + 0.5
    total = weight.flatten(1).sum(dim=1).clamp(min=1e-8)
    x = (weight.sum(dim=1) * axis).sum(dim=1) / total
    y = (weight.sum(dim=2) * axis).sum(dim=1) / total
    return float(torch.stack([x, y], dim=1).sub(centres).norm(dim=1).mean())


def seams(latents, window_starts):
    """Seam ratio at window boundaries: the mean |frame change| into every frame in `window_starts`
    (the first frame a window generated) over the same for the other frames
    (myv_core.chaining.change_ratio, what seam_ratio measures); 1 = no seam."""
    return change_ratio(latents, {s - 1 for s in window_starts})
