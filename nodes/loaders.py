"""MYVCheckpointLoader and MYVTemporalModuleLoader, and the pack's model folders."""

import functools
import logging
import os

import torch

import comfy.model_management
import comfy.sd
import comfy.supported_models
import folder_paths

from ..myv_core.checkpoint import CheckpointError, load_checkpoint, load_temporal_layers
from ..myv_core.tensor_file import load_into, read, release_freed_memory
from .patching import attach_temporal, model_patcher_class

MODEL_FOLDER = "makeyourvideo"
# The fp8 entries store the weights in fp8 and compute in the manual-cast dtype, as core "Load
# Diffusion Model" does; "_fast" also lets ComfyUI use fp8 matrix multiplication where the GPU has it.
WEIGHT_DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
                 "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                 "fp8_e5m2": torch.float8_e5m2}
FAST_FP8 = "fp8_e4m3fn_fast"
# The text encoder follows a 16-bit weight_dtype (half its memory; core "Load CLIP" offers the same);
# fp8 ones leave it to ComfyUI, which computes text encoders in 16 or 32 bits.
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def register_model_folder(name, extensions):
    folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
    # add_model_folder_path registers an empty extension set, which would list every file.
    folder_paths.folder_names_and_paths[name][1].update(extensions)


register_model_folder(MODEL_FOLDER, folder_paths.supported_pt_extensions)


def model_files():
    """Files of the makeyourvideo folder first, then the checkpoints folder."""
    own = folder_paths.get_filename_list(MODEL_FOLDER)
    return own + [f for f in folder_paths.get_filename_list("checkpoints") if f not in own]


def model_path(name):
    for folder in (MODEL_FOLDER, "checkpoints"):
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    raise ValueError(f"ckpt_name: '{name}' was not found in models/{MODEL_FOLDER}/ or models/checkpoints/; "
                     "put the file there and refresh the browser.")


def sd2_unet_config(config):
    """ComfyUI's UNetModel arguments for the spatial part of a Make-Your-Video UNetConfig."""
    levels = range(len(config.channel_mult))
    depth = [config.transformer_depth if level in config.attention_levels else 0 for level in levels]
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "model_channels": config.model_channels,
        "num_res_blocks": [config.num_res_blocks] * len(depth),
        "transformer_depth": [d for d in depth for _ in range(config.num_res_blocks)],
        "transformer_depth_output": [d for d in depth for _ in range(config.num_res_blocks + 1)],
        "channel_mult": list(config.channel_mult),
        "transformer_depth_middle": config.transformer_depth if config.middle_attention else -1,
        "use_linear_in_transformer": config.use_linear,
        "context_dim": config.context_dim,
        "use_temporal_resblock": False,
        "use_temporal_attention": False,
    }


def build_spatial_model(parts, weight_dtype, fp8_optimizations=False, disable_dynamic=False):
    """The SD2 UNet as a ComfyUI ModelPatcher, configured from the weights, not from detection."""
    config = parts.config
    model_config = comfy.supported_models.SD20(sd2_unet_config(config))
    model_config.unet_config["num_head_channels"] = config.head_dim  # SD20 forces 64
    model_config.optimizations["fp8"] = fp8_optimizations
    parameters = sum(v.numel() for v in parts.unet.values()) + sum(v.numel() for v in parts.temporal.values())
    load_device = comfy.model_management.get_torch_device()
    dtype = weight_dtype or comfy.model_management.unet_dtype(
        model_params=parameters, supported_dtypes=model_config.supported_inference_dtypes)
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model({}, device=comfy.model_management.unet_inital_load_device(parameters, dtype))
    # Cast before loading: under dynamic VRAM comfy.ops Linears adopt the tensors they are given.
    missing, unexpected = load_into(model.diffusion_model, parts.unet, dtype)
    if missing or unexpected:
        raise CheckpointError(f"the UNet weights do not match the SD2 layout derived from them: missing "
                              f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model_patcher_class(disable_dynamic)(
        model, load_device=load_device, offload_device=comfy.model_management.unet_offload_device()), model_config


def spatial_model(parts, weight_dtype, disable_dynamic=False):
    """build_spatial_model for a weight_dtype name of MYV Checkpoint Loader."""
    return build_spatial_model(parts, WEIGHT_DTYPES[weight_dtype], weight_dtype == FAST_FP8, disable_dynamic)


def load_spatial_patcher(path, weight_dtype, disable_dynamic=False):
    """MYV Checkpoint Loader's cached_patcher_init, as core loaders register theirs: ComfyUI 0.33 builds
    the UNet again from it for a non-dynamic clone (core TorchCompileModel, hooked conds) or another GPU."""
    return spatial_model(load_checkpoint(path), weight_dtype, disable_dynamic)[0]


def build_clip(parts, model_config, name, dtype=None):
    """The checkpoint's text encoder as a ComfyUI CLIP, in `dtype` (None: ComfyUI's choice for the device)."""
    if not parts.text_encoder:
        logging.warning("Make-Your-Video: %s has no text encoder; CLIP output is None (load an SD2 "
                        "OpenCLIP-H text encoder separately).", name)
        return None
    if dtype is None:  # what comfy.sd.CLIP would pick (fp16 on every device unless told otherwise)
        dtype = comfy.model_management.text_encoder_dtype(comfy.model_management.text_encoder_device())
    clip = comfy.sd.CLIP(model_config.clip_target(), embedding_directory=folder_paths.get_folder_paths("embeddings"),
                         parameters=sum(v.numel() for v in parts.text_encoder.values()), model_options={"dtype": dtype})
    # Read in the CLIP's dtype and converted one module at a time, as core's converter names them: the
    # encoder is never held twice (a whole state dict beside the model took 0.66 GiB more in fp16).
    missing, _ = load_into(clip.cond_stage_model, parts.text_encoder, dtype, lambda tensors: (
        model_config.process_clip_state_dict({"cond_stage_model." + k: v for k, v in tensors.items()})))
    missing = [k for k in missing if ".logit_scale" not in k and "text_projection" not in k]
    if missing:
        logging.warning("Make-Your-Video: text encoder missing keys %s", missing[:10])
    return clip


def build_vae(parts, model_config, name):
    if not parts.vae:
        logging.warning("Make-Your-Video: %s has no VAE; VAE output is None (load an SD VAE separately).", name)
        return None
    return comfy.sd.VAE(sd=model_config.process_vae_state_dict({k: read(v) for k, v in parts.vae.items()}))


class MYVCheckpointLoader:
    """Loads a Make-Your-Video checkpoint: SD2 UNet + temporal layers, OpenCLIP-H text encoder, VAE."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (model_files(), {"tooltip": f"model.ckpt (or .safetensors) in models/{MODEL_FOLDER}/ or models/checkpoints/"}),
            "weight_dtype": (list(WEIGHT_DTYPES), {"default": "auto", "tooltip":
                             "auto: what ComfyUI picks for this device. fp16/bf16: the text encoder too. "
                             "fp8_*: a quarter of fp32's weight memory, computing in fp16/bf16; _fast also "
                             "uses fp8 matrix multiplication on GPUs that have it."}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "MakeYourVideo"
    DESCRIPTION = "Loads the Make-Your-Video depth-guided video model. CLIP or VAE is None when the file has none."

    def load(self, ckpt_name, weight_dtype):
        path = model_path(ckpt_name)
        parts = load_checkpoint(path)
        base, model_config = spatial_model(parts, weight_dtype)
        base.cached_patcher_init = (load_spatial_patcher, (path, weight_dtype))
        model = attach_temporal(base, parts.temporal, functools.partial(load_temporal_layers, path))
        vae = build_vae(parts, model_config, ckpt_name)  # before the CLIP: its whole state dict is briefly held
        clip = build_clip(parts, model_config, ckpt_name, HALF_DTYPES.get(weight_dtype))
        del parts
        release_freed_memory()
        return model, clip, vae


class MYVTemporalModuleLoader:
    """Adds Make-Your-Video temporal layers to a 5-channel SD2 MODEL (e.g. the converter's spatial file)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "temporal_name": (model_files(), {"tooltip": "*_temporal.safetensors from the converter, or a full Make-Your-Video checkpoint"}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "MakeYourVideo"

    def load(self, model, temporal_name):
        read = functools.partial(load_temporal_layers, model_path(temporal_name))
        model = attach_temporal(model, read(), read)
        release_freed_memory()
        return (model,)
