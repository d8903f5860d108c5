"""Split a Make-Your-Video checkpoint into safetensors files ComfyUI users can load.

    python -m myv_core.convert model.ckpt --out-dir DIR [--dtype fp16] [--name NAME]

writes NAME_spatial.safetensors (SD2-layout UNet + VAE + text encoder, for ComfyUI's own
checkpoint loader), NAME_temporal.safetensors (the temporal layers) and, when the checkpoint
carries one, NAME_depth.safetensors (its MiDaS network). The files are read back and reassembled
to prove the round trip is exact before the command reports success.
"""

import argparse
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError, file_state_dict, split_checkpoint
from .layout import PART_PREFIXES, UNET_PREFIX, join_unet
from .tensor_file import FileError, read, safetensors_index, write_safetensors

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
TEMPORAL_FORMAT = "makeyourvideo-temporal"


def spatial_state_dict(parts):
    """A ComfyUI-loadable SD2 checkpoint: prefixed UNet, VAE, text encoder and schedule buffers."""
    sd = {UNET_PREFIX + k: v for k, v in parts.unet.items()}
    for part in ("vae", "text_encoder", "ema"):
        sd.update({PART_PREFIXES[part] + k: v for k, v in getattr(parts, part).items()})
    sd.update(parts.schedule)
    return sd


def reassemble(spatial_sd, temporal_sd, depth_sd=None):
    """The official-layout state dict rebuilt from the converter's files (inverse of the split)."""
    unet = {k[len(UNET_PREFIX):]: v for k, v in spatial_sd.items() if k.startswith(UNET_PREFIX)}
    sd = {k: v for k, v in spatial_sd.items() if not k.startswith(UNET_PREFIX)}
    sd.update({UNET_PREFIX + k: v for k, v in join_unet(unet, temporal_sd).items()})
    sd.update({PART_PREFIXES["depth"] + k: v for k, v in (depth_sd or {}).items()})
    return sd


def convert(source, out_dir, dtype=None, name=None):
    """Write the part files of `source` into `out_dir` and verify them; returns ({part: path}, n).

    One tensor is in memory at a time, writing and verifying alike: the release converts in about
    the memory of its largest tensor.
    """
    original = file_state_dict(source)
    parts = split_checkpoint(original, f"'{Path(source).name}'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or Path(source).stem
    files = {"spatial": spatial_state_dict(parts), "temporal": parts.temporal, "depth": parts.depth}
    written = {}
    try:
        for part, sd in files.items():
            if not sd:
                continue
            path = out_dir / f"{name}_{part}.safetensors"
            write_safetensors(path, sd, dtype, metadata={"format": TEMPORAL_FORMAT} if part == "temporal" else None)
            written[part] = path
        return written, verify(original, written, dtype)
    except FileError as e:
        raise CheckpointError(f"'{Path(source).name}': {e}") from None


def verify(original, written, dtype=None):
    """Number of tensors checked; raises if reassembling the files does not give `original` back."""
    rebuilt = reassemble(*(safetensors_index(written[p])[0] if p in written else None
                           for p in ("spatial", "temporal", "depth")))
    if set(rebuilt) != set(original):
        diff = sorted(set(rebuilt) ^ set(original))[:10]
        raise CheckpointError(f"round trip changed the key set: {diff}")
    for key, value in original.items():
        expected, got = read(value, dtype), read(rebuilt[key])
        if got.dtype != expected.dtype or not torch.equal(got, expected):
            raise CheckpointError(f"round trip changed tensor {key}")
    return len(original)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m myv_core.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="Make-Your-Video model.ckpt (or .safetensors)")
    parser.add_argument("--out-dir", required=True, help="folder for the output files")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast weights (default: keep)")
    parser.add_argument("--name", help="file name stem (default: the checkpoint's)")
    args = parser.parse_args(argv)
    dtype = DTYPES.get(args.dtype)
    try:
        written, checked = convert(args.checkpoint, args.out_dir, dtype, args.name)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for part, path in written.items():
        print(f"{part:9s} {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    print(f"round trip verified: {checked} tensors identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
