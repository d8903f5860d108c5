"""The wrong and the odd, node by node: a correct result or a message naming the input and the fix."""

import gc
import os
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import comfy.model_patcher

from myv_core.checkpoint import CheckpointError, split_checkpoint
from tiny_models import UNET_PREFIX, tiny_unet

SIZE = 16
REFUSED_SYSTEM = f"its pickle names {os.system.__module__}.system, which runs code"


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def files(model_dir, fixtures_dir):
    """Checkpoint files of every wrong kind, by name, in the registered model folder."""
    sd = tiny_unet(fixtures_dir)
    parts = split_checkpoint(sd)
    save_file(sd, str(model_dir / "myv.safetensors"))
    save_file({UNET_PREFIX + k: v for k, v in parts.unet.items()}, str(model_dir / "plain_sd2.safetensors"))
    sdxl = {UNET_PREFIX + k: v for k, v in parts.unet.items()}
    sdxl["conditioner.embedders.1.model.ln_final.weight"] = torch.zeros(4)
    sdxl[UNET_PREFIX + "label_emb.0.0.weight"] = torch.zeros(4, 4)
    save_file(sdxl, str(model_dir / "sdxl_like.safetensors"))
    save_file(parts.temporal, str(model_dir / "temporal_only.safetensors"))
    data = (model_dir / "myv.safetensors").read_bytes()
    (model_dir / "truncated.safetensors").write_bytes(data[: len(data) // 3])
    (model_dir / "notes.ckpt").write_text("not weights")
    (model_dir / "empty.ckpt").write_bytes(b"")
    torch.save({"state_dict": sd, "payload": RunsCode(model_dir / "MARKER")}, model_dir / "evil.ckpt")
    return model_dir


@pytest.mark.parametrize("name, error", [
    ("plain_sd2.safetensors", "no temporal layers: not a Make-Your-Video checkpoint"),
    ("sdxl_like.safetensors", "no temporal layers: not a Make-Your-Video checkpoint"),
    ("temporal_only.safetensors", "holds only temporal layers"),
    ("truncated.safetensors", "truncated or corrupt"),
    ("notes.ckpt", "not a checkpoint at all"),
    ("empty.ckpt", "is empty"),
    ("evil.ckpt", REFUSED_SYSTEM),
    ("missing.safetensors", "was not found in models/makeyourvideo/"),
])
def test_checkpoint_loader_wrong_files(pack, files, name, error):
    with pytest.raises((CheckpointError, ValueError), match=error):
        pack.nodes.loaders.MYVCheckpointLoader().load(name, "auto")
    assert not (files / "MARKER").exists()


@pytest.mark.parametrize("name, error", [
    ("plain_sd2.safetensors", "contains no temporal layers"),
    ("notes.ckpt", "not a checkpoint at all"),
    ("evil.ckpt", REFUSED_SYSTEM),
])
def test_temporal_loader_wrong_files(pack, files, name, error):
    model = pack.nodes.loaders.MYVCheckpointLoader().load("myv.safetensors", "fp32")[0]
    with pytest.raises((CheckpointError, ValueError), match=error):
        pack.nodes.loaders.MYVTemporalModuleLoader().load(model, name)
    assert not (files / "MARKER").exists()


@pytest.fixture()
def video_model(pack, files):
    return pack.nodes.loaders.MYVCheckpointLoader().load("myv.safetensors", "fp32")[0]


def cond(tokens=77, seed=1):
    return [[torch.randn(1, tokens, 64, generator=torch.Generator().manual_seed(seed)), {}]]


def run(pack, model, frames=3, seed=0, steps=2, cfg=2.0, denoise=1.0, positive=None, latent=None, depth=None):
    depth = torch.rand(frames, 8 * SIZE, 8 * SIZE, 3, generator=torch.Generator().manual_seed(9)) if depth is None else depth
    latent = {"samples": torch.zeros(frames, 4, SIZE, SIZE)} if latent is None else latent
    return pack.nodes.sampling.MYVVideoKSampler().sample(
        model, positive or cond(), cond(seed=2), depth, latent, seed, steps, cfg, "euler", "normal", denoise,
        "per_frame")[0]["samples"]


@pytest.mark.parametrize("settings", [
    {"cfg": 0.0}, {"steps": 1}, {"denoise": 1.0}, {"seed": 0}, {"seed": 0xffffffffffffffff},
    {"positive": cond(tokens=77)}, {"positive": cond(tokens=7 * 77)},  # an empty prompt and ~500 tokens
    {"frames": 1},
])
def test_odd_but_valid_settings_give_finite_videos(pack, video_model, settings):
    frames = settings.get("frames", 3)
    out = run(pack, video_model, **settings)
    assert out.shape == (frames, 4, SIZE, SIZE) and torch.isfinite(out).all()


def test_denoise_zero_returns_the_input(pack, video_model):
    latent = {"samples": torch.randn(3, 4, SIZE, SIZE)}
    assert torch.equal(run(pack, video_model, denoise=0.0, latent=latent), latent["samples"])


@pytest.mark.parametrize("depth, latent, error", [
    (torch.rand(0, 64, 64, 3), {"samples": torch.zeros(0, 4, SIZE, SIZE)}, "depth video has no frames"),
    (torch.full((3, 64, 64, 3), float("inf")), None, "NaN or infinite"),
    (torch.rand(3, 64, 64, 3), {"samples": torch.zeros(1, 4, 3, SIZE, SIZE)}, "expected a 4D image latent"),
    (torch.rand(3, 64, 64, 3), {"samples": torch.zeros(2, 4, SIZE, SIZE)}, "depth has 3 frames but latent_image has 2"),
])
def test_bad_depth_and_latents_are_named(pack, video_model, depth, latent, error):
    with pytest.raises(ValueError, match=error):
        run(pack, video_model, depth=depth, latent=latent)


def test_depth_of_any_size_and_channel_count(pack, video_model):
    for channels in (1, 3, 4):
        depth = torch.rand(3, 37, 53, channels, generator=torch.Generator().manual_seed(channels))
        assert torch.isfinite(run(pack, video_model, depth=depth)).all()


def test_repeated_runs_leak_nothing(pack, video_model, tmp_path, monkeypatch):
    """30 runs: no growth in ModelPatcher objects, temporary files or resident memory after warm-up.
    The temporary folder is this test's own, so files that other processes on the machine create in
    the system's (a compiler's scratch files, say) cannot fail it."""
    def patchers():
        gc.collect()
        return sum(isinstance(o, comfy.model_patcher.ModelPatcher) for o in gc.get_objects())

    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    temp = Path(tempfile.gettempdir())
    counts, memory = {}, {}
    before_files = set(os.listdir(temp))
    for i in range(1, 31):
        run(pack, video_model, seed=i, steps=1)
        if i in (5, 30):
            counts[i], memory[i] = patchers(), rss()
    assert counts[30] == counts[5]
    assert memory[30] <= 1.05 * memory[5]
    assert set(os.listdir(temp)) - before_files == set()
