"""Prompt travel: keyframed prompts to one conditioning row per frame.

Frames travel as the batch of the latent, and ComfyUI hands each frame the row of the positive
conditioning with the same batch index (a single row is repeated to every frame). A schedule is
therefore a conditioning whose batch holds frame_count rows; the video samplers slice it per window.

The text is one keyframe a line, `frame: prompt`. Each frame takes a blend of at most two keyframes'
encodings: the keyframe at or before it (frames before the first keyframe take the first) and, for
`linear`, the next one, weighted by how far the frame lies between them.
"""

import math
import re
from typing import NamedTuple

import torch

INTERPOLATIONS = ("step", "linear")
KEYFRAME_LINE = re.compile(r"^\s*([+-]?\d+)\s*:(.*)$")
EXAMPLE = "0: a tiger walks"


class Keyframe(NamedTuple):
    frame: int
    prompt: str


class FrameBlend(NamedTuple):
    """Per frame: row = (1 - weight) * keyframes[first] + weight * keyframes[second]."""
    first: torch.Tensor   # (frames,) long, index of a keyframe
    second: torch.Tensor  # (frames,) long
    weight: torch.Tensor  # (frames,) float in [0, 1)


def parse_keyframes(text, frame_count):
    """`frame: prompt` lines -> keyframes sorted by frame; raises ValueError naming the faulty line.

    Blank lines are skipped; the prompt is everything after the first colon, stripped, so prompts may
    themselves hold colons, and `12:` alone is the empty prompt.
    """
    keyframes, seen = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        found = KEYFRAME_LINE.match(line)
        if not found:
            raise ValueError(f"text: line {number} {line.strip()!r} is not a keyframe; write one keyframe a "
                             f"line as `frame: prompt`, e.g. `{EXAMPLE}`.")
        frame, prompt = int(found.group(1)), found.group(2).strip()
        if frame < 0:
            raise ValueError(f"text: line {number} {line.strip()!r} has the negative frame {frame}; frames "
                             f"count from 0.")
        if frame in seen:
            raise ValueError(f"text: frame {frame} has two keyframes (lines {seen[frame]} and {number}); "
                             f"keep one prompt per frame.")
        if frame >= frame_count:
            raise ValueError(f"text: keyframe {frame} is at or beyond frame_count {frame_count} (frames "
                             f"0 to {frame_count - 1}); move the keyframe or raise frame_count.")
        seen[frame] = number
        keyframes.append(Keyframe(frame, prompt))
    if not keyframes:
        raise ValueError(f"text: no keyframes; write one keyframe a line as `frame: prompt`, e.g. `{EXAMPLE}`.")
    return sorted(keyframes)


def frame_blend(frames, frame_count, interpolation="step"):
    """For sorted keyframe frames, which keyframes each of frame_count frames blends, and how.

    step holds a keyframe until the next; linear moves from one keyframe to the next in equal steps,
    reaching the next exactly at its frame. Before the first and from the last keyframe on, both
    modes hold that keyframe.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    keys = torch.tensor(frames, dtype=torch.float64)
    positions = torch.arange(frame_count, dtype=torch.float64)
    # Index of the last keyframe at or before each frame; -1 before the first keyframe, then clamped.
    first = (torch.searchsorted(keys, positions, right=True) - 1).clamp(min=0)
    second = (first + 1).clamp(max=len(frames) - 1)
    weight = torch.zeros(frame_count, dtype=torch.float64)
    if interpolation == "linear":
        between = second > first
        span = keys[second] - keys[first]
        weight[between] = ((positions - keys[first]) / span)[between].clamp(min=0.0)
    return FrameBlend(first, second, weight)


def common_token_length(lengths):
    """The least common multiple of the token counts (77, 154, ... for CLIP's 77-token chunks)."""
    return math.lcm(*lengths)


def repeat_tokens(cond, length):
    """(batch, tokens, dim) -> (batch, length, dim) by repeating the tokens whole; length a multiple.

    Cross-attention over every token repeated k times gives exactly the result over the tokens once
    (each key's softmax share is split k ways and the values are the same), which is how ComfyUI
    itself batches conditionings of different lengths; padding with extra tokens would not be.
    """
    return cond.repeat(1, length // cond.shape[1], 1)


def schedule_rows(per_keyframe, blend):
    """One row per frame from per-keyframe tensors of shape (1, ...), as a text encoder returns them.

    Rows are (1 - w) * a + w * b: exactly a where w is 0 and exactly the mean of a and b at w = 0.5.
    """
    stacked = torch.cat(per_keyframe)
    weight = blend.weight.to(device=stacked.device, dtype=stacked.dtype)
    weight = weight.reshape(-1, *([1] * (stacked.ndim - 1)))
    first, second = blend.first.to(stacked.device), blend.second.to(stacked.device)
    return stacked[first] * (1.0 - weight) + stacked[second] * weight


def schedule_cond(per_keyframe, blend):
    """schedule_rows for (1, tokens, dim) cross-attention conditionings whose token counts may differ.

    All are repeated to the least common multiple of their lengths first (repeat_tokens), so a held
    prompt acts exactly as it does alone; a linear blend of a 77- and a 154-token prompt mixes each
    token of the longer one with the shorter one's token at the same place in its repetition.
    """
    length = common_token_length([cond.shape[1] for cond in per_keyframe])
    return schedule_rows([repeat_tokens(cond, length) for cond in per_keyframe], blend)
