"""The Make-Your-Video UNet's architecture, read off its weights alone.

Nothing here trusts a config file or ComfyUI's detection (which only accepts the full-width SD2
UNet): the same code derives the released 1.6B model and the tiny test models.
"""

import re
from dataclasses import dataclass

from .temporal import TemporalSite

TEMPORAL_CONV = ".temopral_conv."  # sic: the typo is in the official checkpoint keys
RELATIVE_TABLE = ".transformer_blocks.0.attn1.relative_position_k.embeddings_table"
_BLOCKS = ("input_blocks", "middle_block", "output_blocks")
_SUBMODULE = re.compile(r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.(\d+)\.")

# Architecture facts of the released model family that its weights cannot show: the causal band
# is a non-persistent mask, gradient checkpointing is a training switch.
FIXED_OFFICIAL = {"use_causal_attention": True, "causal_block_size": 1, "use_checkpoint": False}


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple
    num_res_blocks: int
    attention_levels: tuple  # indices of the levels with spatial (and temporal) transformers
    transformer_depth: int
    middle_attention: bool
    context_dim: int
    use_linear: bool
    head_dim: int
    temporal_length: int
    temporal_conv: bool
    tempspatial_aware: bool
    temporal_attention: bool

    @property
    def attention_resolutions(self):
        return [2 ** level for level in reversed(self.attention_levels)]

    def official(self):
        """The config in the official implementation's vocabulary (inference yaml names)."""
        return dict(
            FIXED_OFFICIAL,
            in_channels=self.in_channels, out_channels=self.out_channels,
            model_channels=self.model_channels, attention_resolutions=self.attention_resolutions,
            num_res_blocks=self.num_res_blocks, channel_mult=list(self.channel_mult),
            num_head_channels=self.head_dim, transformer_depth=self.transformer_depth,
            context_dim=self.context_dim, use_linear=self.use_linear,
            temporal_conv=self.temporal_conv, tempspatial_aware=self.tempspatial_aware,
            temporal_attention=self.temporal_attention,
            temporal_selfatt_only=self.temporal_attention, use_relative_position=True,
            temporal_length=self.temporal_length, addition_attention=False,
        )


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


def derive_config(unet_sd):
    """UNetConfig of an official-layout UNet state dict (keys without "model.diffusion_model.")."""
    conv_in = unet_sd["input_blocks.0.0.weight"]
    model_channels, in_channels = conv_in.shape[0], conv_in.shape[1]
    n_input = 1 + max(int(k.split(".")[1]) for k in unet_sd if k.startswith("input_blocks."))

    levels, current = [], []
    for i in range(1, n_input):
        if f"input_blocks.{i}.0.op.weight" in unet_sd:  # downsampler closes a level
            levels.append(current)
            current = []
        else:
            current.append(i)
    levels.append(current)

    res_per_level = {len(blocks) for blocks in levels}
    if len(res_per_level) != 1:
        raise ValueError(f"unsupported UNet: levels have different numbers of res blocks {levels}")
    channel_mult = tuple(
        unet_sd[f"input_blocks.{blocks[0]}.0.in_layers.2.weight"].shape[0] // model_channels
        for blocks in levels)
    attention_levels = tuple(
        level for level, blocks in enumerate(levels) if f"input_blocks.{blocks[0]}.1.norm.weight" in unet_sd)

    first_attn = f"input_blocks.{levels[attention_levels[0]][0]}.1"
    depth = len({k for k in unet_sd if k.startswith(first_attn + ".transformer_blocks.")
                 and k.endswith(".attn1.to_q.weight")})
    tables = [v for k, v in unet_sd.items() if k.endswith(RELATIVE_TABLE)]
    conv1 = [v for k, v in unet_sd.items() if k.endswith(TEMPORAL_CONV + "conv.1.3.weight")]
    return UNetConfig(
        in_channels=in_channels,
        out_channels=unet_sd["out.2.weight"].shape[0],
        model_channels=model_channels,
        channel_mult=channel_mult,
        num_res_blocks=res_per_level.pop(),
        attention_levels=attention_levels,
        transformer_depth=depth,
        middle_attention="middle_block.1.norm.weight" in unet_sd,
        context_dim=unet_sd[first_attn + ".transformer_blocks.0.attn2.to_k.weight"].shape[1],
        use_linear=unet_sd[first_attn + ".proj_in.weight"].ndim == 2,
        head_dim=tables[0].shape[1] if tables else 0,
        temporal_length=(tables[0].shape[0] - 1) // 2 if tables else 0,
        temporal_conv=bool(conv1),
        tempspatial_aware=bool(conv1) and tuple(conv1[0].shape[2:]) == (1, 3, 3),
        temporal_attention=bool(tables),
    )
