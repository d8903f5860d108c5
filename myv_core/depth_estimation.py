"""Depth videos from RGB clips: the MiDaS network Make-Your-Video was trained with, and Depth Anything.

Pure torch + transformers (DPTForDepthEstimation, DepthAnythingForDepthEstimation); never imports
ComfyUI. Four weight layouts are recognised:

- "midas": the original MiDaS v3 release dpt_hybrid-midas-501f0c75.pt (timm names: pretrained.model.*,
  scratch.*), also nested as depth_stage_model.model.* inside a Make-Your-Video checkpoint or as
  model.* in the converter's *_depth.safetensors. Converted here, key by key, to transformers'
  DPT-Hybrid layout; the config is derived from the tensor shapes (for the release file it equals
  Intel/dpt-hybrid-midas, with timm's LayerNorm eps 1e-6).
- "dpt": transformers' DPTForDepthEstimation (Intel/dpt-hybrid-midas): a model folder (config.json +
  model.safetensors, read by transformers' from_pretrained, local files only), or a lone safetensors
  file (a DPT-Hybrid config is then derived from the shapes).
- "depth_anything": transformers' DepthAnythingForDepthEstimation (Depth Anything V2 Small), as a
  model folder.
- "video_depth_anything": the official Video Depth Anything release files
  (video_depth_anything_vits.pth, and the Base/Large ones: pretrained.* DINOv2, head.* DPT head with
  motion modules), renamed here to myv_core.video_depth's network, config derived from the shapes.
  A file named metric_video_depth_anything_*.pth is a metric model (same layout), inverted to
  relative inverse depth after its windows are joined.

The DPT networks get Make-Your-Video's pre-processing (RGB in [-1, 1], bicubic 384x384 without
keeping the aspect ratio, align_corners False); Depth Anything gets its own (ImageNet mean/std,
bicubic resize keeping the aspect ratio, short side 518, sides multiples of 14); Video Depth
Anything gets the same at its input size, over windows of the whole clip (myv_core.video_depth).
All give relative inverse depth: near = large.
"""

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, file_state_dict
from .tensor_file import read
from .depth import depth_from_image
from . import video_depth

MIDAS_SIZE = 384
# Bytes per input pixel and fusion channel of one frame through a DPT network (DepthEstimator.bytes_per_frame):
# twice the measured cost, as core's VAE estimates are, for the batch's fixed cost and the allocator's slack.
HEAD_BYTES_PER_PIXEL_CHANNEL = 3.0
DEPTH_ANYTHING_SIZE = 518
DEPTH_ANYTHING_MULTIPLE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_MODES = ("per_frame", "per_clip")
KINDS = ("midas", "depth_anything", "video_depth_anything")
# The normalisation each estimator's depth fits best: MiDaS and Depth Anything see one frame at a
# time, so each frame's own range is all there is (and per_frame is how Make-Your-Video was trained);
# Video Depth Anything aligns its windows into one relative depth for the clip, which a per-frame
# min/max would stretch frame by frame again.
PREFERRED_NORMALIZE = {"midas": "per_frame", "depth_anything": "per_frame", "video_depth_anything": "per_clip"}
EPS = 1e-7

# Prefixes under which the original MiDaS network is found: a Make-Your-Video checkpoint, the
# converter's depth part file (myv_core.convert), the bare release file.
MIDAS_NESTINGS = ("depth_stage_model.model.", "model.", "")
MIDAS_MARKER = "pretrained.model.cls_token"
# The ImageNet classifier of timm's ViT: in the release file, not part of the depth network.
MIDAS_UNUSED_PREFIXES = ("pretrained.model.head.",)
# Present in transformers' DPT but never used for depth (final LayerNorm of the ViT, the first fusion
# layer's skip branch, which has no skip input): a file without them still loads.
TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
DPT_UNUSED_PREFIXES = ("dpt.layernorm.", "neck.fusion_stage.layers.0.residual_layer1.", "dpt.pooler.")

_BACKBONE = "pretrained.model.patch_embed.backbone."
_BIT = "dpt.embeddings.backbone.bit."
VDA_MARKER = "head.motion_modules.0.temporal_transformer.proj_in.weight"
# Official DINOv2 block parts -> transformers Dinov2Layer (prefix replacements; the attention's
# names depend on the transformers version, see dinov2_attention_names).
_DINOV2_BLOCK_PARTS = {
    "norm1.": "norm1.", "norm2.": "norm2.", "mlp.": "mlp.",
    "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
}
_VDA_FIXED = {
    "pretrained.cls_token": "backbone.embeddings.cls_token",
    "pretrained.pos_embed": "backbone.embeddings.position_embeddings",
    "pretrained.mask_token": "backbone.embeddings.mask_token",
    "pretrained.norm.weight": "backbone.layernorm.weight",
    "pretrained.norm.bias": "backbone.layernorm.bias",
    "head.scratch.output_conv1.weight": "head.conv1.weight",
    "head.scratch.output_conv1.bias": "head.conv1.bias",
    "head.scratch.output_conv2.0.weight": "head.conv2.weight",
    "head.scratch.output_conv2.0.bias": "head.conv2.bias",
    "head.scratch.output_conv2.2.weight": "head.conv3.weight",
    "head.scratch.output_conv2.2.bias": "head.conv3.bias",
}
# The motion modules' sinusoidal position table: fixed values, computed by myv_core.video_depth.
VDA_DERIVED_SUFFIX = ".pos_encoder.pe"
# The metric models (metric_video_depth_anything_vit{s,b,l}.pth) have the relative ones' layout: only
# the official file name tells them apart.
VDA_METRIC_PREFIX = "metric_"
_FUSION_UNITS = {"resConfUnit1": "residual_layer1", "resConfUnit2": "residual_layer2"}
_FUSION_CONVS = {"conv1": "convolution1", "conv2": "convolution2"}
_BLOCK_PARTS = {
    "norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
}


# ---------------------------------------------------------------- original MiDaS <-> transformers keys

def _split_key(key, prefix):
    """('3', 'rest') for prefix + '3.rest'; None when key does not start with prefix."""
    if not key.startswith(prefix):
        return None
    index, _, rest = key[len(prefix):].partition(".")
    return index, rest


def midas_key_to_dpt(key):
    """The transformers DPT-Hybrid name of one original MiDaS key (not attn.qkv, see convert_midas_state_dict).

    Returns None for keys that are not part of the depth network (MIDAS_UNUSED_PREFIXES); raises
    KeyError for a key this layout does not have.
    """
    if key.startswith(MIDAS_UNUSED_PREFIXES):
        return None
    fixed = {
        "pretrained.model.cls_token": "dpt.embeddings.cls_token",
        "pretrained.model.pos_embed": "dpt.embeddings.position_embeddings",
        "pretrained.model.norm.weight": "dpt.layernorm.weight",
        "pretrained.model.norm.bias": "dpt.layernorm.bias",
    }
    if key in fixed:
        return fixed[key]
    if key.startswith("pretrained.model.patch_embed.proj."):
        return "dpt.embeddings.projection." + key.rsplit(".", 1)[1]
    if key.startswith(_BACKBONE + "stem."):
        part = key[len(_BACKBONE + "stem."):]
        return _BIT + "embedder." + part.replace("conv.", "convolution.", 1)
    if (found := _split_key(key, _BACKBONE + "stages.")) is not None:
        stage, rest = found
        block, rest = _split_key(rest, "blocks.") or (None, None)
        if block is not None:
            return f"{_BIT}encoder.stages.{stage}.layers.{block}.{rest}"
    if (found := _split_key(key, "pretrained.model.blocks.")) is not None:
        block, rest = found
        name, _, kind = rest.rpartition(".")
        if name in _BLOCK_PARTS:
            return f"dpt.encoder.layer.{block}.{_BLOCK_PARTS[name]}.{kind}"
    if (found := _split_key(key, "pretrained.act_postprocess")) is not None:
        # act_postprocessN: 0 = readout projection, 3 = 1x1 projection, 4 = resize (stride-2 conv).
        stage, rest = found
        index = int(stage) - 1
        if rest.startswith("0.project.0."):
            return f"neck.reassemble_stage.readout_projects.{index}.0.{rest.rsplit('.', 1)[1]}"
        module, _, kind = rest.partition(".")
        if module in ("3", "4"):
            return f"neck.reassemble_stage.layers.{index}.{'projection' if module == '3' else 'resize'}.{kind}"
    if (found := _split_key(key, "scratch.layer")) is not None:
        number, rest = found
        if number.endswith("_rn"):
            return f"neck.convs.{int(number[:-3]) - 1}.{rest}"
    if (found := _split_key(key, "scratch.refinenet")) is not None:
        return _fusion_key(*found)
    if (found := _split_key(key, "scratch.output_conv.")) is not None:
        index, rest = found
        return f"head.head.{index}.{rest}"
    raise KeyError(key)


def _fusion_key(number, rest):
    """The transformers name of scratch.refinenet{number}.{rest} (DPT and Depth Anything necks)."""
    layer = f"neck.fusion_stage.layers.{4 - int(number)}."  # refinenet4 runs first
    if rest.startswith("out_conv."):
        return layer + "projection." + rest[len("out_conv."):]
    unit, conv, kind = rest.split(".")
    return layer + f"{_FUSION_UNITS[unit]}.{_FUSION_CONVS[conv]}.{kind}"


def _convert(sd, rename, blocks, layers, qkv_names=("attention.attention.query", "attention.attention.key",
                                                   "attention.attention.value")):
    """(renamed state dict, keys `rename` does not know). ViT blocks `blocks` + "N.attn.qkv.*" are
    split into layers + "N.{each of qkv_names}.*"; rename(key) gives the new name of any other key
    (None: not needed) or raises KeyError / ValueError."""
    converted, unknown = {}, []
    for key, value in sd.items():
        found = _split_key(key, blocks)
        if found is not None and found[1].startswith("attn.qkv."):
            block, kind = found[0], found[1].rsplit(".", 1)[1]
            for part, chunk in zip(qkv_names, value.chunk(3, dim=0)):
                converted[f"{layers}{block}.{part}.{kind}"] = chunk.contiguous()
            continue
        try:
            target = rename(key)
        except (KeyError, ValueError):
            unknown.append(key)
            continue
        if target is not None:
            converted[target] = value
    return converted, unknown


def convert_midas_state_dict(sd, name="file"):
    """Original MiDaS DPT-Hybrid weights -> transformers DPTForDepthEstimation names.

    Every key lands in the result (attn.qkv split into query/key/value) or is listed in
    MIDAS_UNUSED_PREFIXES; anything else raises CheckpointError naming the keys.
    """
    converted, unknown = _convert(sd, midas_key_to_dpt, "pretrained.model.blocks.", "dpt.encoder.layer.")
    if unknown:
        raise CheckpointError(f"{name}: {len(unknown)} keys are not part of the MiDaS DPT-Hybrid network: "
                              f"{', '.join(sorted(unknown)[:8])}. Is it a different MiDaS model (DPT-Large, "
                              "MiDaS v2.1)? Only dpt_hybrid-midas-501f0c75.pt is supported.")
    return converted


def dinov2_attention_names():
    """transformers' names of a Dinov2Layer's attention projections (query, key, value, output):
    attention.{q,k,v,o}_proj in transformers 5 (5.25 tested), attention.attention.{query,key,value}
    and attention.output.dense in the 4.x versions the pack also accepts."""
    from transformers import Dinov2Config
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Attention

    with torch.device("meta"):
        attention = Dinov2Attention(Dinov2Config(hidden_size=8, num_attention_heads=1))
    if hasattr(attention, "q_proj"):
        return tuple(f"attention.{part}_proj" for part in "qkvo")
    return tuple(f"attention.attention.{part}" for part in ("query", "key", "value")) + ("attention.output.dense",)


def vda_key_to_network(key, attention_names):
    """The myv_core.video_depth.VideoDepthNetwork name of one official Video Depth Anything key (not
    attn.qkv, see convert_vda_state_dict); None for the derived position tables; KeyError otherwise.
    attention_names: dinov2_attention_names()."""
    if key.endswith(VDA_DERIVED_SUFFIX):
        return None
    if key in _VDA_FIXED:
        return _VDA_FIXED[key]
    if key.startswith("pretrained.patch_embed.proj."):
        return "backbone.embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]
    if (found := _split_key(key, "pretrained.blocks.")) is not None:
        block, rest = found
        for part, target in {**_DINOV2_BLOCK_PARTS, "attn.proj.": attention_names[3] + "."}.items():
            if rest.startswith(part):
                return f"backbone.encoder.layer.{block}.{target}{rest[len(part):]}"
    for official, module in (("head.projects.", "projection"), ("head.resize_layers.", "resize")):
        if (found := _split_key(key, official)) is not None:
            return f"neck.reassemble_stage.layers.{found[0]}.{module}.{found[1]}"
    if (found := _split_key(key, "head.scratch.layer")) is not None and found[0].endswith("_rn"):
        return f"neck.convs.{int(found[0][:-3]) - 1}.{found[1]}"
    if (found := _split_key(key, "head.scratch.refinenet")) is not None:
        return _fusion_key(*found)
    if (found := _split_key(key, "head.motion_modules.")) is not None:
        module, rest = found
        if rest.startswith("temporal_transformer."):
            return f"motion_modules.{module}.{rest[len('temporal_transformer.'):]}"
    raise KeyError(key)


def convert_vda_state_dict(sd, name="file"):
    """Official Video Depth Anything weights -> VideoDepthNetwork names; CheckpointError naming the
    keys that are not part of it."""
    names = dinov2_attention_names()
    converted, unknown = _convert(sd, lambda key: vda_key_to_network(key, names), "pretrained.blocks.",
                                  "backbone.encoder.layer.", names[:3])
    if unknown:
        raise CheckpointError(f"{name}: {len(unknown)} keys are not part of a Video Depth Anything network: "
                              f"{', '.join(sorted(unknown)[:8])}. Use the official video_depth_anything_vits.pth "
                              "(or _vitb, _vitl) as downloaded.")
    return converted


def dpt_state_dict_to_midas(sd):
    """Inverse of convert_midas_state_dict (no classifier head): transformers DPT-Hybrid -> original names."""
    inverse = {}
    for key in _original_keys(sd):
        inverse[midas_key_to_dpt(key)] = key
    original, qkv = {}, {}
    for key, value in sd.items():
        if ".attention.attention." in key:
            layer = key.split(".")[3]
            part, kind = key.rsplit(".", 2)[1:]
            qkv.setdefault((layer, kind), {})[part] = value
        elif key in inverse:
            original[inverse[key]] = value
    for (layer, kind), parts in qkv.items():
        original[f"pretrained.model.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0)
    return original


def _original_keys(sd):
    """Candidate original names for the non-attention keys of a transformers DPT-Hybrid state dict."""
    keys = ["pretrained.model.cls_token", "pretrained.model.pos_embed", "pretrained.model.norm.weight",
            "pretrained.model.norm.bias", "pretrained.model.patch_embed.proj.weight",
            "pretrained.model.patch_embed.proj.bias"]
    for key in sd:
        parts = key.split(".")
        if key.startswith(_BIT + "embedder."):
            keys.append(_BACKBONE + "stem." + key[len(_BIT + "embedder."):].replace("convolution.", "conv.", 1))
        elif key.startswith(_BIT + "encoder.stages."):
            keys.append(f"{_BACKBONE}stages.{parts[6]}.blocks.{parts[8]}.{'.'.join(parts[9:])}")
        elif key.startswith("dpt.encoder.layer.") and ".attention.attention." not in key:
            name = ".".join(parts[4:-1])
            original = {v: k for k, v in _BLOCK_PARTS.items()}[name]
            keys.append(f"pretrained.model.blocks.{parts[3]}.{original}.{parts[-1]}")
        elif key.startswith("neck.reassemble_stage.readout_projects."):
            keys.append(f"pretrained.act_postprocess{int(parts[3]) + 1}.0.project.0.{parts[-1]}")
        elif key.startswith("neck.reassemble_stage.layers."):
            module = "3" if parts[4] == "projection" else "4"
            keys.append(f"pretrained.act_postprocess{int(parts[3]) + 1}.{module}.{parts[-1]}")
        elif key.startswith("neck.convs."):
            keys.append(f"scratch.layer{int(parts[2]) + 1}_rn.{parts[-1]}")
        elif key.startswith("neck.fusion_stage.layers."):
            prefix = f"scratch.refinenet{4 - int(parts[3])}."
            if parts[4] == "projection":
                keys.append(prefix + "out_conv." + parts[-1])
            else:
                unit = {v: k for k, v in _FUSION_UNITS.items()}[parts[4]]
                conv = {v: k for k, v in _FUSION_CONVS.items()}[parts[5]]
                keys.append(f"{prefix}{unit}.{conv}.{parts[-1]}")
        elif key.startswith("head.head."):
            keys.append("scratch.output_conv." + ".".join(parts[2:]))
    return keys


# ---------------------------------------------------------------- configs

def _count(sd, prefix, suffix):
    """How many indices i have prefix + f"{i}." + suffix in sd."""
    indices = {k[len(prefix):].split(".", 1)[0] for k in sd if k.startswith(prefix) and k.endswith(suffix)}
    return len(indices)


def dpt_hybrid_config(sd):
    """A transformers DPTConfig for the DPT-Hybrid weights `sd` (transformers layout), from their shapes.

    For dpt_hybrid-midas-501f0c75.pt this gives Intel/dpt-hybrid-midas' architecture: BiT-ResNet50
    stages (3, 4, 9) at width 64, ViT-B/16 (768, 12 layers, 12 heads, MLP 3072) on 24x24 tokens,
    reassemble from the backbone's first two stages and ViT layers 8 and 11, neck (256, 512, 768, 768),
    fusion 256. Head count is not stored in the weights: hidden_size // 64, as in ViT-B. LayerNorm eps
    is timm's 1e-6 (the MiDaS network was trained with it; transformers' default is 1e-12).
    """
    from transformers import DPTConfig

    hidden = sd["dpt.embeddings.cls_token"].shape[-1]
    layers = _count(sd, "dpt.encoder.layer.", "layernorm_before.weight")
    grid = math.isqrt(sd["dpt.embeddings.position_embeddings"].shape[1] - 1)
    stages = [_count(sd, f"{_BIT}encoder.stages.{i}.layers.", "conv1.weight") for i in range(3)]
    widths = [sd[f"{_BIT}encoder.stages.{i}.layers.0.conv3.weight"].shape[0] for i in range(3)]
    return DPTConfig(
        is_hybrid=True,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=sd["dpt.encoder.layer.0.intermediate.dense.weight"].shape[0],
        layer_norm_eps=1e-6,
        image_size=grid * 16,
        patch_size=16,
        backbone_out_indices=[max(0, k * layers // 4 - 1) for k in range(1, 5)],
        backbone_featmap_shape=[1, widths[-1], grid, grid],
        backbone_config={
            "model_type": "bit", "global_padding": "same", "layer_type": "bottleneck", "depths": stages,
            "hidden_sizes": widths + [widths[-1] * 2],
            "embedding_size": sd[f"{_BIT}embedder.convolution.weight"].shape[0],
            "out_features": ["stage1", "stage2", "stage3"], "embedding_dynamic_padding": True,
        },
        neck_hidden_sizes=[sd[f"neck.convs.{i}.weight"].shape[1] for i in range(4)],
        reassemble_factors=[1, 1, 1, 0.5],
        neck_ignore_stages=[0, 1],
        readout_type="project",
        fusion_hidden_size=sd["neck.convs.0.weight"].shape[0],
    )


def vda_configs(sd, name="file"):
    """(transformers Dinov2Config, DepthAnythingConfig) for Video Depth Anything weights `sd`
    (VideoDepthNetwork names), from their shapes. For video_depth_anything_vits.pth: ViT-S/14
    (384 wide, 12 layers, 6 heads, MLP 1536, layer scale, LayerNorm eps 1e-6, 37x37 position table),
    neck (48, 96, 192, 384) with factors (4, 2, 1, 0.5), fusion 64, head 32. Head count is not stored
    in the weights: hidden_size // 64, as in every DINOv2 size."""
    from transformers import DepthAnythingConfig, Dinov2Config

    hidden = sd["backbone.embeddings.cls_token"].shape[-1]
    layers = _count(sd, "backbone.encoder.layer.", "norm1.weight")
    if layers not in video_depth.READOUT_LAYERS:
        raise CheckpointError(f"{name}: a {layers}-layer encoder; Video Depth Anything Small, Base and Large "
                              f"have {' or '.join(map(str, sorted(video_depth.READOUT_LAYERS)))}.")
    backbone = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        mlp_ratio=sd["backbone.encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
        layer_norm_eps=1e-6,
        image_size=math.isqrt(sd["backbone.embeddings.position_embeddings"].shape[1] - 1) * video_depth.PATCH,
        patch_size=video_depth.PATCH,
        layerscale_value=1.0,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden,
        patch_size=video_depth.PATCH,
        neck_hidden_sizes=[sd[f"neck.reassemble_stage.layers.{i}.projection.weight"].shape[0] for i in range(4)],
        reassemble_factors=[4, 2, 1, 0.5],
        fusion_hidden_size=sd["neck.convs.0.weight"].shape[0],
        head_hidden_size=sd["head.conv2.weight"].shape[0],
    )
    return backbone, config


# ---------------------------------------------------------------- loading

def detect_layout(sd):
    """('midas' | 'dpt' | 'depth_anything' | 'video_depth_anything', state dict without nesting
    prefix), or (None, sd) for anything else."""
    for nesting in MIDAS_NESTINGS:
        if nesting + MIDAS_MARKER in sd:
            return "midas", {k[len(nesting):]: v for k, v in sd.items() if k.startswith(nesting)}
    if "dpt.embeddings.cls_token" in sd:
        return "dpt", sd
    if any(k.startswith("backbone.embeddings.") for k in sd) and any(k.startswith("head.") for k in sd):
        return "depth_anything", sd
    if VDA_MARKER in sd:
        return "video_depth_anything", sd
    return None, sd


def _describe_other(sd):
    if any(k.startswith("depth_stage_model.") for k in sd):
        return "it is a Make-Your-Video checkpoint whose depth network is not MiDaS DPT-Hybrid"
    if any(k.startswith("model.diffusion_model.") for k in sd):
        return "it is a diffusion model checkpoint without a depth network (the released model.ckpt has one)"
    if any(k.startswith("pretrained.") for k in sd):
        return ("it looks like an original Depth Anything (single image) / DPT release file, which is not "
                "supported (Video Depth Anything's video_depth_anything_*.pth is)")
    return "it is not a depth estimator"


def _weights_and_config(path):
    """(weights file, config dict or None) for a weights file or a transformers folder."""
    path = Path(path)
    if path.is_dir():
        for name in TRANSFORMERS_WEIGHTS:
            if (path / name).is_file():
                weights = path / name
                break
        else:
            raise CheckpointError(f"'{path.name}' is a folder without model.safetensors or pytorch_model.bin: "
                                  "put the transformers model files (config.json + model.safetensors) in it.")
    else:
        weights = path
    config_path = weights.parent / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else None
    return weights, config


def _from_pretrained(folder, model_type, name, read_weights=True):
    """A transformers folder through transformers' own loader (it knows the key renames between
    transformers versions); local files only, never the hub. read_weights=False: built from
    config.json alone, on the meta device."""
    from transformers import DepthAnythingForDepthEstimation, DPTForDepthEstimation

    network_class = {"dpt": DPTForDepthEstimation, "depth_anything": DepthAnythingForDepthEstimation}[model_type]
    try:
        if read_weights:
            network, info = network_class.from_pretrained(str(folder), local_files_only=True,
                                                          output_loading_info=True)
        else:
            config = network_class.config_class.from_pretrained(str(folder), local_files_only=True)
            with torch.device("meta"):
                network, info = network_class(config), {}
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{name}: transformers could not load the folder '{Path(folder).name}' "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no detail'}); "
                              "fetch the model files again.") from None
    unused = DPT_UNUSED_PREFIXES if model_type == "dpt" else ()
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith(unused)]
    mismatched = info.get("mismatched_keys", ())
    if missing or mismatched:
        raise CheckpointError(f"{name}: the weights do not fit config.json: missing {sorted(missing)[:5]}, "
                              f"wrong shapes {list(mismatched)[:5]}; the folder mixes files of different models.")
    return network.float().eval().requires_grad_(False)


def _build(make_network, sd, name, unused_prefixes=()):
    """make_network() with the weights of sd, built without random initialisation."""
    with torch.device("meta"):
        network = make_network()
    missing, unexpected = network.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not k.startswith(unused_prefixes)]
    unexpected = [k for k in unexpected if not k.startswith(unused_prefixes)]
    if missing or unexpected:
        raise CheckpointError(f"{name}: the weights do not fit {type(network).__name__}: missing "
                              f"{sorted(missing)[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                              f"{sorted(unexpected)[:5]}{' ...' if len(unexpected) > 5 else ''}.")
    device = next(iter(sd.values())).device  # the meta device when nothing was read
    for module_name, module in network.named_modules():  # unused tensors absent from the file
        for tensor_name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor.is_meta:
                value = torch.zeros(tensor.shape, dtype=tensor.dtype, device=device)
                if isinstance(tensor, torch.nn.Parameter):
                    value = torch.nn.Parameter(value, requires_grad=False)
                setattr(module, tensor_name, value)
    return network.eval().requires_grad_(False)


def _meta(value):
    """A stand-in of a file's tensor on the meta device: its shape and dtype, nothing read."""
    return torch.empty(value.shape, dtype=value.dtype, device="meta")


def load_depth_estimator(path, dtype=torch.float32, read_weights=True):
    """A DepthEstimator for a weights file or transformers folder (see the module docstring), on the CPU.

    read_weights=False reads no weight: the estimator is built on the meta device from the file's
    index, which finds everything that can be wrong with the file (layout, keys, shapes) at once.
    MYV Depth Estimator Loader checks a file so; MYV Estimate Depth reads the weights when it runs.
    """
    path = Path(path)
    name = f"'{path.name}'"
    weights, config = _weights_and_config(path)
    model_type = (config or {}).get("model_type")
    if model_type in ("dpt", "depth_anything") and weights.name in TRANSFORMERS_WEIGHTS:
        network = _from_pretrained(weights.parent, model_type, name, read_weights)
        kind = "depth_anything" if model_type == "depth_anything" else "midas"
        return DepthEstimator(network.to(dtype), kind)
    layout, sd = detect_layout(file_state_dict(weights))
    if layout is None:
        raise CheckpointError(f"{name} holds no supported depth network: {_describe_other(sd)}. Use "
                              "dpt_hybrid-midas-501f0c75.pt, Intel/dpt-hybrid-midas or Depth Anything V2 "
                              "(transformers format), video_depth_anything_vits.pth, or the Make-Your-Video "
                              "model.ckpt.")
    if layout == "depth_anything":
        raise CheckpointError(f"{name}: Depth Anything weights need their config.json in the same folder "
                              "(download the whole transformers model folder).")
    from transformers import DPTForDepthEstimation
    fetch = (lambda value: read(value, dtype)) if read_weights else _meta
    sd = {k: fetch(v) for k, v in sd.items()}  # only the depth network's tensors, e.g. of a whole model.ckpt
    if layout == "video_depth_anything":
        sd = convert_vda_state_dict(sd, name)
        configs = vda_configs(sd, name)
        metric = weights.name.startswith(VDA_METRIC_PREFIX)
        network = _build(lambda: video_depth.VideoDepthNetwork(*configs, metric=metric), sd, name)
        return DepthEstimator(network.to(dtype), "video_depth_anything")
    if layout == "midas":
        sd = convert_midas_state_dict(sd, name)
    config = dpt_hybrid_config(sd)
    network = _build(lambda: DPTForDepthEstimation(config), sd, name, DPT_UNUSED_PREFIXES)
    return DepthEstimator(network.to(dtype), "midas")


# ---------------------------------------------------------------- running

class DepthEstimator(torch.nn.Module):
    """A depth network with its pre-processing: frames in [0, 1] -> relative inverse depth.

    short_side: the short side of the input of Depth Anything and Video Depth Anything (518, their
    training size; the official infer_video_depth takes it as `input_size`, smaller is faster and
    coarser).
    """

    def __init__(self, network, kind, short_side=DEPTH_ANYTHING_SIZE):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown estimator kind {kind!r}")
        self.network = network
        self.kind = kind
        self.short_side = short_side

    @property
    def preferred_normalize(self):
        """The normalisation this estimator's depth fits best (PREFERRED_NORMALIZE)."""
        return PREFERRED_NORMALIZE[self.kind]

    def input_size(self, height, width):
        """The network's input (height, width) for frames of that size."""
        if self.kind == "midas":
            return MIDAS_SIZE, MIDAS_SIZE  # aspect not kept, as in Make-Your-Video
        short_side = self.short_side
        if self.kind == "video_depth_anything":
            short_side = video_depth.vda_input_size(height, width, short_side)
        return depth_anything_size(height, width, short_side)

    def bytes_per_frame(self, height, width):
        """Memory one frame of a batch takes in the network, rounded up: the DPT head's convolutions
        at the input size dominate, fusion_hidden_size channels wide. MiDaS DPT-Hybrid on the CPU in
        fp32 at 384x384: 432 MiB estimated; measured 346 MiB for 1 frame, 190-200 MiB per further frame."""
        pixels = math.prod(self.input_size(height, width))
        element = next(self.network.parameters()).element_size()
        return int(HEAD_BYTES_PER_PIXEL_CHANNEL * self.network.config.fusion_hidden_size * pixels * element)

    def preprocess(self, frames):
        """(B, 3, H, W) RGB in [0, 1] -> the network's input, float32."""
        frames = frames.float()
        size = self.input_size(*frames.shape[-2:])
        if self.kind == "midas":
            # Make-Your-Video: frames in [-1, 1] ((x - 0.5) / 0.5), bicubic to 384x384.
            return F.interpolate(frames * 2.0 - 1.0, size=size, mode="bicubic", align_corners=False)
        resized = F.interpolate(frames, size=size, mode="bicubic", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 3, 1, 1)
        return (resized - mean) / std

    def forward(self, pixel_values):
        """Network input -> (B, h, w) relative inverse depth in the network's dtype (Video Depth
        Anything: B frames as one window, at most video_depth.INFER_LEN)."""
        if self.kind == "video_depth_anything":
            return self.network(pixel_values)
        return self.network(pixel_values=pixel_values).predicted_depth

    def postprocess(self, depth, size):
        """(B, h, w) or (B, 1, h, w) network output -> (B, 1, H, W) float32 at the frame size."""
        depth = depth.float()
        if depth.ndim == 3:
            depth = depth.unsqueeze(1)
        if self.kind == "midas":
            return F.interpolate(depth, size=size, mode="bicubic", align_corners=False)
        return F.interpolate(depth, size=size, mode="bilinear", align_corners=True)

    @torch.no_grad()
    def estimate_native(self, frames):
        """(B, 3, H, W) RGB in [0, 1] -> (B, 1, h, w) float32 raw depth at the network's own output
        size (MiDaS: 384x384), not resized, on the network's device."""
        parameter = next(self.network.parameters())
        pixels = self.preprocess(frames.to(parameter.device)).to(parameter.dtype)
        return self(pixels).float().unsqueeze(1)

    @torch.no_grad()
    def estimate(self, frames):
        """(B, 3, H, W) RGB in [0, 1] on the network's device -> (B, 1, H, W) float32 raw depth."""
        return self.postprocess(self.estimate_native(frames), frames.shape[-2:])


def depth_anything_size(height, width, size=DEPTH_ANYTHING_SIZE):
    """Depth Anything's input size: aspect kept, short side `size`, both sides multiples of 14 (>= size)."""
    scale = size / min(height, width)

    def snap(side):
        value = round(side * scale / DEPTH_ANYTHING_MULTIPLE) * DEPTH_ANYTHING_MULTIPLE
        if value < size:
            value = math.ceil(side * scale / DEPTH_ANYTHING_MULTIPLE) * DEPTH_ANYTHING_MULTIPLE
        return int(value)

    return snap(height), snap(width)


def check_images(images):
    """ValueError naming the input unless images is an IMAGE batch of grey, RGB or RGBA frames."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected an IMAGE batch (frames, height, width, channels), got {shape}.")
    if images.shape[0] == 0:
        raise ValueError("images: the batch has no frames.")
    channels = images.shape[-1]
    if channels not in (1, 3, 4):
        raise ValueError(f"images: expected 1, 3 or 4 channels (grey, RGB, RGBA), got {channels}; is the "
                         "batch in (frames, height, width, channels) order?")


def frames_from_images(images):
    """(frames, H, W, C) IMAGE -> (frames, 3, H, W) float32 RGB; ValueError naming the input otherwise."""
    check_images(images)
    channels = images.shape[-1]
    rgb = images[..., :3] if channels == 4 else images.expand(*images.shape[:3], 3)
    return rgb.permute(0, 3, 1, 2).float()


def estimate_depth_and_native(estimator, images, batch_size=8, before_batch=None, after_batch=None):
    """(depth at the frame size (frames, 1, H, W), native depth (frames, 1, h, w)), both float32 raw
    relative inverse depth (near = large) of an IMAGE batch, on the CPU. The native depth is the
    network's output before any resize; the frame-size depth is it resized by the estimator's own
    post-processing (MiDaS: bicubic).

    Frames go through the network `batch_size` at a time; before_batch() runs before each batch
    (where a cancel lands), after_batch(n) after each with its number of steps (estimate_steps).
    Video Depth Anything runs the whole clip in aligned windows (video_depth.estimate_clip, a step
    per window), `batch_size` frames at a time in the frame-wise parts of its network.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    frames = frames_from_images(images)
    if estimator.kind == "video_depth_anything":
        return video_depth.estimate_clip(estimator, frames, batch_size, before_batch, after_batch)
    sized, native = [], []
    for start in range(0, frames.shape[0], batch_size):
        if before_batch is not None:
            before_batch()
        batch = frames[start:start + batch_size]
        raw = estimator.estimate_native(batch)
        sized.append(estimator.postprocess(raw, batch.shape[-2:]).cpu())
        native.append(raw.cpu())
        if after_batch is not None:
            after_batch(batch.shape[0])
    return torch.cat(sized), torch.cat(native)


def estimate_steps(estimator, frame_count):
    """How many steps estimate_depth_and_native reports for a clip: its windows for Video Depth
    Anything, its frames for the others."""
    if estimator.kind == "video_depth_anything":
        return video_depth.window_count(frame_count)
    return frame_count


def estimate_depth(estimator, images, batch_size=8, before_batch=None, after_batch=None):
    """(frames, 1, H, W) float32 raw relative inverse depth (near = large) of an IMAGE batch at its
    frame size, on the CPU (see estimate_depth_and_native)."""
    return estimate_depth_and_native(estimator, images, batch_size, before_batch, after_batch)[0]


# ---------------------------------------------------------------- normalisation and temporal stability

def normalize_depth(depth, mode="per_frame"):
    """(frames, 1, H, W) depth -> [0, 1], min -> 0 and max -> 1 per frame or over the whole clip.

    Near stays bright (inverse depth keeps its order). A flat frame (or clip) becomes 0.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")
    dims = (1, 2, 3) if mode == "per_frame" else (0, 1, 2, 3)
    low = depth.amin(dim=dims, keepdim=True)
    high = depth.amax(dim=dims, keepdim=True)
    return ((depth - low) / (high - low).clamp_min(EPS)).clamp(0.0, 1.0)


def smooth_temporally(depth, strength):
    """Zero-lag temporal smoothing: each frame t becomes the weighted mean of all frames u with weights
    strength ** |t - u| (a symmetric exponential window, renormalised at the clip's ends).

    strength 0 returns the input; 0.3 gives the neighbours 0.3 of the frame's own weight, 0.5 half.
    The window is symmetric, so moving edges do not lag, and values stay within the input range.
    """
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"temporal_smoothing must be in [0, 1), got {strength}")
    frames = depth.shape[0]
    if strength == 0.0 or frames < 2:
        return depth
    steps = torch.arange(frames, device=depth.device)
    weights = torch.full((frames, frames), float(strength), dtype=torch.float64, device=depth.device)
    weights = weights.pow((steps[:, None] - steps[None, :]).abs())
    weights = (weights / weights.sum(dim=1, keepdim=True)).to(depth.dtype)
    return (weights @ depth.reshape(frames, -1)).reshape(depth.shape)


def depth_images(depth, normalize="per_frame", temporal_smoothing=0.0):
    """(frames, 1, H, W) raw depth -> IMAGE (frames, H, W, 3) in [0, 1], near = bright, grey."""
    normalized = smooth_temporally(normalize_depth(depth.float(), normalize), temporal_smoothing)
    return normalized.clamp(0.0, 1.0).permute(0, 2, 3, 1).expand(-1, -1, -1, 3).contiguous()


class NativeDepth:
    """The depth of a clip at the estimator's own output size: what MYV Estimate Depth's native_depth
    output carries beside its depth IMAGE, so that the UNet's depth channel can be made from the
    network's output with ONE resize, as the official get_batch_depth does (MiDaS 384x384 -> bicubic
    straight to the latent size -> min-max), instead of from the IMAGE, which was already resized to
    the frame size.

    raw: (frames, 1, h, w) float32 network output, never resized (near = large); normalize and
    temporal_smoothing: the estimator node's settings, applied to these maps exactly as to its IMAGE
    (maps()), so every setting means the same for the channel as for the IMAGE; image: the IMAGE made
    from the same output (consumers check that the IMAGE they get is that one).
    """

    def __init__(self, raw, kind, normalize="per_frame", temporal_smoothing=0.0, image=None):
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if not 0.0 <= temporal_smoothing < 1.0:
            raise ValueError(f"temporal_smoothing must be in [0, 1), got {temporal_smoothing}")
        self.raw = raw.float()
        self.kind = kind
        self.normalize = normalize
        self.temporal_smoothing = float(temporal_smoothing)
        self.image = image

    @property
    def frames(self):
        return self.raw.shape[0]

    def __repr__(self):
        return (f"NativeDepth({self.kind}, {self.frames} frames at {tuple(self.raw.shape[-2:])}, "
                f"normalize={self.normalize}, temporal_smoothing={self.temporal_smoothing})")

    def maps(self):
        """(frames, 1, h, w) in [0, 1], near = bright: the IMAGE's processing at the native size."""
        return smooth_temporally(normalize_depth(self.raw, self.normalize), self.temporal_smoothing)

    def channel_maps(self, mode):
        """The (frames, 1, h, w) maps to resize once and min-max with `mode` (myv_core.depth.depth_to_latent).

        Without smoothing, the estimator's normalisation is a scale and offset per frame (per_frame) or
        per clip (per_clip), which the channel's own min-max cancels (a per_frame one under a per_clip
        channel excepted): so the raw output goes on unchanged, as in the official code, bit for bit.
        Otherwise the processed maps() do, so that the settings mean what they mean for the IMAGE.
        """
        if self.temporal_smoothing == 0.0 and not (self.normalize == "per_frame" and mode == "per_clip"):
            return self.raw
        return self.maps()

    def check_image(self, image):
        """ValueError naming the inputs unless `image` is the depth IMAGE made with these maps."""
        frames = image.shape[0] if isinstance(image, torch.Tensor) and image.ndim == 4 else None
        if frames != self.frames:
            raise ValueError(f"native_depth has {self.frames} frames but depth has {frames}: connect the depth "
                             "and native_depth outputs of the same MYV Estimate Depth, or disconnect "
                             "native_depth to use the depth images alone.")
        if self.image is None or image is self.image:
            return
        if image.shape != self.image.shape or not torch.equal(image.cpu(), self.image.cpu()):
            raise ValueError("depth is not the depth IMAGE of the MYV Estimate Depth that gives native_depth "
                             "(it was changed, resized or comes from elsewhere): connect that node's depth "
                             "output to depth, or disconnect native_depth to use these depth images as they are.")


def channel_depth(depth, normalize, native_depth=None):
    """(frames, 1, H, W) float32 maps for the depth channel (myv_core.depth.depth_to_latent with `normalize`).

    depth: the depth IMAGE (near = bright). native_depth: a NativeDepth or None; when given, the
    channel comes from its maps at the estimator's own size, and depth must be its IMAGE.
    """
    from_image = depth_from_image(depth)  # checks the IMAGE in both cases (shape, frames, NaN)
    if native_depth is None:
        return from_image
    if not callable(getattr(native_depth, "channel_maps", None)):  # duck-typed: survives a reloaded module
        raise ValueError(f"native_depth: expected MYV Estimate Depth's native_depth output, got "
                         f"{type(native_depth).__name__}.")
    native_depth.check_image(depth)
    return native_depth.channel_maps(normalize)


def flicker(images):
    """Mean absolute frame-to-frame change of a depth video ((frames, ...) in [0, 1])."""
    if images.shape[0] < 2:
        return 0.0
    return (images[1:].float() - images[:-1].float()).abs().mean().item()
