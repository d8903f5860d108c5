"""The Make-Your-Video UNet's architecture, read off its weights alone.

Nothing here trusts a config file or ComfyUI's detection (which only accepts the full-width SD2
UNet): the same code derives the released 1.6B model and the tiny test models.
"""

from dataclasses import dataclass

from .layout import RELATIVE_TABLE, TEMPORAL_CONV

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
