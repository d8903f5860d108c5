"""The depth channel: the official pre-processing, restated independently."""

import pytest
import torch
import torch.nn.functional as F

from myv_core.depth import depth_from_image, depth_to_latent, normalize_depth


def official_channel(raw, h, w, per_clip=False):
    """Official: bicubic (align_corners False) to the latent size, then 2*(d-min)/(max-min+1e-7)-1."""
    d = F.interpolate(raw, size=(h, w), mode="bicubic", align_corners=False)
    if per_clip:
        lo, hi = d.min(), d.max()
    else:
        lo = d.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = d.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return 2 * (d - lo) / (hi - lo + 1e-7) - 1


@pytest.mark.parametrize("mode", ["per_frame", "per_clip"])
def test_matches_official_formula(mode):
    raw = torch.rand(5, 1, 48, 40) * 30 + 2  # relative inverse depth, arbitrary scale
    got = depth_to_latent(raw, 6, 5, mode)
    assert torch.allclose(got, official_channel(raw, 6, 5, mode == "per_clip"), atol=1e-6)
    assert got.amin() >= -1 - 1e-6 and got.amax() <= 1 + 1e-6


def test_image_depth_equals_raw_depth_after_normalisation():
    """A near = bright image in [0, 1] made from raw MiDaS output gives the same channel."""
    raw = torch.rand(3, 1, 32, 32) * 50
    image = ((raw - raw.amin()) / (raw.amax() - raw.amin())).permute(0, 2, 3, 1).repeat(1, 1, 1, 3)
    for mode in ("per_frame", "per_clip"):
        a = depth_to_latent(depth_from_image(image), 4, 4, mode)
        b = depth_to_latent(raw, 4, 4, mode)
        assert (a - b).abs().max() < 1e-4


def test_per_clip_keeps_relative_brightness():
    depth = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 3.0)])
    depth[1, 0, 0, 0] = 5.0
    per_clip = normalize_depth(depth, "per_clip")
    assert per_clip[0].max() == -1.0 and per_clip[1].max() == pytest.approx(1.0)
    per_frame = normalize_depth(depth, "per_frame")
    assert per_frame[0].abs().max() == 1.0  # a flat frame maps to -1, not NaN


def test_image_channels_and_bad_values():
    grey = torch.rand(2, 8, 8, 1)
    assert torch.equal(depth_from_image(grey), grey.permute(0, 3, 1, 2))
    rgba = torch.cat([grey.repeat(1, 1, 1, 3), torch.zeros(2, 8, 8, 1)], dim=-1)
    assert torch.allclose(depth_from_image(rgba), grey.permute(0, 3, 1, 2))
    bad = grey.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        depth_from_image(bad)
    with pytest.raises(ValueError, match="expected an IMAGE batch"):
        depth_from_image(torch.rand(8, 8, 3))
    with pytest.raises(ValueError, match="normalize must be one of"):
        normalize_depth(torch.rand(1, 1, 2, 2), "global")
