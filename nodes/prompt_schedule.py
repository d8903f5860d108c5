"""MYVPromptSchedule: prompt travel, one conditioning row per frame."""

from ..myv_core.schedule import INTERPOLATIONS, frame_blend, parse_keyframes, schedule_cond, schedule_rows


class MYVPromptSchedule:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP",),
            "text": ("STRING", {"multiline": True, "default": "0: a tiger walks\n8: a tiger runs in the snow",
                                "tooltip": "one keyframe a line, `frame: prompt` (frames from 0); blank lines "
                                           "are skipped; frames before the first keyframe take its prompt"}),
            "frame_count": ("INT", {"default": 16, "min": 1, "max": 100_000, "tooltip": (
                "the video's frame count, e.g. MYV Select Frames' frame_count: the conditioning gets one row "
                "per frame")}),
            "interpolation": (list(INTERPOLATIONS), {"default": "step", "tooltip": (
                "step: each prompt holds until the next keyframe. linear: the encodings of neighbouring "
                "keyframes blend linearly between them")}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = ("Prompt travel: encodes each keyframe's prompt once and gives every frame its own "
                   "conditioning row (batch = frame_count), for the positive input of the video samplers.")

    def encode(self, clip, text, frame_count, interpolation):
        keyframes = parse_keyframes(text, frame_count)
        blend = frame_blend([k.frame for k in keyframes], frame_count, interpolation)
        if clip is None:
            raise ValueError("clip: no CLIP model; the checkpoint loaded has no text encoder, load one with "
                             "Load CLIP or a checkpoint that has it.")
        encoded = {}
        for prompt in dict.fromkeys(k.prompt for k in keyframes):
            encoded[prompt] = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
        conds, pooled = zip(*(encoded[k.prompt] for k in keyframes))
        extra = {} if any(p is None for p in pooled) else {"pooled_output": schedule_rows(list(pooled), blend)}
        return ([[schedule_cond(list(conds), blend), extra]],)
