"""Splitting, deriving and converting checkpoints; every bad-input case gets its own message."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from myv_core.checkpoint import (CheckpointError, NotMakeYourVideoError, TemporalOnlyError,
                                 UnsafeCheckpointError, join_unet, load_checkpoint,
                                 load_state_dict, load_temporal_layers, split_checkpoint)
from myv_core.config import FIXED_OFFICIAL, derive_config, temporal_sites
from myv_core.convert import main as convert_main, reassemble
from myv_core.temporal import TemporalLayers
from tiny_models import UNET_PREFIX, tiny_full_checkpoint, tiny_unet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest(fixtures_dir):
    return json.loads((fixtures_dir / "myv_key_manifest_full.json").read_text())


@pytest.fixture(scope="module")
def full_meta(manifest):
    """The released UNet's every key and shape, as meta tensors (no memory)."""
    return {manifest["prefix"] + k: torch.empty(shape, device="meta") for k, shape in manifest["keys"].items()}


def comfy_layout(key):
    """The two renumbering rules ComfyUI's SD2 UNet needs, stated independently of the code."""
    if key.startswith("middle_block.3."):
        return "middle_block.2." + key[len("middle_block.3."):]
    for n in (5, 8):
        if key.startswith(f"output_blocks.{n}.3."):
            return f"output_blocks.{n}.2." + key[len(f"output_blocks.{n}.3."):]
    return key


def test_full_manifest_every_key_placed(manifest, full_meta):
    parts = split_checkpoint(full_meta)
    assert len(parts.unet) == 686 and len(parts.temporal) == 920
    temporal = {k for k in manifest["keys"] if ".temopral_conv." in k
                or any(k.startswith(p + ".") for p in {k.rsplit(".transformer_blocks.0.attn1.relative_position_k", 1)[0]
                                                       for k in manifest["keys"] if "relative_position_k" in k})}
    assert set(parts.temporal) == temporal
    assert set(parts.unet) == {comfy_layout(k) for k in manifest["keys"] if k not in temporal}
    for key in manifest["keys"]:
        if key not in temporal:
            assert list(parts.unet[comfy_layout(key)].shape) == manifest["keys"][key]
    assert sum(v.numel() for v in full_meta.values()) == manifest["n_params"]


def test_full_manifest_derived_config_equals_official(manifest, full_meta):
    unet = {k[len(manifest["prefix"]):]: v for k, v in full_meta.items()}
    derived = derive_config(unet).official()
    assert derived == manifest["config"]
    # Everything else was read off the weights; these three are architecture facts the weights cannot show.
    assert set(FIXED_OFFICIAL) == {"use_causal_attention", "causal_block_size", "use_checkpoint"}


def test_full_manifest_temporal_layers_build_with_official_names(full_meta):
    parts = split_checkpoint(full_meta)
    sites = temporal_sites(parts.temporal)
    assert sum(s.kind == "conv" for s in sites) == 22 and sum(s.kind == "transformer" for s in sites) == 16
    layers = TemporalLayers(sites, device="meta")
    assert {k: list(v.shape) for k, v in layers.state_dict().items()} == \
           {k: list(v.shape) for k, v in parts.temporal.items()}
    middle = [(s.after, s.kind) for s in sites if s.block == "middle_block"]
    assert middle == [(0, "conv"), (1, "transformer"), (2, "conv")]
    assert {s.heads for s in sites if s.kind == "transformer"} == {5, 10, 20}


def test_tiny_model_config_and_strict_load(fixtures_dir):
    reference = json.loads((fixtures_dir / "myv_tiny_reference.json").read_text())
    sd = tiny_unet(fixtures_dir)
    unet = {k[len(UNET_PREFIX):]: v for k, v in sd.items()}
    assert derive_config(unet).official() == reference["config"]
    parts = split_checkpoint(sd)
    layers = TemporalLayers(temporal_sites(parts.temporal))
    layers.load_state_dict(parts.temporal, strict=True)
    assert torch.equal(join_unet(parts.unet, parts.temporal)["middle_block.3.in_layers.2.weight"],
                       parts.unet["middle_block.2.in_layers.2.weight"])


def test_full_tiny_checkpoint_split_and_reassembled(fixtures_dir):
    sd = tiny_full_checkpoint(fixtures_dir)
    parts = split_checkpoint(sd)
    assert set(parts.vae) == {"encoder.conv_in.weight", "decoder.conv_out.bias"}
    assert set(parts.text_encoder) == {"model.token_embedding.weight", "model.positional_embedding"}
    assert set(parts.depth) == {"model.pretrained.model.cls_token"}
    assert set(parts.schedule) == {"betas", "alphas_cumprod", "scale_factor", "logvar"}
    total = sum(len(getattr(parts, p)) for p in ("unet", "temporal", "vae", "text_encoder", "depth", "schedule", "ema"))
    assert total == len(sd)


def test_unknown_keys_are_named(fixtures_dir):
    sd = tiny_full_checkpoint(fixtures_dir)
    sd["lora_unet_down.alpha"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="lora_unet_down.alpha"):
        split_checkpoint(sd)


def write_ckpt(path, sd, **extra):
    torch.save({"state_dict": sd, "global_step": 1, "hyper_parameters": {"tags": {"a"}}, **extra}, path)


@pytest.mark.parametrize("dtype", [None, "fp16"])
def test_converter_round_trip(tmp_path, fixtures_dir, dtype, capsys):
    source = tmp_path / "model.ckpt"
    original = tiny_full_checkpoint(fixtures_dir)
    write_ckpt(source, original)
    args = [str(source), "--out-dir", str(tmp_path / "out")] + (["--dtype", dtype] if dtype else [])
    assert convert_main(args) == 0
    assert f"{len(original)} tensors identical" in capsys.readouterr().out
    spatial = load_file(str(tmp_path / "out" / "model_spatial.safetensors"))
    temporal = load_file(str(tmp_path / "out" / "model_temporal.safetensors"))
    depth = load_file(str(tmp_path / "out" / "model_depth.safetensors"))
    assert "model.diffusion_model.middle_block.2.in_layers.2.weight" in spatial
    assert not any(".temopral_conv." in k for k in spatial)
    with safe_open(str(tmp_path / "out" / "model_temporal.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "makeyourvideo-temporal"
    rebuilt = reassemble(spatial, temporal, depth)
    assert set(rebuilt) == set(original)
    for key, value in original.items():
        expected = value.to(torch.float16) if dtype else value  # --dtype casts every floating tensor
        assert rebuilt[key].dtype == expected.dtype and torch.equal(rebuilt[key], expected), key
    # The converted temporal file and the spatial file load where each belongs.
    assert set(load_temporal_layers(tmp_path / "out" / "model_temporal.safetensors")) == set(temporal)
    with pytest.raises(NotMakeYourVideoError, match="no temporal layers"):
        load_checkpoint(tmp_path / "out" / "model_spatial.safetensors")


def test_converter_command_line(tmp_path, fixtures_dir):
    source = tmp_path / "m.ckpt"
    write_ckpt(source, tiny_full_checkpoint(fixtures_dir, depth=False))
    run = subprocess.run([sys.executable, "-m", "myv_core.convert", str(source), "--out-dir", str(tmp_path),
                          "--dtype", "bf16"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["m_spatial.safetensors", "m_temporal.safetensors"]
    bad = subprocess.run([sys.executable, "-m", "myv_core.convert", str(tmp_path / "m_spatial.safetensors"),
                          "--out-dir", str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "no temporal layers" in bad.stderr and "Traceback" not in bad.stderr


def test_deepspeed_module_nesting_is_unwrapped(tmp_path, fixtures_dir):
    sd = tiny_full_checkpoint(fixtures_dir)
    torch.save({"module": {"_forward_module." + k: v for k, v in sd.items()}}, tmp_path / "ds.pt")
    assert set(load_state_dict(tmp_path / "ds.pt")) == set(sd)


# ---- bad input: one message each -------------------------------------------------------------

def test_plain_sd_checkpoint(fixtures_dir):
    parts = split_checkpoint(tiny_unet(fixtures_dir))
    plain = {UNET_PREFIX + k: v for k, v in parts.unet.items()}
    with pytest.raises(NotMakeYourVideoError, match="no temporal layers: not a Make-Your-Video checkpoint"):
        split_checkpoint(plain)


def test_non_unet_checkpoint(fixtures_dir):
    with pytest.raises(NotMakeYourVideoError, match="contains no diffusion UNet"):
        split_checkpoint({"first_stage_model.encoder.conv_in.weight": torch.zeros(1)})


def test_temporal_only_where_full_expected(tmp_path, fixtures_dir):
    parts = split_checkpoint(tiny_unet(fixtures_dir))
    save_file(parts.temporal, str(tmp_path / "t.safetensors"))
    with pytest.raises(TemporalOnlyError, match="holds only temporal layers"):
        load_checkpoint(tmp_path / "t.safetensors")


def test_spatial_only_where_temporal_expected(tmp_path, fixtures_dir):
    parts = split_checkpoint(tiny_unet(fixtures_dir))
    save_file({UNET_PREFIX + k: v for k, v in parts.unet.items()}, str(tmp_path / "s.safetensors"))
    with pytest.raises(NotMakeYourVideoError, match="contains no temporal layers"):
        load_temporal_layers(tmp_path / "s.safetensors")


def test_full_checkpoint_gives_its_temporal_layers(tmp_path, fixtures_dir):
    write_ckpt(tmp_path / "full.ckpt", tiny_full_checkpoint(fixtures_dir))
    assert len(load_temporal_layers(tmp_path / "full.ckpt")) == 920


def test_truncated_files(tmp_path, fixtures_dir):
    write_ckpt(tmp_path / "full.ckpt", tiny_full_checkpoint(fixtures_dir))
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_state_dict(tmp_path / "cut.ckpt")
    data = (fixtures_dir / "myv_tiny_unet.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_state_dict(tmp_path / "cut.safetensors")


def test_not_a_checkpoint_and_empty_and_missing(tmp_path):
    (tmp_path / "notes.ckpt").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a checkpoint at all"):
        load_state_dict(tmp_path / "notes.ckpt")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_state_dict(tmp_path / "empty.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "nope.ckpt")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match="unsupported file type"):
        load_state_dict(tmp_path / "model.gguf")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_that_would_run_code_is_refused(tmp_path, fixtures_dir):
    marker = tmp_path / "MARKER"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _RunsCode(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="never unpickles objects"):
        load_state_dict(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_no_pickle_load_without_weights_only():
    sources = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "tests" not in p.parts]
    offenders = [str(p) for p in sources if "weights_only=False" in p.read_text()]
    loads = [p for p in sources if "torch.load(" in p.read_text()]
    assert not offenders
    assert all("weights_only=True" in p.read_text() for p in loads)
