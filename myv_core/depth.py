"""Depth maps to the 5th UNet input channel, exactly as Make-Your-Video was trained.

Official pipeline: relative inverse depth (near = large) per frame, bicubic resize straight to the
latent size (align_corners False), then min-max to [-1, 1], per frame by default. Min-max makes the
result independent of the depth's scale and offset, so a near = bright depth image in [0, 1] gives
the same channel as the raw MiDaS output it was made from.
"""

import torch
import torch.nn.functional as F

NORMALIZE_MODES = ("per_frame", "per_clip")
EPS = 1e-7


def depth_from_image(images):
    """(frames, H, W, C) IMAGE batch with near = bright -> (frames, 1, H, W) float32 depth.

    Grey depth images carry the same value in every channel; the mean also accepts 1- and
    4-channel inputs (an alpha channel is dropped).
    """
    if images.ndim != 4:
        raise ValueError(f"depth: expected an IMAGE batch (frames, height, width, channels), got shape "
                         f"{tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("depth: the depth video has no frames; check the frame selection that feeds it.")
    channels = images[..., :3] if images.shape[-1] == 4 else images
    depth = channels.float().mean(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    if not torch.isfinite(depth).all():
        raise ValueError("depth: the depth images contain NaN or infinite values; re-create them "
                         "(e.g. with MYV Estimate Depth) or clean them before applying.")
    return depth


def normalize_depth(depth, mode="per_frame"):
    """Min-max to [-1, 1]: 2 * (d - min) / (max - min + 1e-7) - 1, per frame or over the whole clip."""
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")
    dims = (1, 2, 3) if mode == "per_frame" else (0, 1, 2, 3)
    low = depth.amin(dim=dims, keepdim=True)
    high = depth.amax(dim=dims, keepdim=True)
    return 2.0 * (depth - low) / (high - low + EPS) - 1.0


def depth_to_latent(depth, height, width, mode="per_frame"):
    """(frames, 1, H, W) depth -> (frames, 1, height, width) conditioning channel in [-1, 1]."""
    resized = F.interpolate(depth, size=(height, width), mode="bicubic", align_corners=False)
    return normalize_depth(resized, mode)
