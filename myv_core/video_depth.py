"""Video Depth Anything (Chen et al., CVPR 2025): one consistent relative depth for a whole clip.

The network is Depth Anything's (a DINOv2 encoder, a DPT head) with four temporal "motion modules"
in the head, where every spatial position attends over the frames of a 32-frame window. The encoder
and the head's convolutions are transformers' own building blocks (Dinov2Model, DepthAnythingNeck,
DepthAnythingDepthEstimationHead); the motion modules and the windowed inference are written here.
Pure torch + transformers; never imports ComfyUI. Weights are read and renamed in depth_estimation.

A clip is run as the official `infer_video_depth` runs it: windows of INFER_LEN frames, each starting
INFER_LEN - OVERLAP frames after the previous one, whose first OVERLAP inputs are KEYFRAMES of the
previous window's input (the clip's first frame, one from the middle and the last eight, which the
new window sees again). Each window's depth gets the least-squares scale and shift that maps its
first two key frames onto their aligned depth from before, and its first INTERP_LEN aligned frames
are cross-faded with the previous window's last ones. The end is padded with the last frame.
Unlike the official code, which keeps every preprocessed frame and every window's depth until the
end, windows are processed and aligned one at a time, so memory besides the result is bounded.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .temporal import FeedForward

INFER_LEN = 32
OVERLAP = 10
KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
INTERP_LEN = 8
ALIGN_FRAMES = OVERLAP - INTERP_LEN  # key frames 0 and 12 fit the scale and shift
INPUT_SIZE = 518
PATCH = 14
# Wider clips get a smaller input size, as in the official code ("memory limitation").
MAX_ASPECT = 1.78
MOTION_HEADS = 8
# Metric depth (metres) below this is taken as this when inverted: the network's ReLU can give 0.
METRIC_NEAREST = 1e-2
# Encoder layers whose outputs the head reassembles, by encoder depth (ViT-S/B: 12, ViT-L: 24).
READOUT_LAYERS = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23)}
# Positions (rows of frames) a motion module's blocks take at a time: every position is independent
# after the per-frame GroupNorm, so chunks give the same result; 4096 rows keep the feed-forward's
# intermediate of the widest module (384 channels, 8x wide in GEGLU) near 1.6 GiB in fp32 at most.
MOTION_CHUNK_ROWS = 4096


def vda_input_size(height, width, input_size=INPUT_SIZE):
    """The official short-side size for a (height, width) clip: input_size, lowered for clips wider
    than MAX_ASPECT (to about input_size * 1.777 / aspect, a multiple of PATCH)."""
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT:
        input_size = round(int(input_size * 1.777 / ratio) / PATCH) * PATCH
    return input_size


def sinusoid(frames, channels, device, dtype):
    """(frames, channels) absolute position encoding: sin on even channels, cos on odd ones."""
    position = torch.arange(frames, dtype=torch.float32, device=device)[:, None]
    rate = torch.exp(torch.arange(0, channels, 2, device=device).float() * (-math.log(10000.0) / channels))
    table = torch.zeros(frames, channels, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)
    return table.to(dtype)


class FrameAttention(nn.Module):
    """Self-attention over frames; the position encoding is added to its input (keys too)."""

    def __init__(self, channels, heads=MOTION_HEADS):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Sequential(nn.Linear(channels, channels))

    def forward(self, x):
        """(rows, frames, channels) -> same."""
        rows, frames, channels = x.shape
        x = x + sinusoid(frames, channels, x.device, x.dtype)
        q, k, v = (proj(x).view(rows, frames, self.heads, -1).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(rows, frames, channels))


class MotionBlock(nn.Module):
    """Two pre-norm frame attentions, then a GEGLU feed-forward (official names)."""

    def __init__(self, channels):
        super().__init__()
        self.attention_blocks = nn.ModuleList(FrameAttention(channels) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(2))
        self.ff = FeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, x):
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class MotionModule(nn.Module):
    """A residual temporal transformer on a (frames, channels, height, width) feature map.

    Unlike Make-Your-Video's temporal layers (myv_core.temporal), the GroupNorm sees one frame at a
    time; only the attention mixes frames.
    """

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([MotionBlock(channels)])
        self.proj_out = nn.Linear(channels, channels)

    def rows(self, y):
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y)
        return self.proj_out(y)

    def forward(self, x):
        frames, channels, height, width = x.shape
        y = self.norm(x).permute(2, 3, 0, 1).reshape(height * width, frames, channels)
        y = torch.cat([self.rows(part) for part in y.split(MOTION_CHUNK_ROWS)])
        return x + y.reshape(height, width, frames, channels).permute(2, 3, 0, 1)


class VideoDepthNetwork(nn.Module):
    """Video Depth Anything's network: (frames, 3, H, W) ImageNet-normalised window, H and W
    multiples of 14 -> (frames, H, W) relative inverse depth (near = large, >= 0).

    backbone: transformers Dinov2Model; neck, head: transformers DepthAnythingNeck and
    DepthAnythingDepthEstimationHead; motion_modules: after reassembled layers 3 and 4 and after
    the first two fusion steps, as in the official DPTHeadTemporal. metric: the weights are a
    metric model's (metric_video_depth_anything_*.pth, same layout): the output is depth in metres
    (far = large), which estimate_clip joins without rescaling and then inverts.
    """

    def __init__(self, backbone_config, config, metric=False):
        super().__init__()
        from transformers import Dinov2Model
        from transformers.models.depth_anything.modeling_depth_anything import (DepthAnythingDepthEstimationHead,
                                                                                DepthAnythingNeck)

        self.config = config  # the DPT part's, as transformers' depth models carry theirs
        self.backbone = Dinov2Model(backbone_config)
        self.neck = DepthAnythingNeck(config)
        self.head = DepthAnythingDepthEstimationHead(config)
        sizes, fusion = config.neck_hidden_sizes, config.fusion_hidden_size
        self.motion_modules = nn.ModuleList(MotionModule(c) for c in (sizes[2], sizes[3], fusion, fusion))
        self.readout_layers = READOUT_LAYERS[backbone_config.num_hidden_layers]
        self.metric = metric

    def embed(self, pixels):
        """Patch tokens with the class token and position embeddings, resized as the official DINOv2
        does (bicubic by scale factor (patches + 0.1) / 37, which differs from transformers' resize to
        a size; at 518x518 both keep the table as it is)."""
        embeddings = self.backbone.embeddings
        tokens = embeddings.patch_embeddings(pixels)
        table = embeddings.position_embeddings.float()
        grid = math.isqrt(table.shape[1] - 1)
        rows, cols = pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH
        if rows * cols != grid * grid or rows != cols:
            patches = table[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
            patches = F.interpolate(patches, scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid), mode="bicubic")
            table = torch.cat([table[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)
        cls = embeddings.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + table.to(tokens.dtype)

    def encode(self, pixels):
        """The final-LayerNorm'd patch tokens (frames, rows * cols, C) of the readout layers."""
        hidden, out = self.embed(pixels), []
        for index, layer in enumerate(self.backbone.encoder.layer[:self.readout_layers[-1] + 1]):
            hidden = layer(hidden)
            if isinstance(hidden, tuple):  # transformers 4.x layers return (hidden states, ...)
                hidden = hidden[0]
            if index in self.readout_layers:
                out.append(self.backbone.layernorm(hidden)[:, 1:])
        return out

    def reassemble(self, index, tokens, rows, cols):
        """Readout `index`'s tokens (frames, rows * cols, C) -> its projected and resized map."""
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, rows, cols)
        return self.neck.reassemble_stage.layers[index](grid)

    def forward(self, pixels, chunk=INFER_LEN):
        """Frame-wise parts (encoder, fine fusion steps, head) run `chunk` frames at a time, the
        motion modules on the whole window."""
        rows, cols = pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH
        tokens = [torch.cat(parts) for parts in zip(*(self.encode(part) for part in pixels.split(chunk)))]
        fusion, motion, convs = self.neck.fusion_stage.layers, self.motion_modules, self.neck.convs
        # As in the official head, the first two motion modules come before the neck's convs.
        layer_3 = convs[2](motion[0](self.reassemble(2, tokens[2], rows, cols)))
        layer_4 = convs[3](motion[1](self.reassemble(3, tokens[3], rows, cols)))
        path = motion[2](fusion[0](layer_4, size=layer_3.shape[2:]))
        path = motion[3](fusion[1](path, layer_3, size=(rows * 2, cols * 2)))
        depth = []
        for start in range(0, pixels.shape[0], chunk):
            part = slice(start, start + chunk)
            layer_1 = convs[0](self.reassemble(0, tokens[0][part], rows, cols))
            layer_2 = convs[1](self.reassemble(1, tokens[1][part], rows, cols))
            fine = fusion[3](fusion[2](path[part], layer_2, size=layer_1.shape[2:]), layer_1)
            depth.append(self.head([fine], rows, cols))
        return torch.cat(depth)


class WindowAligner:
    """Joins window depths into one clip depth as infer_video_depth does, a window at a time.

    add() takes one window's maps (a list of (INFER_LEN, ...) tensors of the same frames, e.g. at the
    frame size and at the network's size; the first one fits the scale and shift) and returns the
    frames that are final; finish() returns the rest. fit_scale False (metric models) joins the
    windows without rescaling them, as the official code does for them.
    """

    def __init__(self, fit_scale=True):
        self.fit_scale = fit_scale
        self.tail = None  # the last INTERP_LEN aligned frames, to be cross-faded with the next window
        self.reference = None  # aligned depth of the next window's first ALIGN_FRAMES key frames

    def add(self, maps):
        if self.tail is None:
            self.reference = maps[0][list(KEYFRAMES[:ALIGN_FRAMES])]
            self.tail = [m[INFER_LEN - INTERP_LEN:] for m in maps]
            return [m[:INFER_LEN - INTERP_LEN] for m in maps]
        scale, shift = self.scale_and_shift(maps[0][:ALIGN_FRAMES]) if self.fit_scale else (1.0, 0.0)
        aligned = [(m * scale + shift).clamp_min(0.0) for m in maps]
        # The reference keeps the clip's first frame; the middle key frame is this window's.
        self.reference = torch.stack([self.reference[0], aligned[0][KEYFRAMES[1]]])
        weight = torch.linspace(0.0, 1.0, INTERP_LEN, device=maps[0].device)
        done = []
        for previous, window in zip(self.tail, aligned):
            w = weight.view(-1, *[1] * (window.ndim - 1)).to(window.dtype)
            faded = previous * (1 - w) + window[ALIGN_FRAMES:OVERLAP] * w
            done.append(torch.cat([faded, window[OVERLAP:INFER_LEN - INTERP_LEN]]))
        self.tail = [m[INFER_LEN - INTERP_LEN:] for m in aligned]
        return done

    def finish(self):
        return self.tail

    def scale_and_shift(self, prediction):
        """Least-squares scale and shift mapping `prediction` onto the reference (all pixels);
        (1, 0) when the prediction is flat, as in the official compute_scale_and_shift."""
        p, t = prediction.double().flatten(), self.reference.double().flatten()
        a_00, a_01, a_11 = (p * p).sum(), p.sum(), float(p.numel())
        b_0, b_1 = (p * t).sum(), t.sum()
        det = a_00 * a_11 - a_01 * a_01
        if det == 0:
            return 1.0, 0.0
        return ((a_11 * b_0 - a_01 * b_1) / det).item(), ((a_00 * b_1 - a_01 * b_0) / det).item()


def window_inputs(frame_count):
    """The frame indices each window reads: INFER_LEN for the first, the INFER_LEN - OVERLAP after
    their key frames for the others; past the end of the clip, its last frame again."""
    out = []
    for start in range(0, frame_count, INFER_LEN - OVERLAP):
        first = start if start == 0 else start + OVERLAP
        out.append([min(i, frame_count - 1) for i in range(first, start + INFER_LEN)])
    return out


def window_count(frame_count):
    return len(range(0, frame_count, INFER_LEN - OVERLAP))


@torch.no_grad()
def estimate_clip(estimator, frames, chunk, before_window=None, after_window=None):
    """(depth at the frame size (N, 1, H, W), native depth (N, 1, h, w)) of (N, 3, H, W) RGB frames in
    [0, 1] (any device), both float32 on the CPU: the windowed, aligned clip depth (module docstring),
    relative inverse depth (near = large); a metric network's depth is joined as the official code
    joins it (no rescaling) and then inverted, 1 / max(depth, METRIC_NEAREST).

    estimator: a depth_estimation.DepthEstimator of this network (its preprocess and postprocess);
    chunk: frames per frame-wise network call (VideoDepthNetwork.forward); before_window() runs
    before each window (where a cancel lands), after_window(1) after it.
    """
    parameter = next(estimator.network.parameters())
    metric = estimator.network.metric
    aligner, outputs, written, keys = WindowAligner(fit_scale=not metric), None, 0, None
    frame_count = frames.shape[0]
    for indices in window_inputs(frame_count):
        if before_window is not None:
            before_window()
        pixels = estimator.preprocess(frames[indices].to(parameter.device)).to(parameter.dtype)
        if keys is not None:
            pixels = torch.cat([keys, pixels])
        keys = pixels[list(KEYFRAMES)]
        raw = estimator.network(pixels, chunk).float().unsqueeze(1)
        done = aligner.add([estimator.postprocess(raw, frames.shape[-2:]), raw])
        if outputs is None:  # the result, allocated once: no second copy of it at the end
            outputs = [torch.empty((frame_count, *part.shape[1:])) for part in done]
        written = _write(outputs, done, written)
        if after_window is not None:
            after_window(1)
    _write(outputs, aligner.finish(), written)
    if metric:
        for out in outputs:
            out.clamp_min_(METRIC_NEAREST).reciprocal_()
    return tuple(outputs)


def _write(outputs, parts, start):
    """Copies the frames of `parts` into `outputs` from frame `start` on (those past the clip's end,
    the padding, are dropped); returns the frame after the last one written."""
    count = min(parts[0].shape[0], outputs[0].shape[0] - start)
    for out, part in zip(outputs, parts):
        out[start:start + count] = part[:count]
    return start + count
