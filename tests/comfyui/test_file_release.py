"""Nothing of a checkpoint file outlives its load: after each loader returns, no mapping of the file
is left in the process (/proc/self/maps), on every path that reads a release file."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from checkpoint_layouts import file_mappings
from myv_core.depth_estimation import dpt_state_dict_to_midas
from test_depth_estimation import seeded, tiny_dpt_config
from tiny_models import tiny_full_checkpoint

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
transformers = pytest.importorskip("transformers")
WEIGHT_DTYPES = ["fp32", "fp16", "bf16", "fp8_e4m3fn"]


@pytest.fixture(scope="module")
def release_sd(fixtures_dir):
    """The tiny UNet, the schedule and a tiny MiDaS depth stage, in the official key layout (the
    text encoder and VAE of tiny_full_checkpoint are stand-ins that ComfyUI could not build)."""
    dpt = seeded(transformers.DPTForDepthEstimation(tiny_dpt_config()))
    stand_ins = ("depth_stage_model.", "cond_stage_model.", "first_stage_model.")
    sd = {k: v for k, v in tiny_full_checkpoint(fixtures_dir).items() if not k.startswith(stand_ins)}
    sd.update({"depth_stage_model.model." + k: v.contiguous()
               for k, v in dpt_state_dict_to_midas(dpt.state_dict()).items()})
    return sd


@pytest.fixture(params=["ckpt", "safetensors"])
def release_file(request, model_dir, release_sd):
    """The checkpoint as a Lightning model.ckpt (torch.save zip) or as a .safetensors file."""
    path = model_dir / f"model.{request.param}"
    if request.param == "ckpt":
        torch.save({"state_dict": release_sd, "global_step": 1}, path)
    else:
        save_file(release_sd, str(path))
    return path


@pytest.mark.parametrize("weight_dtype", WEIGHT_DTYPES)
def test_checkpoint_loader(pack, release_file, weight_dtype):
    model, _, _ = pack.nodes.loaders.MYVCheckpointLoader().load(release_file.name, weight_dtype)
    assert file_mappings(release_file) == []
    assert model.model.diffusion_model.input_blocks[0][0].weight.shape[1] == 5  # it did load


def test_checkpoint_loader_under_dynamic_vram(pack, release_file, dynamic_vram):
    """comfy.ops Linears under comfy-aimdo adopt the tensors they are given instead of copying them."""
    pack.nodes.loaders.MYVCheckpointLoader().load(release_file.name, "fp16")
    assert file_mappings(release_file) == []


def test_temporal_module_loader(pack, release_file):
    base = pack.nodes.loaders.MYVCheckpointLoader().load(release_file.name, "fp32")[0]
    pack.nodes.loaders.MYVTemporalModuleLoader().load(base, release_file.name)
    assert file_mappings(release_file) == []


def test_depth_estimator_loader(pack, release_file, release_sd, tmp_path):
    """The depth stage read out of the whole checkpoint, and the release's separate MiDaS file."""
    import folder_paths
    midas = tmp_path / "depth" / "dpt_hybrid-midas-501f0c75.pt"
    midas.parent.mkdir()
    prefix = "depth_stage_model.model."
    torch.save({k[len(prefix):]: v for k, v in release_sd.items() if k.startswith(prefix)}, midas)
    folder_paths.add_model_folder_path("depth_estimators", str(midas.parent), is_default=True)
    try:
        loader = pack.nodes.depth_estimation.MYVDepthEstimatorLoader()
        for name in (f"makeyourvideo/{release_file.name}", midas.name):  # checked, then read by the estimate
            estimator = loader.load(name, "auto", "fp32")[0]
            pack.nodes.depth_estimation.MYVEstimateDepth().estimate(estimator, torch.rand(1, 16, 16, 3), 1,
                                                                    "per_frame", 0.0)
    finally:
        folder_paths.folder_names_and_paths["depth_estimators"][0].remove(str(midas.parent))
    assert file_mappings(release_file) == [] and file_mappings(midas) == []


def test_converter_and_temporal_loader_on_its_output(pack, release_file, tmp_path):
    from comfyui_makeyourvideo.myv_core.convert import convert
    written, _ = convert(release_file, tmp_path / "converted", torch.float16)
    assert [file_mappings(path) for path in (release_file, *written.values())] == [[]] * (1 + len(written))
    shutil.copy(written["temporal"], release_file.parent / written["temporal"].name)
    base = pack.nodes.loaders.MYVCheckpointLoader().load(release_file.name, "fp16")[0]
    pack.nodes.loaders.MYVTemporalModuleLoader().load(base, written["temporal"].name)
    assert file_mappings(release_file.parent / written["temporal"].name) == []
