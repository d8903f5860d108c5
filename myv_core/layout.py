"""The key layout of Make-Your-Video checkpoints, in one place.

Which part of the LatentDepthDiffusion a key belongs to (UNet, VAE, text encoder, depth network,
schedule buffers, EMA), which UNet keys are temporal layers and where each sits, and the renumbering
between the official UNet and ComfyUI's SD2 UNet (a temporal transformer removed from a block closes
its gap). Keys and shapes only: values pass through untouched, so this works on tensors, tensors
still in their file, or meta tensors alike. Reading files is checkpoint.py's; the architecture
read off the shapes is config.py's.
"""

import re

from .temporal import TemporalSite

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
TEMPORAL_CONV = ".temopral_conv."  # sic: the typo is in the official checkpoint keys
RELATIVE_TABLE = ".transformer_blocks.0.attn1.relative_position_k.embeddings_table"
_BLOCKS = ("input_blocks", "middle_block", "output_blocks")
_SUBMODULE = re.compile(r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.(\d+)\.")


def submodule_of(key):
    """("input_blocks.4", 2) for "input_blocks.4.2.norm.weight"; None for keys outside blocks."""
    m = _SUBMODULE.match(key)
    return (m.group(1), int(m.group(2))) if m else None


def temporal_transformer_prefixes(unet_sd):
    """Prefixes ("middle_block.2", ...) of the temporal transformers, found by their tables."""
    return sorted(k[:-len(RELATIVE_TABLE)] for k in unet_sd if k.endswith(RELATIVE_TABLE))


def is_temporal_key(key, transformer_prefixes):
    return TEMPORAL_CONV in key or any(key.startswith(p + ".") for p in transformer_prefixes)


def temporal_sites(temporal_sd):
    """Every temporal layer described by its weights, in UNet order (input, middle, output)."""
    tt_prefixes = temporal_transformer_prefixes(temporal_sd)
    tt_by_block = {}
    for prefix in tt_prefixes:
        block, sub = submodule_of(prefix + ".")
        tt_by_block.setdefault(block, []).append(sub)

    sites = []
    for key in temporal_sd:
        if key.endswith(TEMPORAL_CONV + "conv.0.0.weight"):
            prefix = key[:-len(".conv.0.0.weight")]
            kind = "conv"
        elif key.endswith(RELATIVE_TABLE):
            prefix = key[:-len(RELATIVE_TABLE)]
            kind = "transformer"
        else:
            continue
        block, sub = submodule_of(prefix + ".")
        shift = sum(1 for s in tt_by_block.get(block, ()) if s < sub)
        # A conv lives inside the ResBlock at `sub`; a transformer follows the spatial one at sub-1.
        after = sub - shift if kind == "conv" else sub - 1 - shift
        name, _, index = block.partition(".")
        common = dict(prefix=prefix, block=name, index=int(index) if index else None, after=after)
        if kind == "conv":
            sites.append(TemporalSite(kind="conv", channels=temporal_sd[key].shape[0], **common))
        else:
            table = temporal_sd[key]
            inner = temporal_sd[prefix + ".proj_in.weight"].shape[0]
            depth = len({k for k in temporal_sd if k.startswith(prefix + ".transformer_blocks.")
                         and k.endswith(".attn1.to_q.weight")})
            sites.append(TemporalSite(
                kind="transformer", channels=temporal_sd[prefix + ".norm.weight"].shape[0],
                heads=inner // table.shape[1], head_dim=table.shape[1],
                temporal_length=(table.shape[0] - 1) // 2, depth=depth, **common))
    return sorted(sites, key=lambda s: (_BLOCKS.index(s.block), s.index or 0, s.after, s.kind))


def unet_keys(sd):
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


def split_parts(sd):
    """(parts, official-layout UNet, unplaced keys) of a full state dict.

    parts maps "unet" (ComfyUI's SD2 layout), "temporal" (official keys), "vae", "text_encoder",
    "depth", "ema" and "schedule" to their keys without part prefix.
    """
    unet_sd, unet_prefix = unet_keys(sd)
    parts = {name: {} for name in (*PART_PREFIXES, "schedule")}
    unplaced = []
    for key, value in sd.items():
        if unet_prefix and key.startswith(unet_prefix) or (not unet_prefix and key in unet_sd):
            continue
        part = next((p for p, prefix in PART_PREFIXES.items() if key.startswith(prefix)), None)
        if part is not None:
            parts[part][key[len(PART_PREFIXES[part]):]] = value
        elif key in SCHEDULE_KEYS:
            parts["schedule"][key] = value
        else:
            unplaced.append(key)
    parts["unet"], parts["temporal"] = split_unet(unet_sd)
    return parts, unet_sd, unplaced
