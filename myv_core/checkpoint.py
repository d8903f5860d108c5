"""Reading Make-Your-Video checkpoints safely and taking them apart.

A released `model.ckpt` holds the whole LatentDepthDiffusion. `split_checkpoint` cuts it into the
parts the host needs: the spatial SD2 UNet renumbered to ComfyUI's layout, the temporal layers
under their official names, the VAE, the text encoder, the depth network, the diffusion schedule
buffers and any EMA copy. Every key lands in exactly one part, or the split fails naming the rest.
"""

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import safe_pickle
from .config import UNetConfig, derive_config
from .layout import split_parts, split_unet, unet_keys
from .tensor_file import FileError, FileTensor, read, safetensors_index, zip_index

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
LIGHTNING_WRAPPER = "_forward_module."


class CheckpointError(ValueError):
    """A checkpoint the pack cannot use; the message says what the file is and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would run code if unpickled normally: refused, nothing of it run."""


class NotMakeYourVideoError(CheckpointError):
    """A checkpoint without temporal layers (plain SD, SDXL, ...)."""


class TemporalOnlyError(CheckpointError):
    """Only temporal layers where a full model was expected."""


def _describe(path):
    return f"'{Path(path).name}'"


def file_state_dict(path):
    """{name: FileTensor} of a .safetensors file or a torch.save pickle, Lightning/DeepSpeed nesting removed.

    The one reader of weights for every path (loader nodes, converter, depth estimator loader): the
    file is indexed, not read (see tensor_file), and a loader reads each tensor as it places it. A
    pickle is read by safe_pickle: everything it holds besides tensors (training state,
    hyper-parameters, numpy scalars, ...) is replaced by inert stand-ins and dropped, and nothing in
    the file is imported or called. Legacy (pre-1.6, non-zip) pickles come back as tensors in memory.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{_describe(path)} does not exist: check the file name and folder.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{_describe(path)} is empty (0 bytes): the download or copy failed; "
                              "fetch the file again.")
    if path.suffix.lower() == ".safetensors":
        try:
            return safetensors_index(path)[0]
        except (FileError, OSError) as e:
            raise CheckpointError(f"{_describe(path)} is not a readable safetensors file ({e}): it is "
                                  "truncated or corrupt; fetch it again.") from None
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise CheckpointError(f"{_describe(path)}: unsupported file type '{path.suffix}'; expected "
                              ".safetensors, .ckpt, .pt, .pth or .bin.")
    return unwrap_state_dict(_load_pickle(path), path)


def load_state_dict(path):
    """file_state_dict with every tensor read into memory (for callers that need them all at once)."""
    sd = file_state_dict(path)
    try:
        return {k: read(v) for k, v in sd.items()}
    except FileError as e:
        raise CheckpointError(f"{_describe(path)}: {e}") from None


def _load_pickle(path):
    """The object pickled in a torch.save file, read by safe_pickle: nothing in it run.

    A zip archive (torch >= 1.6) is indexed, its tensors left in the file; a legacy pickle, whose tensor
    data follows the pickle, is read whole by torch.load.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # zip archive / pickle protocol 2+
        raise CheckpointError(f"{_describe(path)} is not a checkpoint at all (neither a PyTorch zip archive nor "
                              "a pickle): check that you picked the right file, or fetch it again.")
    is_zip = head.startswith(b"PK")
    if is_zip and _is_torchscript(path):
        raise CheckpointError(f"{_describe(path)} is not a checkpoint at all but a TorchScript program "
                              "(torch.jit.save), which the pack never loads: pick the checkpoint file itself.")
    if not is_zip and _torch_forces_weights_only():
        return _load_weights_only(path)
    try:
        if is_zip:
            return zip_index(path)
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=safe_pickle)
    except FileError as e:
        raise CheckpointError(f"{_describe(path)} could not be read as a PyTorch checkpoint: {e}.") from None
    except safe_pickle.RefusedGlobal as e:
        raise UnsafeCheckpointError(
            f"{_describe(path)} was refused: its pickle names {e.global_name}, which runs code when a "
            "pickle is loaded. A training run never writes that, so the file was made to attack whoever "
            "loads it; nothing in it was run. Delete it and use the original release file, or a "
            ".safetensors copy from someone you trust.") from None
    except safe_pickle.ForbiddenOperation as e:
        raise UnsafeCheckpointError(
            f"{_describe(path)} was refused: its pickle {e}, which no checkpoint needs; nothing in it was "
            "run. Use the original release file, or a .safetensors copy from someone you trust.") from None
    except Exception as e:  # damaged files: zipfile, pickle and torch raise RuntimeError, KeyError, EOFError, ...
        raise _unreadable(path, e) from None


def _unreadable(path, error):
    detail = str(error).splitlines()[0][:160] if str(error) else "no detail"
    return CheckpointError(
        f"{_describe(path)} could not be read as a PyTorch checkpoint ({type(error).__name__}: {detail}): it is "
        "truncated, corrupt or not a checkpoint at all; fetch it again.")


def _is_torchscript(path):
    """A torch.jit.save archive (torch.load would hand it to torch.jit.load): it has constants.pkl."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:  # e.g. truncated: torch could not read it either
        raise _unreadable(path, e) from None
    return any(name.split("/", 1)[-1] == "constants.pkl" for name in names)


def _torch_forces_weights_only():
    # torch.load then reads every pickle with its own weights-only unpickler and refuses any pickle_module.
    return os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0") in ("1", "y", "yes", "true")


def _load_weights_only(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{_describe(path)} was refused: it contains pickled Python objects other than tensors "
            f"({_unpickler_reason(e)}), and TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, so PyTorch reads pickles "
            "only with its weights-only unpickler. Unset the variable (the pack's own reader returns only "
            "the tensors and runs nothing from a file), or convert the file once with "
            "`python -m myv_core.convert` in a shell without it.") from None
    except Exception as e:
        raise _unreadable(path, e) from None


def _unpickler_reason(error):
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip().startswith(("Unsupported", "Trying to load"))]
    return lines[0][:200] if lines else "unsupported pickle content"


def unwrap_state_dict(obj, path="checkpoint"):
    """The flat name -> tensor dict inside a Lightning ("state_dict") or DeepSpeed ("module") file."""
    for nest in ("state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(nest), dict):
            obj = obj[nest]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{_describe(path)} holds no state dict (found {type(obj).__name__}).")
    if all(k.startswith(LIGHTNING_WRAPPER) for k in obj):
        obj = {k[len(LIGHTNING_WRAPPER):]: v for k, v in obj.items()}
    tensors = {k: v for k, v in obj.items() if isinstance(v, (torch.Tensor, FileTensor))}
    if len(tensors) != len(obj):
        others = sorted(k for k in obj if k not in tensors)[:5]
        raise CheckpointError(f"{_describe(path)} is not a state dict: entries {others} are not tensors.")
    return tensors


@dataclass
class CheckpointParts:
    """A Make-Your-Video checkpoint taken apart. Keys carry no part prefix.

    unet: spatial SD2 UNet in ComfyUI's layout; temporal: official temporal keys; config: the
    architecture derived from the official-layout UNet.
    """
    config: UNetConfig = None
    unet: dict = field(default_factory=dict)
    temporal: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)
    text_encoder: dict = field(default_factory=dict)
    depth: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=dict)
    ema: dict = field(default_factory=dict)


def split_checkpoint(sd, name="checkpoint"):
    """CheckpointParts of a full Make-Your-Video state dict; raises CheckpointError otherwise."""
    split, unet_sd, unplaced = split_parts(sd)
    parts = CheckpointParts(**split)
    check_full_model(parts, name)  # first: an SDXL or SD1.5 file should hear what it is, not list keys
    if unplaced:
        shown = ", ".join(sorted(unplaced)[:10])
        more = f" and {len(unplaced) - 10} more" if len(unplaced) > 10 else ""
        raise CheckpointError(f"{name}: {len(unplaced)} keys belong to no known part of a "
                              f"Make-Your-Video checkpoint: {shown}{more}.")
    parts.config = derive_config(unet_sd)
    return parts


def check_full_model(parts, name):
    """Explain what a file is when it is not a full Make-Your-Video model."""
    if not parts.unet and parts.temporal:
        raise TemporalOnlyError(
            f"{name} holds only temporal layers, no spatial UNet: load the spatial SD2 model first "
            "and add this file with the 'MYV Temporal Module Loader' node, or pick the full "
            "Make-Your-Video checkpoint here.")
    if not parts.unet:
        raise NotMakeYourVideoError(
            f"{name} contains no diffusion UNet: it is not a Make-Your-Video checkpoint "
            "(is it a VAE, a text encoder or a depth model?).")
    if not parts.temporal:
        raise NotMakeYourVideoError(
            f"{name} has no temporal layers: not a Make-Your-Video checkpoint (plain Stable "
            "Diffusion, SDXL, or the spatial half written by the converter); load it with the core "
            "'Load Checkpoint' node, and add temporal layers with 'MYV Temporal Module Loader'.")
    if "input_blocks.0.0.weight" not in parts.unet:
        raise CheckpointError(f"{name}: the UNet has no input convolution (input_blocks.0.0.weight); "
                              "the file is incomplete.")


def load_checkpoint(path):
    """CheckpointParts of a full Make-Your-Video checkpoint file, its tensors still in the file."""
    sd = file_state_dict(path)
    return split_checkpoint(sd, _describe(path))


def temporal_layers_of(sd, name="file"):
    """The temporal-layer weights of a temporal-only file or of a full Make-Your-Video checkpoint."""
    unet_sd, _ = unet_keys(sd)
    _, temporal = split_unet(unet_sd)
    if not temporal:
        raise NotMakeYourVideoError(
            f"{name} contains no temporal layers (it looks like a spatial SD checkpoint): pick the "
            "*_temporal.safetensors file written by `python -m myv_core.convert`, or the full "
            "Make-Your-Video model.ckpt.")
    return temporal


def load_temporal_layers(path):
    """The temporal layers of a file, still in the file."""
    return temporal_layers_of(file_state_dict(path), _describe(path))
