"""MYVApplyDepth: the depth video that steers a Make-Your-Video MODEL."""

from ..myv_core.depth import NORMALIZE_MODES
from ..myv_core.depth_estimation import channel_depth
from .depth_estimation import NATIVE_DEPTH_TYPE
from .patching import with_depth

NORMALIZE_TOOLTIP = ("per_frame: min-max each depth map to [-1, 1], as the model was trained. per_clip: "
                     "one min/max for the whole clip, steadier brightness across frames.")
NATIVE_DEPTH_INPUT = {"native_depth": (NATIVE_DEPTH_TYPE, {"tooltip": (
    "optional: MYV Estimate Depth's native_depth, with depth from the same node. The depth channel is then "
    "made from the estimator's own output with one resize to the latent size, exactly as the official "
    "code; without it, from the depth images (resized twice, so slightly off the official channel)")})}


class MYVApplyDepth:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "depth": ("IMAGE", {"tooltip": "one depth map per frame, near = bright, any resolution"}),
            "normalize": (list(NORMALIZE_MODES), {"default": "per_frame", "tooltip": NORMALIZE_TOOLTIP}),
        }, "optional": dict(NATIVE_DEPTH_INPUT)}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = "Makes every UNet call of a Make-Your-Video model see this depth video as its 5th input channel."

    def apply(self, model, depth, normalize, native_depth=None):
        return (with_depth(model, channel_depth(depth, normalize, native_depth), normalize),)
