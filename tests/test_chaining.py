"""The long-video seam metric: seam_ratio (windows) and change_ratio (boundaries as frame indices)."""

import math

import torch

from myv_core.chaining import Window, change_ratio, seam_ratio, shared_noise_index, window_schedule


def video_with_jumps(frames, jumps, step=0.1, jump=1.0):
    """(frames, 1, 2, 2) latents that change by `step` per frame and by `jump` into each frame in `jumps`."""
    deltas = torch.tensor([jump if t in jumps else step for t in range(1, frames)])
    values = torch.cat([torch.zeros(1), deltas.cumsum(0)])
    return values[:, None, None, None].expand(frames, 1, 2, 2).clone()


def test_seam_ratio_measures_the_change_into_each_window():
    windows = window_schedule(40, 16, 4)
    firsts = {w.start + w.keep for w in windows[1:]}
    latents = video_with_jumps(40, firsts)
    assert math.isclose(seam_ratio(latents, windows), 10.0, rel_tol=1e-5)
    assert math.isclose(change_ratio(latents, {f - 1 for f in firsts}), 10.0, rel_tol=1e-5)


def test_without_boundaries_the_ratio_is_nan():
    latents = video_with_jumps(16, set())
    assert math.isnan(seam_ratio(latents, [Window(0, 16, 0)]))
    assert math.isnan(change_ratio(latents, set()))


def test_shared_noise_reorders_the_first_windows_noise_in_groups():
    index = shared_noise_index(45, 16, seed=3)
    assert index[:16].tolist() == list(range(16))  # the first window keeps its own noise
    for start in range(16, 45, 4):
        block = index[start:start + 4].tolist()
        assert sorted(block) == sorted(t % 16 for t in range(start, min(start + 4, 45)))
    assert index[16:].tolist() != [t % 16 for t in range(16, 45)]  # shuffled, not a plain repeat
    assert torch.equal(index, shared_noise_index(45, 16, seed=3))
    assert not torch.equal(index, shared_noise_index(45, 16, seed=4))
