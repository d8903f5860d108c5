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


# ---------------------------------------------------------------- the channel from the estimator's native output

class StandInNetwork(torch.nn.Module):
    """A fixed pure-torch stand-in for a DPT network: (B, 3, 384, 384) -> .predicted_depth (B, 384, 384) >= 0."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 1, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) / 5)
            self.conv.bias.fill_(0.5)

    def forward(self, pixel_values):
        class Output:
            predicted_depth = F.softplus(self.conv(pixel_values))[:, 0] * 7.0
        return Output()


def photo_like_clip(frames=6, height=64, width=80, seed=0):
    """IMAGE (frames, H, W, 3) in [0, 1]: smooth structure, texture and a sharp square that moves."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=g)
    base = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    clip = []
    for t in range(frames):
        frame = 0.8 * base + 0.2 * torch.rand(3, height, width, generator=g)
        frame[:, 10:30, 5 + 4 * t:25 + 4 * t] = 1.0
        clip.append(frame)
    return torch.stack(clip).clamp(0, 1).permute(0, 2, 3, 1)


PHOTOGRAPHS = ("rocket", "coffee", "astronaut")  # bundled with scikit-image: public domain / CC0


def photograph_clip(name="rocket", frames=16, size=256):
    """IMAGE (frames, size, size, 3) in [0, 1]: a real photograph from scikit-image's bundled data,
    filmed by a square window that pans across it (rocket, coffee: wider than tall) or zooms in on it
    (astronaut: square), each crop resized to size x size (antialiased bilinear). Needs scikit-image."""
    import skimage.data
    photo = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255.0
    height, width = photo.shape[-2:]
    clip = []
    for t in range(frames):
        if width > height:
            side, top, left = height, 0, round(t * (width - height) / max(1, frames - 1))
        else:
            side = round(height * (1.0 - 0.4 * t / max(1, frames - 1)))
            top, left = (height - side) // 2, (width - side) // 2
        crop = photo[None, :, top:top + side, left:left + side]
        clip.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(clip).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def official_get_batch_depth(network, images, target_size, temporal_norm=False):
    """LatentDepthDiffusion.get_batch_depth restated: frames in [-1, 1] (b c t h w), bicubic to 384x384,
    MiDaS (its wrapper's resize to 384x384 is the identity), ONE bicubic resize to target_size, min-max
    to [-1, 1] with 1e-7 per frame (or over the clip with temporal_norm). Returns (t, 1, h, w)."""
    videos = (images.permute(3, 0, 1, 2)[None] - 0.5) / 0.5  # (1, c, t, h, w)
    b, c, t, h, w = videos.shape
    x = videos.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    x_midas = F.interpolate(x, size=(384, 384), mode="bicubic")
    with torch.no_grad():
        depth = network(pixel_values=x_midas).predicted_depth.unsqueeze(1)
    depth = F.interpolate(depth, size=(384, 384), mode="bicubic", align_corners=False)
    depth = F.interpolate(depth, size=target_size, mode="bicubic", align_corners=False)
    dims = (0, 1, 2, 3) if temporal_norm else (1, 2, 3)
    low, high = torch.amin(depth, dim=dims, keepdim=True), torch.amax(depth, dim=dims, keepdim=True)
    return 2.0 * (depth - low) / (high - low + 1e-7) - 1.0


def estimated(images, normalize="per_frame", smoothing=0.0, batch_size=4):
    """What MYV Estimate Depth gives: (depth IMAGE, NativeDepth), with the stand-in network."""
    from myv_core.depth_estimation import DepthEstimator, NativeDepth, depth_images, estimate_depth_and_native
    estimator = DepthEstimator(StandInNetwork(), "midas")
    sized, native = estimate_depth_and_native(estimator, images, batch_size)
    image = depth_images(sized, normalize, smoothing)
    return image, NativeDepth(native, "midas", normalize, smoothing, image=image)


@pytest.mark.parametrize("mode", ["per_frame", "per_clip"])
def test_native_depth_channel_is_the_official_one(mode):
    """MYV Estimate Depth (defaults, or per_clip) -> native_depth -> the channel: the official
    get_batch_depth maths within 1e-6 (float32); the depth IMAGE alone (resized twice) is not."""
    from myv_core.depth_estimation import channel_depth
    images = photo_like_clip()
    official = official_get_batch_depth(StandInNetwork(), images, (8, 10), temporal_norm=mode == "per_clip")
    image, native = estimated(images, normalize=mode)
    assert native.raw.shape == (6, 1, 384, 384) and image.shape == (6, 64, 80, 3)
    channel = depth_to_latent(channel_depth(image, mode, native), 8, 10, mode)
    assert (channel - official).abs().max() <= 1e-6
    double_resize = depth_to_latent(channel_depth(image, mode), 8, 10, mode)
    assert (double_resize - official).abs().max() > 1e-2


def test_native_maps_follow_the_estimators_settings():
    """per_clip / smoothing in MYV Estimate Depth apply to the native maps as to its IMAGE (at the
    estimator's size), so the channel keeps their meaning; the IMAGE stays at the frame size."""
    from myv_core.depth_estimation import channel_depth, depth_images, normalize_depth as to_unit, smooth_temporally
    images = photo_like_clip()
    image, native = estimated(images, "per_frame", 0.3)
    maps = smooth_temporally(to_unit(native.raw, "per_frame"), 0.3)
    assert torch.equal(native.maps(), maps)
    assert torch.equal(image, depth_images(F.interpolate(native.raw, size=(64, 80), mode="bicubic",
                                                         align_corners=False), "per_frame", 0.3))
    channel = depth_to_latent(channel_depth(image, "per_frame", native), 8, 10, "per_frame")
    assert torch.allclose(channel, official_channel(maps, 8, 10), atol=1e-6)
    assert (channel - depth_to_latent(native.raw, 8, 10, "per_frame")).abs().max() > 1e-2  # smoothing shows
    # per_frame maps under a per_clip channel: the per-frame stretch is not cancelled, so it is kept
    image, native = estimated(images, "per_frame", 0.0)
    assert torch.equal(channel_depth(image, "per_clip", native), to_unit(native.raw, "per_frame"))
    assert channel_depth(image, "per_frame", native) is native.raw


def test_native_depth_must_come_with_its_own_image():
    from myv_core.depth_estimation import channel_depth
    images = photo_like_clip()
    image, native = estimated(images)
    assert torch.equal(channel_depth(image.clone(), "per_frame", native), native.raw)  # a copy is the same IMAGE
    with pytest.raises(ValueError, match="native_depth has 6 frames but depth has 4: connect the depth and "
                                         "native_depth outputs of the same MYV Estimate Depth"):
        channel_depth(image[:4], "per_frame", native)
    with pytest.raises(ValueError, match="depth is not the depth IMAGE of the MYV Estimate Depth .* disconnect "
                                         "native_depth"):
        channel_depth(1.0 - image, "per_frame", native)
    with pytest.raises(ValueError, match="native_depth: expected MYV Estimate Depth's native_depth output"):
        channel_depth(image, "per_frame", image)
