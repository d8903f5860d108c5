"""Splitting, deriving and converting checkpoints; every bad-input case gets its own message."""

import ast
import gc
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from myv_core.checkpoint import (CheckpointError, NotMakeYourVideoError, TemporalOnlyError,
                                 UnsafeCheckpointError, file_state_dict, load_checkpoint,
                                 load_state_dict, load_temporal_layers, split_checkpoint)
from myv_core import safe_pickle
from myv_core.config import FIXED_OFFICIAL, derive_config
from myv_core.layout import join_unet, temporal_sites
from myv_core.tensor_file import read
from myv_core.convert import main as convert_main, reassemble
from myv_core.depth_estimation import load_depth_estimator
from myv_core.temporal import TemporalLayers
from checkpoint_layouts import (FLAG, HOSTILE_CALLS, Reduces, file_mappings, globals_in, set_flag, unpickle,
                                write_hostile, write_training_checkpoints)
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


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_reading_maps_nothing_of_the_file(tmp_path, fixtures_dir, suffix):
    """Tensors read by the pack own their memory: none views a mapping of the file, even while they live.
    The control, torch.load(mmap=True), shows that the check sees a mapping where there is one."""
    sd = tiny_full_checkpoint(fixtures_dir)
    path = tmp_path / f"model{suffix}"
    write_ckpt(path, sd) if suffix == ".ckpt" else save_file(sd, str(path))
    index = file_state_dict(path)
    tensors = {k: read(v, torch.float16) for k, v in index.items()}
    assert file_mappings(path) == []
    assert_same_tensors(tensors, {k: v.half() if v.is_floating_point() else v for k, v in sd.items()})
    if suffix == ".ckpt":
        mapped = torch.load(path, mmap=True, weights_only=False, pickle_module=safe_pickle)
        assert len(file_mappings(path)) == 1
        del mapped
        gc.collect()  # the unpickled object graph holds reference cycles
        assert file_mappings(path) == []


# Run in a fresh process: the heap's state there does not depend on the tests that ran before.
FREED_BUFFERS = """
import torch
from myv_core.tensor_file import release_freed_memory
def anon():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))
torch.empty(16 << 20, dtype=torch.uint8).fill_(1)  # freed at once: glibc's mmap threshold rises to 16 MiB
buffers, in_use = [], []
for _ in range(64):  # 256 MiB from the heap now, each buffer followed by a small tensor that stays
    buffers.append(torch.ones(4 << 20, dtype=torch.uint8))
    in_use.append(torch.ones(1 << 10, dtype=torch.uint8))
before = anon()
del buffers
release_freed_memory()
print(before - anon())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc/self/status (Linux)")
def test_freed_read_buffers_do_not_stay_resident():
    """What a load leaves (few-MB buffers freed between blocks still in use) is not resident after
    release_freed_memory: glibc keeps such heap pages unless trimmed."""
    run = subprocess.run([sys.executable, "-c", FREED_BUFFERS], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) > 200 << 20


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


# ---- training-run layouts: one reader, the exact tensors, nothing run --------------------------

def assert_same_tensors(got, expected):
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, fixtures_dir):
    return write_training_checkpoints(tmp_path_factory.mktemp("layouts"), tiny_full_checkpoint(fixtures_dir))


LAYOUTS = ["lightning", "lightning_callback_class", "lightning_numpy1", "lightning_legacy", "omegaconf",
           "optimizer", "deepspeed"]


def test_layouts_hold_what_they_claim(layouts):
    """The files really carry the objects the reader must get past, under the names of their era."""
    names = {layout: globals_in(path) for layout, (path, _) in layouts.items() if layout != "lightning_legacy"}
    assert "omegaconf.dictconfig DictConfig" in names["lightning"]
    assert {"pytorch_lightning.callbacks.model_checkpoint ModelCheckpoint", "numpy._core.multiarray scalar",
            "argparse Namespace", "pathlib PosixPath", "numpy dtype"} <= names["lightning_callback_class"]
    assert "numpy.core.multiarray scalar" in names["lightning_numpy1"]
    assert not any(n.startswith("numpy._core") for n in names["lightning_numpy1"])
    assert not zipfile.is_zipfile(layouts["lightning_legacy"][0])
    assert "omegaconf.listconfig ListConfig" in names["omegaconf"]
    assert len(torch.load(layouts["lightning"][0], weights_only=False)["optimizer_states"][0]["state"]) == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_layouts_read_exactly(layouts, layout):
    path, expected = layouts[layout]
    assert_same_tensors(load_state_dict(path), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_layouts_through_converter_command_line(layouts, layout, tmp_path):
    path, expected = layouts[layout]
    run = subprocess.run([sys.executable, "-m", "myv_core.convert", str(path), "--out-dir", str(tmp_path),
                          "--name", "m"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"round trip verified: {len(expected)} tensors identical" in run.stdout
    files = [load_file(str(tmp_path / f"m_{part}.safetensors")) for part in ("spatial", "temporal", "depth")]
    assert_same_tensors(reassemble(*files), expected)


def test_everything_but_tensors_becomes_inert_stand_ins(layouts):
    checkpoint = torch.load(layouts["lightning_callback_class"][0], map_location="cpu", weights_only=False,
                            pickle_module=safe_pickle)
    (callback, state), = checkpoint["callbacks"].items()
    assert issubclass(callback, safe_pickle.Unpickled)
    assert callback.global_name == "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
    score = state["best_model_score"]
    assert isinstance(score, safe_pickle.Unpickled) and score.global_name == "numpy._core.multiarray.scalar"
    assert checkpoint["hyper_parameters"].global_name == "argparse.Namespace"
    assert isinstance(checkpoint["state_dict"], OrderedDict)


@pytest.mark.parametrize("name", sorted(HOSTILE_CALLS))
def test_code_running_globals_are_refused_and_nothing_runs(tmp_path, name):
    marker = tmp_path / "MARKER"
    func, args, global_name = HOSTILE_CALLS[name]
    write_hostile(tmp_path / "evil.ckpt", Reduces(func, *args(marker)), {"x": torch.zeros(1)})
    with pytest.raises(UnsafeCheckpointError, match=f"was refused: its pickle names {re.escape(global_name)}, "
                                                    "which runs code"):
        load_state_dict(tmp_path / "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("reader", [load_checkpoint, load_temporal_layers, load_depth_estimator])
def test_code_running_file_is_refused_by_every_reader(tmp_path, fixtures_dir, reader):
    marker = tmp_path / "MARKER"
    write_hostile(tmp_path / "evil.pt", Reduces(os.system, f"touch {marker}"), tiny_full_checkpoint(fixtures_dir))
    with pytest.raises(UnsafeCheckpointError, match="which runs code"):
        reader(tmp_path / "evil.pt")
    assert not marker.exists()


def test_os_system_file_through_converter_command_line(tmp_path):
    marker = tmp_path / "MARKER"
    write_hostile(tmp_path / "evil.ckpt", Reduces(os.system, f"touch {marker}"), {"x": torch.zeros(1)})
    run = subprocess.run([sys.executable, "-m", "myv_core.convert", str(tmp_path / "evil.ckpt"), "--out-dir",
                          str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"its pickle names {os.system.__module__}.system, which runs code" in run.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("payload, protocol", [
    (lambda m: Reduces(set_flag, str(m)), 2),  # a function of an importable test module
    (lambda m: Reduces(Path.touch, Path(m)), 2),  # a nested name: protocol 2 writes getattr(pathlib.Path, "touch")
    (lambda m: Reduces(Path.touch, Path(m)), 4),  # the same as the dotted name "Path.touch"
], ids=["test-module-function", "getattr-protocol-2", "dotted-name-protocol-4"])
def test_other_calls_are_neutralised(tmp_path, fixtures_dir, payload, protocol):
    marker = tmp_path / "MARKER"
    sd = tiny_full_checkpoint(fixtures_dir)
    write_hostile(tmp_path / "odd.ckpt", payload(marker), sd, protocol=protocol)
    assert_same_tensors(load_state_dict(tmp_path / "odd.ckpt"), sd)
    assert not marker.exists() and not FLAG


def test_reader_imports_nothing_the_file_names(tmp_path, monkeypatch):
    (tmp_path / "myv_import_probe.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import myv_import_probe
    torch.save({"state_dict": {"x": torch.ones(2)}, "thing": myv_import_probe.Thing()}, tmp_path / "probe.ckpt")
    monkeypatch.delitem(sys.modules, "myv_import_probe")
    assert torch.equal(load_state_dict(tmp_path / "probe.ckpt")["x"], torch.ones(2))
    assert "myv_import_probe" not in sys.modules


def _global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _text(value):
    data = value.encode()
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


@pytest.mark.parametrize("opcodes, error", [
    (_global("torch.nn.parameter", "Parameter") + pickle.EMPTY_DICT + _text("myv_planted") + pickle.NONE
     + pickle.SETITEM + pickle.BUILD, "sets the state of"),
    (_global("torch", "Size") + pickle.EMPTY_TUPLE + pickle.REDUCE + _text("k") + pickle.NONE + pickle.SETITEM,
     "adds items to a Size \\(SETITEM\\)"),
    (_text("not callable") + pickle.EMPTY_TUPLE + pickle.REDUCE, "calls 'not callable', not a global it names"),
    (_global("__builtin__", "getattr") + _global("torch", "Tensor") + _text("add") + pickle.TUPLE2 + pickle.REDUCE,
     "looks up 'add' on <class 'torch.Tensor'> with getattr"),
    (pickle.EXT1 + b"\x01", "copyreg extension code"),
    (_text("module") + pickle.TUPLE1 + pickle.BINPERSID, "loads persistent id \\('module',\\), not a storage"),
])
def test_operations_no_checkpoint_needs_are_forbidden(opcodes, error):
    with pytest.raises(safe_pickle.ForbiddenOperation, match=error):
        unpickle(pickle.PROTO + b"\x02" + opcodes + pickle.STOP)
    assert not hasattr(torch.nn.Parameter, "myv_planted")


class _BuildsSize:
    def __reduce__(self):
        return torch.Size, ((),), {"planted": 1}  # BUILD on a real torch.Size


def test_forbidden_operation_in_a_file_is_refused(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "size": _BuildsSize()}, tmp_path / "odd.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"its pickle sets the state of torch.Size\(\[\]\), which no "
                                                    "checkpoint needs; nothing in it was run"):
        load_state_dict(tmp_path / "odd.pt")


def test_allowed_globals_are_never_code_running():
    assert len(safe_pickle._ALLOWED) > 50
    assert not [name for name in safe_pickle._ALLOWED if safe_pickle.code_running(name)]


def test_getattr_reaching_a_command_is_refused():
    # posixpath.os is a stand-in (never looked up); getattr of it by name is checked like a global.
    opcodes = (_global("__builtin__", "getattr") + _global("posixpath", "os") + _text("system") + pickle.TUPLE2
               + pickle.REDUCE)
    with pytest.raises(safe_pickle.RefusedGlobal, match="posixpath.os.system"):
        unpickle(pickle.PROTO + b"\x02" + opcodes + pickle.STOP)


def test_torchscript_archive_is_not_loaded(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "program.pt"))
    with pytest.raises(CheckpointError, match="not a checkpoint at all but a TorchScript program"):
        load_state_dict(tmp_path / "program.pt")


def test_torch_force_weights_only_load(tmp_path, fixtures_dir, layouts, monkeypatch):
    """TORCH_FORCE_WEIGHTS_ONLY_LOAD binds torch.load: zip archives never reach it (the pack indexes
    them with safe_pickle), legacy pickles are read by torch's weights-only unpickler."""
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    write_ckpt(tmp_path / "plain.ckpt", tiny_full_checkpoint(fixtures_dir))
    assert_same_tensors(load_state_dict(tmp_path / "plain.ckpt"), tiny_full_checkpoint(fixtures_dir))
    assert_same_tensors(load_state_dict(layouts["lightning_numpy1"][0]), layouts["lightning_numpy1"][1])
    with pytest.raises(UnsafeCheckpointError, match="TORCH_FORCE_WEIGHTS_ONLY_LOAD is set"):
        load_state_dict(layouts["lightning_legacy"][0])


def test_every_pickle_load_is_weights_only_or_safe_pickle():
    """Outside the tests, torch.load is only called with weights_only=True or pickle_module=safe_pickle."""
    calls = []
    for source in ROOT.rglob("*.py"):
        if ".venv" in source.parts or "tests" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((source.name, keywords.get("weights_only"), keywords.get("pickle_module")))
    assert calls and all(wo == "True" or pm == "safe_pickle" for _, wo, pm in calls), calls
    assert ("checkpoint.py", "False", "safe_pickle") in calls
