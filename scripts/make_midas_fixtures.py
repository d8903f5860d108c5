"""Fixtures for the MiDaS conversion tests, made with the official Make-Your-Video MiDaS code.

    python scripts/make_midas_fixtures.py --official /path/with/lvdm [--extra-path /path/with/timm]

`--official` is a folder holding the official repository's `lvdm` package (for example
`git --git-dir=<Make-Your-Video mirror> archive HEAD lvdm | tar -x -C /tmp/myv_official`). The official
code builds DPT-Hybrid with timm (`vit_base_resnet50_384`, no pretrained download; made with timm
0.6.13) and imports cv2 (opencv) at module level. Neither timm nor the official code is a dependency of
the pack: only this script needs them, and only once.

Writes into tests/fixtures/:
- midas_dpt_hybrid_keys.json: every key and shape of the original DPT-Hybrid state dict
  (the layout of dpt_hybrid-midas-501f0c75.pt), in the official order.
- midas_dpt_hybrid_reference.safetensors: the official forward on seeded random weights
  (`seeded_midas_weights`) and a seeded input frame (`seeded_frame`): the MiDaS output at 384x384
  and the depth resized back to the frame size, exactly as LatentDepthDiffusion.get_batch_depth
  does before its normalisation.
"""

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
MANIFEST = "midas_dpt_hybrid_keys.json"
REFERENCE = "midas_dpt_hybrid_reference.safetensors"
WEIGHT_SEED = 1234
FRAME_SEED = 99
FRAME_SIZE = (96, 128)  # (height, width): not square, not 384, so both resizes are exercised


def seeded_weights(manifest, seed, positive_bias, scale_suffixes=(".weight",)):
    """Deterministic float32 weights for every key of `manifest` ([[key, shape], ...]), CPU only.

    Scaled so activations stay of order one through the whole network: matrices and kernels
    ~ N(0, 1/fan_in), 1-D scales (keys ending in one of `scale_suffixes`: normalisation weights,
    layer scales) ~ 1 + N(0, 0.1), biases and embeddings ~ N(0, 0.02). The bias `positive_bias` of
    the last layer is 0.5 so the final ReLU lets a non-trivial depth map through.
    """
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for key, shape in manifest:
        shape = tuple(shape)
        noise = torch.randn(shape, generator=g, dtype=torch.float32)
        if len(shape) == 1 and key.endswith(scale_suffixes):
            value = 1.0 + 0.1 * noise
        elif len(shape) >= 2 and key.endswith(".weight"):
            value = noise / math.sqrt(math.prod(shape[1:]))
        else:
            value = 0.02 * noise
        weights[key] = value
    weights[positive_bias] = torch.full_like(weights[positive_bias], 0.5)
    return weights


def seeded_midas_weights(manifest, seed=WEIGHT_SEED):
    """The seeded weights (seeded_weights) the MiDaS reference was made with."""
    return seeded_weights(manifest, seed, "scratch.output_conv.4.bias")


def seeded_frame(seed=FRAME_SEED, size=FRAME_SIZE):
    """(1, 3, H, W) RGB frame in [0, 1]: smooth structure plus texture, deterministic."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size[0] // 8, size[1] // 8, generator=g)
    smooth = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(1, 3, *size, generator=g)).clamp(0, 1)


def official_midas(official_path):
    sys.path.insert(0, str(official_path))
    from lvdm.modules.encoders.midas.api import MiDaSInference
    from lvdm.modules.encoders.midas.midas.dpt_depth import DPTDepthModel
    return DPTDepthModel, MiDaSInference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="folder holding the official lvdm package")
    parser.add_argument("--extra-path", action="append", default=[], help="extra sys.path entry (e.g. timm)")
    args = parser.parse_args(argv)
    sys.path[:0] = args.extra_path
    DPTDepthModel, MiDaSInference = official_midas(args.official)

    model = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    manifest = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / MANIFEST).write_text(json.dumps({
        "source": "AILab-CVC/Make-Your-Video lvdm/modules/encoders/midas, DPTDepthModel(backbone='vitb_rn50_384', "
                  "non_negative=True): the layout of dpt_hybrid-midas-501f0c75.pt",
        "keys": manifest,
    }, indent=0) + "\n")
    print(f"{len(manifest)} keys, {sum(math.prod(s) for _, s in manifest)} values -> {FIXTURES / MANIFEST}")

    weights = seeded_midas_weights(manifest)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random_dpt_hybrid.pt"
        torch.save(weights, path)
        midas = MiDaSInference(model_type="dpt_hybrid", model_path=str(path)).eval()

    frame = seeded_frame()
    with torch.no_grad():
        # LatentDepthDiffusion.get_batch_depth on frames in [-1, 1]: prepare_midas_input (bicubic to
        # 384x384), the MiDaS wrapper, then bicubic back to the target size.
        x = frame * 2.0 - 1.0
        x_midas = F.interpolate(x, size=(384, 384), mode="bicubic")
        depth_384 = midas(x_midas)
        depth = F.interpolate(depth_384, size=FRAME_SIZE, mode="bicubic", align_corners=False)
    from safetensors.torch import save_file
    save_file({"frame": frame.contiguous(), "depth_384": depth_384.contiguous(), "depth": depth.contiguous()},
              str(FIXTURES / REFERENCE),
              metadata={"weight_seed": str(WEIGHT_SEED), "frame_seed": str(FRAME_SEED)})
    print(f"depth_384 range {depth_384.min().item():.4f}..{depth_384.max().item():.4f}, "
          f"std {depth_384.std().item():.4f} -> {FIXTURES / REFERENCE}")


if __name__ == "__main__":
    main()
