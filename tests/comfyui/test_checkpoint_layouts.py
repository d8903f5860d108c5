"""MYV Checkpoint Loader reads every layout training runs write, with exactly the file's tensors."""

import shutil

import pytest
import torch

from checkpoint_layouts import write_training_checkpoints
from myv_core.checkpoint import split_checkpoint
from tiny_models import tiny_unet

LAYOUTS = ["lightning", "lightning_callback_class", "lightning_numpy1", "lightning_legacy", "omegaconf",
           "optimizer", "deepspeed"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, fixtures_dir):
    return write_training_checkpoints(tmp_path_factory.mktemp("layouts"), tiny_unet(fixtures_dir))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_checkpoint_loader_reads_training_layouts(pack, model_dir, layouts, layout):
    from comfyui_makeyourvideo.nodes.patching import KEY
    path, expected = layouts[layout]
    shutil.copy(path, model_dir / path.name)
    model, clip, vae = pack.nodes.loaders.MYVCheckpointLoader().load(path.name, "fp32")
    parts = split_checkpoint(expected)
    unet = model.model.diffusion_model.state_dict()
    temporal = model.get_additional_models_with_key(KEY)[0].model.state_dict()
    for loaded, want in ((unet, parts.unet), (temporal, parts.temporal)):
        assert set(want) <= set(loaded)
        for key, value in want.items():
            assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    assert set(temporal) == set(parts.temporal) and clip is None and vae is None


def test_text_encoder_loads_as_core_loads_it(pack):
    """MYV Checkpoint Loader reads the OpenCLIP-H text encoder one module at a time through core's key
    converter; every weight equals what core's whole-state-dict load gives. The encoder is the real
    one (354M parameters, random fp16 weights), written in the release's layout by core's own saving
    converter."""
    import comfy.sd
    import comfy.supported_models
    from types import SimpleNamespace

    model_config = comfy.supported_models.SD20({})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        source = comfy.sd.CLIP(model_config.clip_target(), model_options={"dtype": torch.float16})
        for parameter in source.cond_stage_model.parameters():  # comfy.ops leaves them uninitialised
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float16))
    saved = model_config.process_clip_state_dict_for_saving(source.cond_stage_model.state_dict())
    prefix = "cond_stage_model."
    assert saved and all(key.startswith(prefix + "model.") for key in saved)
    assert any(key.endswith(".attn.in_proj_weight") for key in saved)  # split into q, k, v when read
    parts = SimpleNamespace(text_encoder={key[len(prefix):]: value for key, value in saved.items()})
    clip = pack.nodes.loaders.build_clip(parts, model_config, "release", torch.float16)
    expected = source.cond_stage_model.state_dict()
    loaded = clip.cond_stage_model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
