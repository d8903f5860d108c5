"""MYVApplyDepth: the depth video that steers a Make-Your-Video MODEL."""

from ..myv_core.depth import NORMALIZE_MODES, depth_from_image
from .patching import with_depth

NORMALIZE_TOOLTIP = ("per_frame: min-max each depth map to [-1, 1], as the model was trained. per_clip: "
                     "one min/max for the whole clip, steadier brightness across frames.")


class MYVApplyDepth:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "depth": ("IMAGE", {"tooltip": "one depth map per frame, near = bright, any resolution"}),
            "normalize": (list(NORMALIZE_MODES), {"default": "per_frame", "tooltip": NORMALIZE_TOOLTIP}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = "Makes every UNet call of a Make-Your-Video model see this depth video as its 5th input channel."

    def apply(self, model, depth, normalize):
        return (with_depth(model, depth_from_image(depth), normalize),)
