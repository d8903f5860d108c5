"""Long videos as a chain of windows: the schedule and the seam metric.

Window k denoises clip frames [start, stop). Its first `keep` frames are finished frames of earlier
windows, held fixed (a per-frame noise mask of 0), so the causal temporal attention of the new frames
looks back at real past frames. Every window has the same length (the last one starts earlier and
keeps more finished frames rather than running short), so memory and GroupNorm statistics are the
same for every window, whatever the clip length.
"""

from dataclasses import dataclass

import torch

NOISE_MODES = ("shared", "independent")
NOISE_GROUP = 4


@dataclass(frozen=True)
class Window:
    start: int
    stop: int
    keep: int  # leading frames taken from earlier windows and held fixed

    @property
    def new(self):
        """Clip frames this window generates."""
        return range(self.start + self.keep, self.stop)


def check_window_settings(frames, window_frames, context_frames):
    if frames < 1:
        raise ValueError(f"the clip must have at least 1 frame (got {frames}).")
    if window_frames < 1:
        raise ValueError(f"window_frames must be at least 1 (got {window_frames}); 16 is what the model was trained on.")
    if not 0 <= context_frames < window_frames:
        raise ValueError(f"context_frames must be between 0 and window_frames - 1 = {window_frames - 1} "
                         f"(got {context_frames}): each window needs room for new frames.")


def window_schedule(frames, window_frames=16, context_frames=4):
    """The windows that cover `frames` clip frames, each new window keeping `context_frames` (or more)."""
    check_window_settings(frames, window_frames, context_frames)
    windows = [Window(0, min(window_frames, frames), 0)]
    while windows[-1].stop < frames:
        done = windows[-1].stop
        start = min(done - context_frames, frames - window_frames)
        windows.append(Window(start, start + window_frames, done - start))
    return windows


def shared_noise_index(frames, window_frames, seed, group=NOISE_GROUP):
    """For every clip frame, the frame whose noise it takes when windows share their noise.

    Frame t takes the noise of frame t mod window_frames, shuffled within groups of `group`
    consecutive frames (seeded), as FreeNoise does: every window starts from a reordering of the
    first window's noise, so the windows agree on what the noise decides (colours, layout) while no
    two neighbouring frames repeat one pattern. With independent noise each window settles on its own
    look, and only the context frames tie it to the one before, so the clip drifts (docs/long_video.md).
    """
    index = torch.arange(frames) % window_frames
    generator = torch.Generator().manual_seed(seed)
    for start in range(window_frames, frames, group):
        block = index[start:start + group]
        index[start:start + group] = block[torch.randperm(len(block), generator=generator)]
    return index


def seam_ratio(latents, windows):
    """Mean |frame t+1 - frame t| across window boundaries over the same within windows.

    latents: (frames, channels, h, w). A boundary pair is (last kept frame, first new frame) of a
    window; 1.0 means the seams move no more than the video does anywhere else. NaN when there is
    no boundary or no pair inside windows.
    """
    return change_ratio(latents, {w.start + w.keep - 1 for w in windows if w.keep})


def change_ratio(latents, boundary):
    """Mean |frame t+1 - frame t| over the t in `boundary` over the same for every other t (NaN when
    either set is empty): seam_ratio for boundaries given as frame indices."""
    steps = (latents[1:] - latents[:-1]).abs().flatten(1).mean(dim=1)  # steps[t]: frame t -> t+1
    at_seams = [steps[t] for t in sorted(boundary)]
    inside = [steps[t] for t in range(len(steps)) if t not in boundary]
    if not at_seams or not inside:
        return float("nan")
    return float(sum(at_seams) / len(at_seams) / (sum(inside) / len(inside)))
