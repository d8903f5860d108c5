"""Prompt schedule: keyframe parsing, per-frame blends and the rows built from them (pure torch)."""

import pytest
import torch

from myv_core.schedule import (Keyframe, common_token_length, frame_blend, parse_keyframes, repeat_tokens,
                               schedule_cond, schedule_rows)


def test_parse_sorts_skips_blank_lines_and_keeps_colons():
    text = "\n 24 : a tiger runs: in the snow \n\n0: a tiger walks\n  \n7:\n"
    assert parse_keyframes(text, 32) == [Keyframe(0, "a tiger walks"), Keyframe(7, ""),
                                         Keyframe(24, "a tiger runs: in the snow")]


@pytest.mark.parametrize("text, frame_count, expected", [
    ("", 16, r"text: no keyframes.*`frame: prompt`"),
    ("\n  \n", 16, r"text: no keyframes"),
    ("0: a tiger\na tiger runs", 16, r"line 2 'a tiger runs' is not a keyframe.*`frame: prompt`"),
    ("1.5: a tiger", 16, r"line 1 '1.5: a tiger' is not a keyframe"),
    ("first: a tiger", 16, r"'first: a tiger' is not a keyframe"),
    ("-3: a tiger", 16, r"negative frame -3"),
    ("0: a\n4: b\n4: c", 16, r"frame 4 has two keyframes \(lines 2 and 3\)"),
    ("0: a\n16: b", 16, r"keyframe 16 is at or beyond frame_count 16"),
    ("0: a\n40: b", 16, r"keyframe 40 is at or beyond frame_count 16.*raise frame_count"),
])
def test_parse_errors_name_the_problem(text, frame_count, expected):
    with pytest.raises(ValueError, match=expected):
        parse_keyframes(text, frame_count)


def test_step_holds_each_keyframe_until_the_next():
    blend = frame_blend([2, 5], 8, "step")
    assert blend.first.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert blend.weight.tolist() == [0.0] * 8


def test_linear_moves_in_equal_steps_and_holds_the_ends():
    blend = frame_blend([2, 6, 7], 10, "linear")
    assert blend.first.tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 2, 2]
    assert blend.second.tolist() == [1, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert blend.weight.tolist() == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 0.0, 0.0, 0.0, 0.0]


def test_single_keyframe_and_unknown_mode():
    blend = frame_blend([3], 5, "linear")
    assert blend.first.tolist() == blend.second.tolist() == [0] * 5
    with pytest.raises(ValueError, match="interpolation must be one of"):
        frame_blend([0], 5, "cubic")


def keyframe_tensors(count, *shape):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(1, *shape, generator=generator) for _ in range(count)]


def test_step_rows_are_the_keyframes_exactly():
    a, b = keyframe_tensors(2, 3, 4)
    rows = schedule_rows([a, b], frame_blend([0, 3], 5, "step"))
    assert rows.shape == (5, 3, 4)
    assert torch.equal(rows, torch.cat([a, a, a, b, b]))


def test_linear_rows_blend_exactly():
    a, b = keyframe_tensors(2, 6)
    rows = schedule_rows([a, b], frame_blend([1, 5], 7, "linear"))
    assert rows.shape == (7, 6)
    assert torch.equal(rows[0], a[0]) and torch.equal(rows[1], a[0])
    assert torch.equal(rows[3], (a[0] + b[0]) / 2)
    torch.testing.assert_close(rows[2], 0.75 * a[0] + 0.25 * b[0])
    torch.testing.assert_close(rows[4], 0.25 * a[0] + 0.75 * b[0])
    assert torch.equal(rows[5], b[0]) and torch.equal(rows[6], b[0])


def test_rows_keep_dtype_and_device():
    a, b = (t.half() for t in keyframe_tensors(2, 2, 3))
    assert schedule_rows([a, b], frame_blend([0, 2], 4, "linear")).dtype == torch.float16


def test_different_token_lengths_repeat_to_a_common_multiple():
    short, long = torch.arange(6.0).reshape(1, 2, 3), torch.arange(12.0).reshape(1, 4, 3) + 100
    assert common_token_length([77, 154, 77]) == 154 and common_token_length([154, 231]) == 462
    assert torch.equal(repeat_tokens(short, 4), torch.cat([short, short], dim=1))
    rows = schedule_cond([short, long], frame_blend([0, 2], 3, "step"))
    assert rows.shape == (3, 4, 3)
    assert torch.equal(rows[0], torch.cat([short[0], short[0]])) and torch.equal(rows[2], long[0])
