"""Weight memory of the full-size Make-Your-Video UNet (spatial + temporal) per weight_dtype.

    python benchmarks/weight_memory.py

Counted from the released model's key manifest (tests/fixtures/myv_key_manifest_full.json: every UNet
key and its shape), so it needs neither the 8 GB file nor a GPU. The figure is the weights alone, as
MYV Checkpoint Loader stores them (every UNet and temporal tensor in the chosen dtype); activations,
the text encoder and the VAE come on top. Ratios are against fp32 from the same count.
"""

import json
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from myv_core.layout import is_temporal_key, temporal_transformer_prefixes  # noqa: E402

MANIFEST = REPO / "tests" / "fixtures" / "myv_key_manifest_full.json"
DTYPES = {"fp32": torch.float32, "fp16 / bf16": torch.float16,
          "fp8_e4m3fn(_fast) / fp8_e5m2": torch.float8_e4m3fn}


def main():
    keys = json.loads(MANIFEST.read_text())["keys"]
    prefixes = temporal_transformer_prefixes(keys)
    counts = {"spatial": 0, "temporal": 0}
    for key, shape in keys.items():
        counts["temporal" if is_temporal_key(key, prefixes) else "spatial"] += math.prod(shape)
    total = sum(counts.values())
    print(f"Make-Your-Video UNet: {counts['spatial'] / 1e6:.1f} M spatial + {counts['temporal'] / 1e6:.1f} M "
          f"temporal parameters ({len(keys)} tensors)")
    print(f"{'weight_dtype':32}  {'spatial GiB':>11}  {'temporal GiB':>12}  {'total GiB':>9}  {'vs fp32':>7}")
    fp32 = total * torch.float32.itemsize
    for name, dtype in DTYPES.items():
        size = dtype.itemsize
        print(f"{name:32}  {counts['spatial'] * size / 2**30:>11.2f}  {counts['temporal'] * size / 2**30:>12.2f}  "
              f"{total * size / 2**30:>9.2f}  {total * size / fp32:>7.2f}")


if __name__ == "__main__":
    main()
