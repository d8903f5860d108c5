"""Checkpoint files in the layouts training runs write, made at test time with the real libraries.

write_training_checkpoints(folder, sd) fits a tiny LightningModule holding `sd` (official key names)
with a real pytorch_lightning Trainer, then writes every layout the pack must read, each with the
state dict it must give back. Also: pickles that would run code if unpickled normally.
"""

import argparse
import io
import os
import pickle
import subprocess
import types
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import numpy as np
import torch

FLAG = []  # set_flag appends here: proof that it ran


def set_flag(marker):
    """What a hostile pickle would call in a module that is importable: records that it ran."""
    FLAG.append(marker)
    Path(marker).touch()


class Reduces:
    """Pickles as a call of `func(*args)`, as a hostile file would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def module_of(sd):
    """An nn.Module whose state_dict() is `sd`: dotted keys become sub-modules, top-level keys buffers."""
    root = torch.nn.Module()
    for key, value in sd.items():
        *path, leaf = key.split(".")
        owner = root
        for name in path:
            if not hasattr(owner, name):
                owner.add_module(name, torch.nn.Module())
            owner = getattr(owner, name)
        if path:
            owner.register_parameter(leaf, torch.nn.Parameter(value.clone()))
        else:
            owner.register_buffer(leaf, value.clone())
    return root


def fit_lightning(folder, sd):
    """Path of the last.ckpt a real Trainer writes for a tiny model in the official layout.

    save_hyperparameters() with an omegaconf DictConfig, a ModelCheckpoint callback monitoring the
    logged loss, Adam with a StepLR scheduler, three training steps.
    """
    import pytorch_lightning as pl
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader, TensorDataset

    class TinyLatentDiffusion(pl.LightningModule):
        def __init__(self, config, weights):
            super().__init__()
            self.save_hyperparameters(config)
            for name, child in module_of(weights).named_children():
                self.add_module(name, child)
            for name, buffer in module_of(weights).named_buffers(recurse=False):
                self.register_buffer(name, buffer)

        def training_step(self, batch, index):
            weight = self.get_parameter("model.diffusion_model.input_blocks.0.0.weight")
            loss = (weight.sum() * batch[0].mean()) ** 2
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1)}

    config = OmegaConf.create({"model": {"base_learning_rate": 5e-5, "target": "lvdm.models.ddpm3d.LatentDiffusion",
                                         "params": {"channel_mult": [1, 2], "use_ema": False}}})
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=str(folder / "run"), monitor="train_loss", save_last=True)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[checkpoints], default_root_dir=str(folder))
    data = DataLoader(TensorDataset(torch.randn(6, 2, generator=torch.Generator().manual_seed(0))),
                                       batch_size=2)
    trainer.fit(TinyLatentDiffusion(config, sd), data)
    return Path(checkpoints.last_model_path)


class _Numpy1Pickler(pickle._Pickler):
    """Writes numpy globals under numpy 1 module names (numpy.core.*), as files from 2023 have them."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            self.write(pickle.GLOBAL + f"numpy.core{module[len('numpy._core'):]}\n{name or obj.__name__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


NUMPY1_PICKLE = types.SimpleNamespace(__name__="numpy1_pickle", Pickler=_Numpy1Pickler)  # for torch.save


def globals_in(path):
    """The GLOBAL names of a torch.save zip file's pickle, as 'module name' strings."""
    import pickletools
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def write_training_checkpoints(folder, sd):
    """{layout: (path, the state dict the file holds)} for every layout training runs leave."""
    from omegaconf import OmegaConf
    from pytorch_lightning.callbacks import ModelCheckpoint

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trained_path = fit_lightning(folder, sd)
    trained = torch.load(trained_path, weights_only=False)  # our own file: trusted
    trained_sd = trained["state_dict"]
    layouts = {}

    def write(name, obj, expected, **save_args):
        path = folder / f"{name}.ckpt"
        torch.save(obj, path, **save_args)
        layouts[name] = (path, expected)

    layouts["lightning"] = (folder / "lightning.ckpt", trained_sd)
    (folder / "lightning.ckpt").write_bytes(trained_path.read_bytes())
    # Older Lightning: callback state keyed by the callback class, numpy scores, Namespace hyper-parameters.
    old_style = dict(trained)
    old_style["callbacks"] = {ModelCheckpoint: {"best_model_score": np.float64(0.125), "best_model_path": "x.ckpt",
                                                "current_score": np.float32(0.25), "monitor": "train_loss"}}
    old_style["hyper_parameters"] = argparse.Namespace(logdir=PurePosixPath("logs/run"), seed=np.int64(23),
                                                       resume=Path("logs") / "last.ckpt", dtype=np.dtype("float16"))
    old_style["epoch"], old_style["global_step"] = np.int64(0), np.int64(3)
    write("lightning_callback_class", old_style, trained_sd)
    write("lightning_numpy1", old_style, trained_sd, pickle_module=NUMPY1_PICKLE)
    write("lightning_legacy", trained, trained_sd, _use_new_zipfile_serialization=False)
    config = OmegaConf.create({"model": {"params": {"unet_config": {"channel_mult": [1, 2]}}}, "lightning": {}})
    write("omegaconf", {"state_dict": sd, "config": config}, sd)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    optimizer.param_groups[0]["params"][0].grad = torch.ones(3)
    optimizer.step()
    scheduler.step()
    write("optimizer", {"state_dict": sd, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                        "epoch": 3}, sd)
    module = OrderedDict(("_forward_module." + k, v) for k, v in sd.items())
    write("deepspeed", {"module": module, "ds_version": "0.10.0", "ds_config": {"train_batch_size": 2},
                        "param_shapes": [OrderedDict((k, v.shape) for k, v in sd.items())],
                        "buffer_names": ["betas"], "optimizer": None}, sd)
    return layouts


def write_hostile(path, payload, sd, protocol=2):
    """A checkpoint whose pickle holds `payload` (something that pickles as a call) beside a state dict."""
    torch.save({"state_dict": sd, "epoch": 1, "payload": payload}, path, pickle_protocol=protocol)


HOSTILE_CALLS = {  # layout name: (callable, arguments given the marker path, the global the file names)
    "os.system": (os.system, lambda m: (f"touch {m}",), f"{os.system.__module__}.system"),
    "subprocess.call": (subprocess.call, lambda m: (["touch", str(m)],), "subprocess.call"),
    "builtins.eval": (eval, lambda m: (f"open({str(m)!r}, 'w')",), "builtins.eval"),
    "builtins.exec": (exec, lambda m: (f"open({str(m)!r}, 'w')",), "builtins.exec"),
    "builtins.__import__": (__import__, lambda m: ("os",), "builtins.__import__"),
}


def unpickle(data):
    """safe_pickle on raw pickle bytes."""
    from myv_core import safe_pickle
    return safe_pickle.load(io.BytesIO(data))


def file_mappings(path):
    """The lines of /proc/self/maps that map `path` into this process."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        return [line for line in f if line.rstrip().endswith(" " + real)]
