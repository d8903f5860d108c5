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
