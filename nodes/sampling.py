"""MYVVideoKSampler (depth + core KSampler in one node) and MYVSelectFrames."""

import comfy.samplers
import nodes as comfy_nodes  # ComfyUI's nodes.py: common_ksampler is the core KSampler's body

from ..myv_core.depth import NORMALIZE_MODES
from ..myv_core.depth_estimation import channel_depth
from .depth import NATIVE_DEPTH_INPUT, NORMALIZE_TOOLTIP
from .patching import with_depth


def video_latent(latent_image, frames, repeat_single=False):
    """The latent's frames, checked against the depth video's `frames` (1 frame may be repeated)."""
    samples = latent_image["samples"]
    if samples.ndim != 4:
        raise ValueError(f"latent_image: expected a 4D image latent with frames as the batch, got shape "
                         f"{tuple(samples.shape)}; use Empty Latent Image with batch_size = frames.")
    if repeat_single and samples.shape[0] == 1:
        return samples.repeat(frames, 1, 1, 1)
    if samples.shape[0] != frames:
        fix = "or 1 frame to repeat" if repeat_single else "or select the same frames for both"
        raise ValueError(f"depth has {frames} frames but latent_image has {samples.shape[0]}: set the latent's "
                         f"batch_size to {frames}, {fix}.")
    return samples


def video_sampler_inputs(latent_tooltip):
    """The inputs both video samplers start with, in their public order (model ... scheduler)."""
    return {
        "model": ("MODEL",),
        "positive": ("CONDITIONING",),
        "negative": ("CONDITIONING", {"tooltip": "the official set-up uses the empty prompt"}),
        "depth": ("IMAGE", {"tooltip": "one depth map per frame, near = bright; its frame count is the video's length"}),
        "latent_image": ("LATENT", {"tooltip": latent_tooltip}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}),
        "steps": ("INT", {"default": 50, "min": 1, "max": 10000}),
        "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
        "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "ddpm", "tooltip": "ddpm + ddim_uniform reproduces the official DDIM with eta 1"}),
        "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "ddim_uniform"}),
    }


class MYVVideoKSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **video_sampler_inputs("frames as the batch, e.g. Empty Latent Image with batch_size = frames"),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "normalize": (list(NORMALIZE_MODES), {"default": "per_frame", "tooltip": NORMALIZE_TOOLTIP}),
        }, "optional": dict(NATIVE_DEPTH_INPUT)}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = "Depth-guided video sampling: MYV Apply Depth followed by the core KSampler."

    def sample(self, model, positive, negative, depth, latent_image, seed, steps, cfg, sampler_name,
               scheduler, denoise, normalize, native_depth=None):
        depth = channel_depth(depth, normalize, native_depth)
        video_latent(latent_image, depth.shape[0])
        return comfy_nodes.common_ksampler(with_depth(model, depth, normalize), seed, steps, cfg, sampler_name,
                                           scheduler, positive, negative, latent_image, denoise=denoise)


class MYVSelectFrames:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE",),
            "start": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "first frame (0-based)"}),
            "stride": ("INT", {"default": 2, "min": 1, "max": 1000, "tooltip": "take every n-th frame (official: 2)"}),
            "max_frames": ("INT", {"default": 16, "min": 0, "max": 100_000, "tooltip": "0 = all remaining frames"}),
        }}

    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("images", "frame_count")
    FUNCTION = "select"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = "Picks the frames to re-render from a loaded clip (official default: every 2nd frame, 16 frames)."

    def select(self, images, start, stride, max_frames):
        if start >= images.shape[0]:
            raise ValueError(f"start: the clip has {images.shape[0]} frames, so start must be below "
                             f"{images.shape[0]} (got {start}).")
        picked = images[start::stride]
        if max_frames > 0:
            picked = picked[:max_frames]
        return picked, picked.shape[0]
