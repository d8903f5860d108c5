"""The only place that touches ComfyUI's model internals.

A Make-Your-Video MODEL is a clone of an SD2 ModelPatcher with:
- the temporal layers in their own ModelPatcher (set_additional_models), so ComfyUI's VRAM manager
  loads, offloads and accounts for them like any model;
- a PatcherInjection that inserts them into the UNet's TimestepEmbedSequential blocks when the
  model is loaded and removes them afterwards (ON_CLEANUP), so the shared base UNet is left as it was;
- a forward_timestep_embed patch that reshapes the frames-as-batch activations to
  (batch, channels, frames, h, w) for them;
- with a depth video (with_depth), wrappers that follow the frames of every UNet call (the whole
  clip, a core context window, an AnimateDiff-Evolved window, or a long-video window): APPLY_MODEL
  tells the temporal layers how many frames the call holds (from the batch and ComfyUI's cond/uncond
  chunks) and supplies the depth channel for exactly those frames; CALC_COND_BATCH narrows per-frame
  conds (prompt schedules) to them; OUTER_SAMPLE refuses a schedule that does not fit the clip;
- the inpaint concat path switched off (object patch `concat_keys = ()`).
No global state: everything a call needs travels in transformer_options or in the clone.
"""

import logging

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.ops
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
from comfy.patcher_extension import CallbacksMP, PatcherInjection, WrappersMP

from ..myv_core.layout import temporal_sites
from ..myv_core.depth import depth_to_latent
from ..myv_core.temporal import TemporalConvBlock, TemporalLayers, TemporalTransformer
from ..myv_core.tensor_file import load_into

KEY = "makeyourvideo"
TEMPORAL_TYPES = (TemporalConvBlock, TemporalTransformer)
HOST_TYPES = {"conv": ResBlock, "transformer": SpatialTransformer}


def unet_of(model):
    return model.model.diffusion_model


def host_block(unet, site):
    blocks = getattr(unet, site.block)
    return blocks if site.index is None else blocks[site.index]


def check_fits(model, sites):
    """Raise a ValueError naming the first place where the temporal layers do not fit the UNet."""
    unet = unet_of(model)
    in_channels = unet.input_blocks[0][0].weight.shape[1]
    if in_channels != 5:
        raise ValueError(
            f"model: this UNet takes {in_channels} input channels, Make-Your-Video needs 5 (4 latent + "
            "depth). Load the Make-Your-Video checkpoint with 'MYV Checkpoint Loader', or its converted "
            "*_spatial.safetensors with the core 'Load Checkpoint'.")
    for site in sites:
        where = f"{site.block}" + (f".{site.index}" if site.index is not None else "") + f".{site.after}"
        try:
            host = host_block(unet, site)[site.after]
        except (IndexError, AttributeError):
            host = None
        expected = HOST_TYPES[site.kind]
        channels = getattr(host, "out_channels", getattr(host, "in_channels", None))
        if not isinstance(host, expected) or channels != site.channels:
            raise ValueError(
                f"temporal layers do not fit this model: {site.prefix} expects a {expected.__name__} with "
                f"{site.channels} channels at {where}, found {type(host).__name__}"
                f"{'' if channels is None else f' with {channels} channels'}. Use the SD2 UNet that "
                "belongs to these temporal layers.")


def model_patcher_class(disable_dynamic=False):
    """The ModelPatcher class core loaders use: ModelPatcherDynamic under dynamic VRAM (ComfyUI sets
    CoreModelPatcher at start-up when comfy-aimdo works; it falls back to ModelPatcher on CPU load
    devices), plain ModelPatcher on ComfyUI versions without dynamic VRAM or when a non-dynamic
    model is asked for (cached_patcher_init factories get disable_dynamic=True)."""
    if disable_dynamic:
        return comfy.model_patcher.ModelPatcher
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def temporal_patcher(temporal_sd, sites, model, disable_dynamic=False):
    """A ModelPatcher holding the temporal layers at `sites` (temporal_sites of temporal_sd), wholly
    in the base model's weight dtype, computing in its manual-cast dtype."""
    base = model.model
    dtype = base.get_dtype()
    operations = comfy.ops.pick_operations(dtype, base.manual_cast_dtype,
                                           fp8_optimizations=base.model_config.optimizations.get("fp8", False))
    offload = comfy.model_management.unet_offload_device()
    layers = TemporalLayers(sites, dtype=dtype, device=offload, operations=operations)
    missing, unexpected = load_into(layers, temporal_sd, dtype)
    if missing or unexpected:
        raise ValueError(f"temporal layers: the weights do not fit the layers derived from them: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}")
    return model_patcher_class(disable_dynamic)(layers, load_device=model.load_device, offload_device=offload)


def reload_temporal_patcher(read_temporal, sites, model, disable_dynamic=False):
    """The temporal layers' cached_patcher_init: ComfyUI 0.33 builds a non-dynamic delegate, or a copy
    for another GPU, from it; neither may share the weights of a dynamic patcher, so they are read again."""
    return temporal_patcher(read_temporal(), sites, model, disable_dynamic)


def _is_dynamic(patcher):
    return getattr(patcher, "is_dynamic", lambda: False)()


def _match_dynamic(patcher, clone):
    """ON_CLONE: a non-dynamic clone of a dynamic model (core TorchCompileModel, hooked conds, CPU
    device selection on 0.33) gets non-dynamic temporal layers too. Additional models are cloned as
    they are, and a dynamic patcher's weights are not plain tensors that torch.compile can trace."""
    temporal = patcher.get_additional_models_with_key(KEY)
    if temporal and _is_dynamic(temporal[0]) and not _is_dynamic(clone):
        clone.set_additional_models(KEY, [temporal[0].get_non_dynamic_delegate()])


def _temporal_layers(patcher):
    return patcher.get_additional_models_with_key(KEY)[0].model


def _inject(patcher):
    unet = unet_of(patcher)
    placed = sorted(_temporal_layers(patcher).placed(), key=lambda sm: -sm[0].after)
    for site, layer in placed:
        block = host_block(unet, site)
        if not any(m is layer for m in block):
            block.insert(site.after + 1, layer)


def _remove(block, i):
    """del block[i], keeping the type of block._modules: Sequential.__delitem__ rebuilds it as an
    OrderedDict, and torch.compile guards that type, so the next run would compile the UNet again."""
    modules = block._modules
    last = len(modules) - 1
    for j in range(i, last):
        modules[str(j)] = modules[str(j + 1)]
    del modules[str(last)]


def _eject(patcher):
    unet = unet_of(patcher)
    for block in (*unet.input_blocks, unet.middle_block, *unet.output_blocks):
        for i in reversed(range(len(block))):
            if isinstance(block[i], TEMPORAL_TYPES):
                _remove(block, i)


def _run_temporal(layer, x, emb, context, transformer_options, *args):
    """forward_timestep_embed patch: (batch*frames, c, h, w) -> layer on (batch, c, frames, h, w)."""
    frames = transformer_options[KEY]["frames"]
    bt, c, h, w = x.shape
    video = x.reshape(bt // frames, frames, c, h, w).transpose(1, 2)
    return layer(video).transpose(1, 2).reshape(bt, c, h, w)


def window_frames(window):
    """The clip frames a core context window hands the UNet, in order.

    ComfyUI 0.33's causal_window_fix (on by default) puts an anchor frame, the one before the
    window, in front of index_list (IndexListContextWindow.get_tensor); older versions have none.
    """
    anchor = getattr(window, "causal_anchor_index", None)
    return ([anchor] if anchor is not None and anchor >= 0 else []) + list(window.index_list)


def call_frames(transformer_options, frames):
    """Which frames of the sampled latent a call of `frames` frames holds, and whether it is a window.

    AnimateDiff-Evolved's context options name them in ad_params["sub_idxs"] (a key of its promised
    interface), core context windows in "context_window". ADE leaves its last window's sub_idxs in
    ad_params for the calls outside its windows (the next step's whole-clip calls reach the wrappers
    that run outside ADE's own), so they describe a call only when their count is the call's.
    """
    sub_idxs = (transformer_options.get("ad_params") or {}).get("sub_idxs")
    if sub_idxs is not None and len(sub_idxs) == frames:
        return [int(i) for i in sub_idxs], True
    window = transformer_options.get("context_window")
    if window is not None:
        return window_frames(window), True
    return list(range(frames)), False


def frame_rows(value, clip_frames):
    """The tensor of a cond entry if it holds one row per clip frame (a prompt schedule), else None."""
    tensor = getattr(value, "cond", value)
    if isinstance(tensor, torch.Tensor) and tensor.ndim > 0 and tensor.shape[0] == clip_frames > 1:
        return tensor
    return None


def cond_for_frames(cond, clip_frames, index):
    """One of ComfyUI's cond dicts with every per-frame entry narrowed to the clip frames in `index`:
    tensors (cross_attn, pooled_output, ...) and model_conds (CONDRegular and kin, whose .cond is the
    tensor). What core context windows do for their windows, on the frame axis of this model."""
    out = dict(cond)
    for key, value in cond.items():
        if key == "model_conds":
            out[key] = {name: c._copy_with(rows[index]) if (rows := frame_rows(c, clip_frames)) is not None else c
                        for name, c in value.items()}
        elif isinstance(value, torch.Tensor) and frame_rows(value, clip_frames) is not None:
            out[key] = value[index]
    return out


class VideoCall:
    """The wrappers that make sampling see one depth video (and per-frame conds) across the clip.

    APPLY_MODEL: the frame count of this UNet call and its depth channel. Frames travel as the batch
    of a 4D latent; ComfyUI stacks the cond/uncond chunks on the batch axis, so a call holds
    len(cond_or_uncond) copies of its frames. A call holds the whole latent, a core context window
    or an AnimateDiff-Evolved window of it (call_frames); the long-video sampler samples latents
    made of the clip frames `latent_frames`.
    CALC_COND_BATCH: conds with one row per clip frame (prompt travel) narrowed to the call's frames,
    wherever the windowing itself did not (MYV Long Video Sampler's windows, ComfyUI 0.3.64's core
    windows, which slice no model_conds on dim 0).
    OUTER_SAMPLE: a cond whose row count is neither 1 nor the clip's frame count is refused before
    anything loads.
    """

    def __init__(self, depth=None, normalize="per_frame", latent_frames=None):
        self.depth = depth  # (frames, 1, H, W) float32 for the whole clip, or None
        self.normalize = normalize
        self.latent_frames = None if latent_frames is None else list(latent_frames)
        self._latent_depth = {}  # (h, w, device) -> the whole clip's channel; one entry, the last size

    def __call__(self, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        chunks = len(transformer_options.get("cond_or_uncond", (0,)))
        frames = x.shape[0] // chunks
        options = dict(transformer_options)
        options[KEY] = {"frames": frames}
        if self.depth is not None:
            index = self.clip_frames(transformer_options, frames)
            c_concat = self.latent_depth(x.shape[-2], x.shape[-1], x.device)[index].to(x.dtype).repeat(chunks, 1, 1, 1)
        elif c_concat is None:
            raise ValueError("this Make-Your-Video model has no depth: connect a depth video with "
                             "'MYV Apply Depth' (or use 'MYV Video KSampler') before sampling.")
        return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)

    def clip_frames(self, transformer_options, frames):
        """The clip frames of a call that holds `frames` frames, checked against the depth video."""
        index, windowed = call_frames(transformer_options, frames)
        if len(index) != frames:
            raise ValueError(f"this context window holds {frames} latent frames but lists {len(index)}: "
                             "set the context windows' dim to 0 for Make-Your-Video (its frames are "
                             "the batch axis).")
        whole_clip = not windowed and self.latent_frames is None
        if self.latent_frames is not None:
            index = [self.latent_frames[i] for i in index]
        total = self.depth.shape[0]
        if (len(index) != total) if whole_clip else (max(index) >= total):
            latent = str(len(index)) if whole_clip else f"at least {max(index) + 1}"
            raise ValueError(f"depth has {total} frames but the latent has {latent}: give one depth "
                             "map per latent frame (e.g. the same frame selection for both).")
        return index

    def narrow_conds(self, executor, model, conds, x_in, timestep, model_options):
        """CALC_COND_BATCH wrapper: per-frame conds narrowed to the frames of this call.

        A call of as many frames as the clip needs nothing: it is the whole clip, or a window of the
        same length that AnimateDiff-Evolved (whose wrapper may run inside or outside this one) has
        already given its own rows.
        """
        total = self.depth.shape[0]
        if self.latent_frames is not None or x_in.shape[0] != total:
            index = self.clip_frames(model_options.get("transformer_options", {}), x_in.shape[0])
            conds = [None if c is None else [cond_for_frames(d, total, index) for d in c] for c in conds]
        return executor(model, conds, x_in, timestep, model_options)

    def check_conds(self, executor, *args, **kwargs):
        """OUTER_SAMPLE wrapper: every cond has 1 row or one per clip frame."""
        total = self.depth.shape[0]
        for name, conds in (executor.class_obj.conds or {}).items():
            for cond in conds:
                for key in ("cross_attn", "pooled_output"):
                    value = cond.get(key)
                    if isinstance(value, torch.Tensor) and value.shape[0] not in (1, total):
                        raise ValueError(
                            f"{name} conditioning: its {key} has {value.shape[0]} rows but the video has {total} "
                            f"frames. A prompt schedule needs exactly one row per frame ({total}); a plain prompt "
                            "has 1. Set the schedule's frame count (MYV Prompt Schedule's frame_count, "
                            "max_frames in other packs) to the depth video's.")
        return executor(*args, **kwargs)

    def latent_depth(self, height, width, device):
        """The whole clip's depth channel at the latent size, computed once per size instead of per step.

        Normalised over the whole clip, so per-clip statistics ignore windowing.
        """
        key = (height, width, str(device))
        if key not in self._latent_depth:
            self._latent_depth = {key: depth_to_latent(self.depth.to(device), height, width, self.normalize)}
        return self._latent_depth[key]


def _eject_after_sampling(patcher):
    patcher.eject_model()


def attach_temporal(model, temporal_sd, read_temporal=None):
    """A clone of `model` that runs as the Make-Your-Video 3D UNet; `model` itself is not touched.

    read_temporal: reads `temporal_sd` again from its file, for the non-dynamic delegates of ComfyUI
    0.33 (without it, as with a custom loader that registers no cached_patcher_init, core refuses them).
    """
    sites = temporal_sites(temporal_sd)
    check_fits(model, sites)
    m = model.clone()
    m.add_object_patch("concat_keys", ())
    temporal = temporal_patcher(temporal_sd, sites, model)
    if read_temporal is not None:
        temporal.cached_patcher_init = (reload_temporal_patcher, (read_temporal, sites, model))
    m.set_additional_models(KEY, [temporal])
    m.set_injections(KEY, [PatcherInjection(inject=_inject, eject=_eject)])
    for layer_type in TEMPORAL_TYPES:
        m.set_model_forward_timestep_embed_patch((layer_type, _run_temporal))
    m.remove_wrappers_with_key(WrappersMP.APPLY_MODEL, KEY)
    m.add_wrapper_with_key(WrappersMP.APPLY_MODEL, KEY, VideoCall())
    m.remove_callbacks_with_key(CallbacksMP.ON_CLEANUP, KEY)
    m.add_callback_with_key(CallbacksMP.ON_CLEANUP, KEY, _eject_after_sampling)
    m.remove_callbacks_with_key(CallbacksMP.ON_CLONE, KEY)
    m.add_callback_with_key(CallbacksMP.ON_CLONE, KEY, _match_dynamic)
    logging.info("Make-Your-Video: %d temporal layers attached", len(sites))
    return m


def is_video_model(model):
    return bool(model.get_additional_models_with_key(KEY))


def with_depth(model, depth, normalize, latent_frames=None):
    """A clone of a Make-Your-Video MODEL whose every UNet call gets this depth video as channel 5,
    and whose per-frame conds follow the frames of each call.

    latent_frames: the clip frames that the latents sampled with this clone hold, in order
    (long-video windows); None when they hold the whole clip.
    """
    if not is_video_model(model):
        raise ValueError("model: not a Make-Your-Video model; load it with 'MYV Checkpoint Loader' or "
                         "add temporal layers with 'MYV Temporal Module Loader' first.")
    m = model.clone()
    call = VideoCall(depth, normalize, latent_frames)
    for kind, wrapper in ((WrappersMP.APPLY_MODEL, call), (WrappersMP.CALC_COND_BATCH, call.narrow_conds),
                          (WrappersMP.OUTER_SAMPLE, call.check_conds)):
        m.remove_wrappers_with_key(kind, KEY)
        m.add_wrapper_with_key(kind, KEY, wrapper)
    return m
