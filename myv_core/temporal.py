"""The temporal layers that turn the SD2 UNet into the Make-Your-Video 3D UNet.

Plain torch modules in the style of ComfyUI's model families: constructors take `dtype`, `device`
and an `operations` namespace (Linear, Conv3d, GroupNorm, LayerNorm; torch.nn by default) so the
host decides about casting and offloading. Attribute names follow the official checkpoint, so
official weights load with strict=True. Every forward takes and returns (batch, channels,
frames, height, width); the GroupNorms therefore see all frames of a video at once, as trained.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import temporal_attention

# Rows (sequences x frames) that a TemporalTransformer's blocks take at a time on the CPU. After the
# GroupNorm every sequence is independent, so chunks give the same result; 2048 rows keep the
# feed-forward's 8x-wide intermediate (20 MiB in fp32 at 320 channels) in the last-level cache, where
# its bias, GELU and product passes are several times cheaper than from memory
# (benchmarks/temporal_block.py). GPUs take the whole batch at once.
CPU_CHUNK_ROWS = 2048


class NormActConv(nn.Sequential):
    """GroupNorm -> SiLU [-> Dropout slot] -> Conv3d, padding the frame axis itself when asked.

    The official temporal kernels pad by replicating the edge frames (padding_mode="replicate").
    Here that padding is done before the convolution, which gets none on the frame axis: a conv
    path that passes only `self.padding` to the backend (comfy.ops calls torch.cudnn_convolution
    directly for half precision on some cuDNN versions) would otherwise zero-pad the edge frames.
    """

    def __init__(self, *layers, frame_pad=0):
        super().__init__(*layers)
        self.frame_pad = frame_pad

    def forward(self, x):
        *head, conv = self
        for layer in head:
            x = layer(x)
        if self.frame_pad:
            x = F.pad(x, (0, 0, 0, 0, self.frame_pad, self.frame_pad), mode="replicate")
        return conv(x)


class TemporalConvBlock(nn.Module):
    """Residual stack of 3D convolutions over frames (`temopral_conv` in the checkpoint).

    Four blocks GroupNorm -> SiLU -> Conv3d with kernels (3,1,1), (1,3,3), (3,1,1), (3,1,1), then
    `conv_last` (3,1,1). Temporal kernels pad by replicating the edge frames (see NormActConv), the
    spatial one pads with zeros. The Identity entries stand where the official model has Dropout,
    which keeps the official parameter indices (conv.1.3, conv_last.3, ...) and is a no-op at
    inference.
    """

    def __init__(self, channels, dtype=None, device=None, operations=nn):
        super().__init__()
        ops, kw = operations, {"dtype": dtype, "device": device}

        def block(kernel, dropout_slot=True):
            temporal = kernel[0] > 1
            layers = [ops.GroupNorm(32, channels, **kw), nn.SiLU()]
            if dropout_slot:
                layers.append(nn.Identity())
            padding = (0, 0, 0) if temporal else (0, kernel[1] // 2, kernel[2] // 2)
            layers.append(ops.Conv3d(channels, channels, kernel, padding=padding, **kw))
            return NormActConv(*layers, frame_pad=kernel[0] // 2 if temporal else 0)

        self.conv = nn.Sequential(
            block((3, 1, 1), dropout_slot=False),
            block((1, 3, 3)),
            block((3, 1, 1)),
            block((3, 1, 1)),
        )
        self.conv_last = block((3, 1, 1))

    def forward(self, x):
        return x + self.conv_last(self.conv(x))


class RelativePosition(nn.Module):
    """A learned table of (2 * max_distance + 1, head_dim) relative-position embeddings."""

    def __init__(self, head_dim, max_distance, dtype=None, device=None):
        super().__init__()
        self.embeddings_table = nn.Parameter(
            torch.empty(2 * max_distance + 1, head_dim, dtype=dtype, device=device))


class TemporalSelfAttention(nn.Module):
    """Multi-head self-attention over frames with the causal band mask and relative positions."""

    def __init__(self, dim, heads, head_dim, temporal_length, dtype=None, device=None,
                 operations=nn, attention=temporal_attention):
        super().__init__()
        inner = heads * head_dim
        kw = {"dtype": dtype, "device": device}
        self.heads = heads
        self.attention = attention
        self.to_q = operations.Linear(dim, inner, bias=False, **kw)
        self.to_k = operations.Linear(dim, inner, bias=False, **kw)
        self.to_v = operations.Linear(dim, inner, bias=False, **kw)
        self.to_out = nn.Sequential(operations.Linear(inner, dim, **kw))
        self.relative_position_k = RelativePosition(head_dim, temporal_length, **kw)
        self.relative_position_v = RelativePosition(head_dim, temporal_length, **kw)

    def forward(self, x):
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        # The tables are bare parameters: under low-VRAM offload they may sit on another device
        # or dtype than the activations, so they follow q here.
        rel_k = self.relative_position_k.embeddings_table.to(q)
        rel_v = self.relative_position_v.embeddings_table.to(q)
        return self.to_out(self.attention(q, k, v, rel_k, rel_v, self.heads))


class GEGLU(nn.Module):
    def __init__(self, dim, inner, dtype=None, device=None, operations=nn):
        super().__init__()
        self.proj = operations.Linear(dim, inner * 2, dtype=dtype, device=device)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return F.gelu(gate).mul_(x)  # in place: GELU's output is a fresh tensor, one allocation less


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4, dtype=None, device=None, operations=nn):
        super().__init__()
        inner = dim * mult
        # The Identity holds the official Dropout's index so the output layer stays `net.2`.
        self.net = nn.Sequential(
            GEGLU(dim, inner, dtype=dtype, device=device, operations=operations),
            nn.Identity(),
            operations.Linear(inner, dim, dtype=dtype, device=device),
        )

    def forward(self, x):
        return self.net(x)


class TemporalTransformerBlock(nn.Module):
    """attn1 and attn2 are BOTH masked self-attention over frames ("temporal_selfatt_only")."""

    def __init__(self, dim, heads, head_dim, temporal_length, dtype=None, device=None,
                 operations=nn, attention=temporal_attention):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        attn = dict(kw, operations=operations, attention=attention)
        self.attn1 = TemporalSelfAttention(dim, heads, head_dim, temporal_length, **attn)
        self.ff = FeedForward(dim, operations=operations, **kw)
        self.attn2 = TemporalSelfAttention(dim, heads, head_dim, temporal_length, **attn)
        self.norm1 = operations.LayerNorm(dim, **kw)
        self.norm2 = operations.LayerNorm(dim, **kw)
        self.norm3 = operations.LayerNorm(dim, **kw)

    def forward(self, x):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x)) + x
        return self.ff(self.norm3(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm over the whole clip, then every spatial position attends over its frames."""

    def __init__(self, channels, heads, head_dim, temporal_length=16, depth=1, dtype=None,
                 device=None, operations=nn, attention=temporal_attention):
        super().__init__()
        inner = heads * head_dim
        kw = {"dtype": dtype, "device": device}
        self.norm = operations.GroupNorm(32, channels, eps=1e-6, **kw)
        self.proj_in = operations.Linear(channels, inner, **kw)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(inner, heads, head_dim, temporal_length,
                                     operations=operations, attention=attention, **kw)
            for _ in range(depth))
        self.proj_out = operations.Linear(inner, channels, **kw)

    def sequences(self, y):
        """proj_in, the blocks and proj_out on (sequences, frames, channels)."""
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y)
        return self.proj_out(y)

    def forward(self, x):
        b, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        chunk = max(1, CPU_CHUNK_ROWS // t) if y.device.type == "cpu" else y.shape[0]
        if chunk >= y.shape[0]:
            y = self.sequences(y)
        else:
            y = torch.cat([self.sequences(part) for part in y.split(chunk)])
        return x + y.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)


@dataclass(frozen=True)
class TemporalSite:
    """Where one temporal layer sits, in the official key layout and in ComfyUI's SD2 UNet.

    prefix: its key prefix in the official UNet, e.g. "input_blocks.1.0.temopral_conv" or
      "middle_block.2".
    block, index: the ComfyUI TimestepEmbedSequential it joins ("input_blocks", 1), index None for
      "middle_block".
    after: the position, in ComfyUI's layout of that block, of the layer it follows (the ResBlock
      for a temporal conv, the SpatialTransformer for a temporal transformer).
    kind: "conv" or "transformer"; channels, heads, head_dim, temporal_length, depth describe it.
    """
    prefix: str
    block: str
    index: object
    after: int
    kind: str
    channels: int
    heads: int = 0
    head_dim: int = 0
    temporal_length: int = 0
    depth: int = 0


class TemporalLayers(nn.Module):
    """All temporal layers of one model, registered under their official key prefixes.

    `state_dict()` keys are exactly the official temporal keys (without "model.diffusion_model."),
    so the layers load from a released checkpoint or a converted temporal file with strict=True.
    """

    def __init__(self, sites, dtype=None, device=None, operations=nn,
                 attention=temporal_attention):
        super().__init__()
        self.sites = tuple(sites)
        for site in self.sites:
            self._place(site.prefix, build_temporal_layer(
                site, dtype=dtype, device=device, operations=operations, attention=attention))

    def _place(self, prefix, module):
        *path, name = prefix.split(".")
        parent = self
        for part in path:
            if part not in parent._modules:
                parent.add_module(part, nn.ModuleDict())
            parent = parent._modules[part]
        parent.add_module(name, module)

    def layer(self, site):
        return self.get_submodule(site.prefix)

    def placed(self):
        """(site, module) pairs in site order."""
        return [(site, self.layer(site)) for site in self.sites]


def build_temporal_layer(site, dtype=None, device=None, operations=nn,
                         attention=temporal_attention):
    if site.kind == "conv":
        return TemporalConvBlock(site.channels, dtype=dtype, device=device, operations=operations)
    return TemporalTransformer(site.channels, site.heads, site.head_dim, site.temporal_length,
                               depth=site.depth, dtype=dtype, device=device,
                               operations=operations, attention=attention)
