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
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import safe_pickle
from .config import UNetConfig, derive_config, is_temporal_key, submodule_of, temporal_transformer_prefixes

UNET_PREFIX = "model.diffusion_model."
PART_PREFIXES = {
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.",
    "depth": "depth_stage_model.",
    "ema": "model_ema.",
}
# Buffers and parameters of the official DDPM wrapper: the noise schedule and its by-products.
SCHEDULE_KEYS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "scale_factor", "scale_arr", "logvar",
})
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


def load_state_dict(path):
    """Tensors of a .safetensors file or a torch.save pickle, with Lightning/DeepSpeed nesting removed.

    The one reader of weights for every path (loader nodes, converter, depth estimator loader). A
    pickle is read by safe_pickle: its tensors come back memory-mapped, everything else it holds
    (training state, hyper-parameters, numpy scalars, ...) is replaced by inert stand-ins and
    dropped, and nothing in the file is imported or called.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{_describe(path)} does not exist: check the file name and folder.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{_describe(path)} is empty (0 bytes): the download or copy failed; "
                              "fetch the file again.")
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{_describe(path)} is not a readable safetensors file ({e}): it is "
                                  "truncated or corrupt; fetch it again.") from None
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise CheckpointError(f"{_describe(path)}: unsupported file type '{path.suffix}'; expected "
                              ".safetensors, .ckpt, .pt, .pth or .bin.")
    return unwrap_state_dict(_load_pickle(path), path)


def _load_pickle(path):
    """The object pickled in a torch.save file, read by safe_pickle: tensors real, nothing else run."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # zip archive / pickle protocol 2+
        raise CheckpointError(f"{_describe(path)} is not a checkpoint at all (neither a PyTorch zip archive nor "
                              "a pickle): check that you picked the right file, or fetch it again.")
    is_zip = head.startswith(b"PK")
    if is_zip and _is_torchscript(path):
        raise CheckpointError(f"{_describe(path)} is not a checkpoint at all but a TorchScript program "
                              "(torch.jit.save), which the pack never loads: pick the checkpoint file itself.")
    if _torch_forces_weights_only():
        return _load_weights_only(path, is_zip)
    try:
        # The zip archive is memory-mapped: tensors are views of the file, read as they are used.
        return torch.load(path, map_location="cpu", weights_only=False, mmap=is_zip, pickle_module=safe_pickle)
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
    except Exception as e:  # torch reports damaged files as RuntimeError, KeyError, EOFError, ...
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


def _load_weights_only(path, is_zip):
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
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
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
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


def _unet_keys_of(sd):
    """The UNet keys of a state dict: under "model.diffusion_model.", or bare (UNet-only files)."""
    if any(k.startswith(UNET_PREFIX) for k in sd):
        return {k[len(UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}, UNET_PREFIX
    if any(submodule_of(k) for k in sd):
        return {k: v for k, v in sd.items() if submodule_of(k) or k.startswith(("time_embed.", "out."))}, ""
    return {}, UNET_PREFIX


def split_unet(unet_sd):
    """(spatial UNet renumbered to ComfyUI's SD2 layout, temporal layers under official keys).

    Removing each temporal transformer closes its gap in the block: the sub-modules after it move
    up by one (middle_block.3 -> .2, output_blocks.N.3 -> .2 for the upsamplers).
    """
    tt_prefixes = temporal_transformer_prefixes(unet_sd)
    temporal = {k: v for k, v in unet_sd.items() if is_temporal_key(k, tt_prefixes)}
    renumber = _renumbering({k for k in unet_sd if k not in temporal})
    spatial = {}
    for key, value in unet_sd.items():
        if key in temporal:
            continue
        sub = submodule_of(key)
        if sub is None:
            spatial[key] = value
        else:
            block, index = sub
            rest = key[len(f"{block}.{index}."):]
            spatial[f"{block}.{renumber[block][index]}.{rest}"] = value
    return spatial, temporal


def _renumbering(spatial_keys):
    subs = {}
    for key in spatial_keys:
        sub = submodule_of(key)
        if sub:
            subs.setdefault(sub[0], set()).add(sub[1])
    return {block: {old: new for new, old in enumerate(sorted(s))} for block, s in subs.items()}


def join_unet(spatial, temporal):
    """The official-layout UNet from ComfyUI-layout spatial weights and temporal layers (inverse of split_unet)."""
    tt_subs = {}
    for prefix in temporal_transformer_prefixes(temporal):
        block, index = submodule_of(prefix + ".")
        tt_subs.setdefault(block, set()).add(index)
    spatial_subs = {}
    for key in spatial:
        sub = submodule_of(key)
        if sub:
            spatial_subs.setdefault(sub[0], set()).add(sub[1])
    renumber = {}
    for block, subs in spatial_subs.items():
        official = (i for i in range(len(subs) + len(tt_subs.get(block, ())))
                    if i not in tt_subs.get(block, ()))
        renumber[block] = dict(zip(sorted(subs), official))
    joined = dict(temporal)
    for key, value in spatial.items():
        sub = submodule_of(key)
        if sub is None:
            joined[key] = value
        else:
            block, index = sub
            joined[f"{block}.{renumber[block][index]}.{key[len(f'{block}.{index}.'):]}"] = value
    return joined


def split_checkpoint(sd, name="checkpoint"):
    """CheckpointParts of a full Make-Your-Video state dict; raises CheckpointError otherwise."""
    unet_sd, unet_prefix = _unet_keys_of(sd)
    parts = CheckpointParts()
    unplaced = []
    for key, value in sd.items():
        if unet_prefix and key.startswith(unet_prefix) or (not unet_prefix and key in unet_sd):
            continue
        part = next((p for p, prefix in PART_PREFIXES.items() if key.startswith(prefix)), None)
        if part is not None:
            getattr(parts, part)[key[len(PART_PREFIXES[part]):]] = value
        elif key in SCHEDULE_KEYS:
            parts.schedule[key] = value
        else:
            unplaced.append(key)

    parts.unet, parts.temporal = split_unet(unet_sd)
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
    """CheckpointParts of a full Make-Your-Video checkpoint file."""
    return split_checkpoint(load_state_dict(path), _describe(path))


def temporal_layers_of(sd, name="file"):
    """The temporal-layer weights of a temporal-only file or of a full Make-Your-Video checkpoint."""
    unet_sd, _ = _unet_keys_of(sd)
    _, temporal = split_unet(unet_sd)
    if not temporal:
        raise NotMakeYourVideoError(
            f"{name} contains no temporal layers (it looks like a spatial SD checkpoint): pick the "
            "*_temporal.safetensors file written by `python -m myv_core.convert`, or the full "
            "Make-Your-Video model.ckpt.")
    return temporal


def load_temporal_layers(path):
    return temporal_layers_of(load_state_dict(path), _describe(path))


def cast_state_dict(sd, dtype):
    """The same tensors in `dtype` (tensors already in it are passed through, not copied).

    Loading into modules built in `dtype` is not enough to get that dtype: under ComfyUI's dynamic
    VRAM (comfy-aimdo), comfy.ops Linear layers allocate nothing at construction and adopt the
    tensors of the state dict as they are, so an fp32 file would leave fp32 Linears in an fp16 model.
    """
    return {k: v.to(dtype) for k, v in sd.items()}
