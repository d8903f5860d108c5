"""MYVLongVideoSampler: any number of frames, window by window, with bounded memory."""

import torch

import comfy.model_management
import comfy.sample
import comfy.utils
import latent_preview

from ..myv_core.chaining import NOISE_MODES, shared_noise_index, window_schedule
from ..myv_core.depth import NORMALIZE_MODES
from ..myv_core.depth_estimation import channel_depth
from .depth import NATIVE_DEPTH_INPUT, NORMALIZE_TOOLTIP
from .patching import with_depth
from .sampling import video_latent, video_sampler_inputs


def sample_window(model, window, video, noise, depth, normalize, seed, steps, cfg, sampler_name, scheduler,
                  positive, negative, callback=None):
    """Samples one window of the clip; its first `window.keep` frames are held at their value in `video`.

    The per-frame noise mask makes ComfyUI re-noise the kept frames to the current noise level at
    every step (masked sampling), so the new frames attend to real past frames. Conds with one row
    per clip frame reach the UNet narrowed to the window's frames (nodes.patching.VideoCall).
    """
    frames = slice(window.start, window.stop)
    window_model = with_depth(model, depth, normalize, latent_frames=range(window.start, window.stop))
    mask = None
    if window.keep:
        mask = torch.ones(window.stop - window.start, 1, *video.shape[-2:])
        mask[:window.keep] = 0.0
    return comfy.sample.sample(window_model, noise[frames], steps, cfg, sampler_name, scheduler, positive, negative,
                               video[frames], noise_mask=mask, callback=callback,
                               disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def clip_noise(video, seed, window_frames, mode):
    """The noise of every clip frame, drawn once for the whole clip (so independent of the windowing),
    and shared across windows (myv_core.chaining.shared_noise_index) unless mode is "independent"."""
    if mode not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {mode!r}")
    noise = comfy.sample.prepare_noise(video, seed)
    return noise[shared_noise_index(noise.shape[0], window_frames, seed)] if mode == "shared" else noise


def window_progress(model, windows, steps):
    """One progress bar (with latent previews) over every step of every window."""
    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
    bar = comfy.utils.ProgressBar(len(windows) * steps)

    def for_window(k):
        def callback(step, x0, x, total_steps):
            preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
            bar.update_absolute(k * steps + step + 1, len(windows) * steps, preview)
        return callback
    return for_window


class MYVLongVideoSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **video_sampler_inputs("as many frames as depth, or 1 frame to repeat"),
            "window_frames": ("INT", {"default": 16, "min": 1, "max": 256, "tooltip": "frames denoised at once (the model was trained on 16)"}),
            "context_frames": ("INT", {"default": 2, "min": 0, "max": 255, "tooltip": "finished frames each new window keeps fixed and looks back at"}),
            "normalize": (list(NORMALIZE_MODES), {"default": "per_frame", "tooltip": NORMALIZE_TOOLTIP}),
        }, "optional": {
            **NATIVE_DEPTH_INPUT,
            # Optional so that API prompts saved before it existed still validate; a widget all the same.
            "noise": (list(NOISE_MODES), {"default": "shared", "tooltip": (
                "shared: every window starts from a shuffle of the first window's noise (as FreeNoise), so the "
                "windows agree on the clip's look and it does not drift; independent: fresh noise per frame")}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = ("Any number of frames with the memory of one window: each window keeps the last finished "
                   "frames of the one before as fixed context for the causal temporal attention, and shares "
                   "the first window's noise.")

    def sample(self, model, positive, negative, depth, latent_image, seed, steps, cfg, sampler_name, scheduler,
               window_frames, context_frames, normalize, native_depth=None, noise="shared"):
        depth = channel_depth(depth, normalize, native_depth)
        windows = window_schedule(depth.shape[0], window_frames, context_frames)
        video = video_latent(latent_image, depth.shape[0], repeat_single=True).clone()
        noise = clip_noise(video, seed, window_frames, noise)
        progress = window_progress(model, windows, steps)
        for k, window in enumerate(windows):
            comfy.model_management.throw_exception_if_processing_interrupted()
            samples = sample_window(model, window, video, noise, depth, normalize, seed, steps, cfg, sampler_name,
                                    scheduler, positive, negative, callback=progress(k))
            # Kept frames stay exactly as the earlier window finished them.
            video[window.start + window.keep:window.stop] = samples[window.keep:]
        return ({"samples": video},)
