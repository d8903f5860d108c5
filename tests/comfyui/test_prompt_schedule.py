"""MYVPromptSchedule with a real (tiny, random) ComfyUI CLIP: comfy.sd.CLIP around comfy.sd1_clip's
tokenizer and text model, built the way ComfyUI builds it from a ClipTarget."""

import pytest
import torch

import comfy.conds
import comfy.sd
import comfy.sd1_clip
from comfy.supported_models_base import ClipTarget

TINY_TEXT_CONFIG = {
    "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
    "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    "eos_token_id": 49407, "bos_token_id": 0, "pad_token_id": 1, "projection_dim": 32,
}
INPUTS = ["clip", "text", "frame_count", "interpolation"]
WALKS, RUNS = "a tiger walks", "a tiger runs in the snow"
LONG = " ".join(["a tiger with stripes walks slowly through the tall grass at dawn"] * 8)  # > 75 tokens


class TinyTextModel(comfy.sd1_clip.SD1ClipModel):
    """comfy.sd1_clip's one-encoder wrapper with the tiny config instead of CLIP-L's."""

    def __init__(self, device="cpu", dtype=None, model_options=None):
        super().__init__(device=device, dtype=dtype, model_options=model_options or {},
                         clip_model=comfy.sd1_clip.SDClipModel, textmodel_json_config=dict(TINY_TEXT_CONFIG))


@pytest.fixture(scope="module")
def clip(pack):
    clip = comfy.sd.CLIP(ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinyTextModel))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in clip.cond_stage_model.parameters():  # comfy.ops leaves weights uninitialised
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return clip


def encode_alone(clip, prompt):
    return clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)


def schedule(pack, clip, text, frame_count, interpolation="step"):
    (conditioning,) = pack.nodes.prompt_schedule.MYVPromptSchedule().encode(clip, text, frame_count, interpolation)
    assert len(conditioning) == 1 and set(conditioning[0][1]) == {"pooled_output"}
    return conditioning[0][0], conditioning[0][1]["pooled_output"]


def test_node_is_registered_with_its_inputs(pack):
    node = pack.NODE_CLASS_MAPPINGS["MYVPromptSchedule"]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["MYVPromptSchedule"] == "MYV Prompt Schedule"
    inputs = node.INPUT_TYPES()["required"]
    assert list(inputs) == INPUTS
    assert inputs["text"][1]["multiline"] and inputs["frame_count"][1]["default"] == 16
    assert inputs["frame_count"][1]["min"] == 1
    assert inputs["interpolation"][0] == ["step", "linear"] and inputs["interpolation"][1]["default"] == "step"
    assert node.RETURN_TYPES == ("CONDITIONING",) and node.CATEGORY == "MakeYourVideo"
    assert all("tooltip" in options for _, options in list(inputs.values())[1:])


def test_step_holds_each_prompt_until_the_next_keyframe(pack, clip):
    walks, runs = encode_alone(clip, WALKS), encode_alone(clip, RUNS)
    cond, pooled = schedule(pack, clip, f"0: {WALKS}\n\n24: {RUNS}\n", 32)
    assert cond.shape == (32, 77, 32) and pooled.shape == (32, 32)
    assert not torch.allclose(walks[0], runs[0])
    for frame in range(32):
        expected = walks if frame < 24 else runs
        assert torch.equal(cond[frame], expected[0][0]) and torch.equal(pooled[frame], expected[1][0]), frame


def test_linear_blends_neighbouring_keyframes(pack, clip):
    walks, runs = encode_alone(clip, WALKS), encode_alone(clip, RUNS)
    cond, pooled = schedule(pack, clip, f"8: {RUNS}\n4: {WALKS}", 12, "linear")
    assert cond.shape == (12, 77, 32) and pooled.shape == (12, 32)
    for frame in (0, 4):  # before the first keyframe and at it
        assert torch.equal(cond[frame], walks[0][0]) and torch.equal(pooled[frame], walks[1][0])
    assert torch.equal(cond[6], (walks[0][0] + runs[0][0]) / 2)
    assert torch.equal(pooled[6], (walks[1][0] + runs[1][0]) / 2)
    torch.testing.assert_close(cond[5], 0.75 * walks[0][0] + 0.25 * runs[0][0])
    torch.testing.assert_close(pooled[7], 0.25 * walks[1][0] + 0.75 * runs[1][0])
    for frame in (8, 11):  # from the last keyframe on
        assert torch.equal(cond[frame], runs[0][0]) and torch.equal(pooled[frame], runs[1][0])


def test_each_distinct_prompt_is_encoded_once(pack, clip, monkeypatch):
    encoded = []
    original = clip.encode_from_tokens

    def counting(tokens, *args, **kwargs):
        encoded.append(tokens)
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(clip, "encode_from_tokens", counting)
    cond, _ = schedule(pack, clip, f"0: {WALKS}\n3: {RUNS}\n6: {WALKS}\n9: {RUNS}", 10)
    assert len(encoded) == 2 and cond.shape[0] == 10


def test_prompts_of_different_token_lengths_are_repeated_to_a_common_length(pack, clip):
    walks, long = encode_alone(clip, WALKS), encode_alone(clip, LONG)
    assert long[0].shape[1] == 154
    cond, pooled = schedule(pack, clip, f"0: {WALKS}\n2: {LONG}", 4)
    assert cond.shape == (4, 154, 32) and pooled.shape == (4, 32)
    assert torch.equal(cond[0], walks[0][0].repeat(2, 1)) and torch.equal(cond[3], long[0][0])
    # ComfyUI batches the schedule with a 77-token uncond exactly as it batches any two prompts
    batched = comfy.conds.CONDCrossAttn(cond).concat([comfy.conds.CONDCrossAttn(walks[0].repeat(4, 1, 1))])
    assert batched.shape == (8, 154, 32)


@pytest.mark.parametrize("text, frame_count, message", [
    ("", 16, "no keyframes"),
    (f"0: {WALKS}\n{RUNS}", 16, f"'{RUNS}' is not a keyframe"),
    (f"-1: {WALKS}", 16, "negative frame -1"),
    (f"0: {WALKS}\n0: {RUNS}", 16, "frame 0 has two keyframes"),
    (f"0: {WALKS}\n24: {RUNS}", 16, "keyframe 24 is at or beyond frame_count 16"),
])
def test_errors_are_raised_before_encoding(pack, clip, monkeypatch, text, frame_count, message):
    monkeypatch.setattr(clip, "encode_from_tokens", lambda *args, **kwargs: pytest.fail("encoded"))
    with pytest.raises(ValueError, match=message):
        schedule(pack, clip, text, frame_count)
