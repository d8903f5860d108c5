"""ComfyUI glue: thin nodes that adapt ComfyUI types to myv_core calls."""

from .depth import MYVApplyDepth
from .depth_estimation import MYVDepthEstimatorLoader, MYVEstimateDepth
from .loaders import MYVCheckpointLoader, MYVTemporalModuleLoader
from .long_video import MYVLongVideoSampler
from .prompt_schedule import MYVPromptSchedule
from .sampling import MYVSelectFrames, MYVVideoKSampler

NODE_CLASS_MAPPINGS = {
    "MYVCheckpointLoader": MYVCheckpointLoader,
    "MYVTemporalModuleLoader": MYVTemporalModuleLoader,
    "MYVApplyDepth": MYVApplyDepth,
    "MYVVideoKSampler": MYVVideoKSampler,
    "MYVSelectFrames": MYVSelectFrames,
    "MYVLongVideoSampler": MYVLongVideoSampler,
    "MYVDepthEstimatorLoader": MYVDepthEstimatorLoader,
    "MYVEstimateDepth": MYVEstimateDepth,
    "MYVPromptSchedule": MYVPromptSchedule,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "MYVCheckpointLoader": "MYV Checkpoint Loader",
    "MYVTemporalModuleLoader": "MYV Temporal Module Loader",
    "MYVApplyDepth": "MYV Apply Depth",
    "MYVVideoKSampler": "MYV Video KSampler",
    "MYVSelectFrames": "MYV Select Frames",
    "MYVLongVideoSampler": "MYV Long Video Sampler",
    "MYVDepthEstimatorLoader": "MYV Depth Estimator Loader",
    "MYVEstimateDepth": "MYV Estimate Depth",
    "MYVPromptSchedule": "MYV Prompt Schedule",
}
