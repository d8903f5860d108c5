"""Peak memory of reading a large Lightning-style checkpoint: the pack's reader vs torch's weights-only load.

    .venv/bin/python benchmarks/checkpoint_read.py [--size-gb 2] [--tensors 2000] [--dir DIR] [--touch]

Writes one synthetic checkpoint in a temporary folder (under --dir, default the system's): a dict
with "state_dict" (--size-gb of fp32 tensors in --tensors equal parts, official key names) and a
few non-tensor entries as Lightning writes them (epoch, global_step, version, loop and callback
state, hyper-parameters with a set). Then each reader runs in its own fresh subprocess on that
file, the baseline first:

- torch.load(weights_only=True, mmap=True): PyTorch's own memory-mapped weights-only load;
- file_state_dict: the pack's one reader (myv_core.checkpoint, safe_pickle, myv_core.tensor_file), as
  every node and the converter call it: the file indexed, each tensor read when it is used;
- torch.load(weights_only=True) without mmap, for scale: what a read that copies the tensors costs.

Peak memory: growth of the resident set while reading (VmHWM from /proc/self/status after
resetting it through /proc/self/clear_refs, over the resident set just before), against the file
size. A memory-mapped read maps the tensors without reading them, so the growth stays far below the
file size. --touch also sums every tensor, which reads the whole file: through the mapping for
torch's mmap load (those pages count in the resident set for as long as a tensor views them), one
tensor at a time into memory of its own for the pack's reader, as its loaders place them. The non-tensor entries are ones
torch's weights-only load accepts, so the baseline reads the same file. A benchmark, not a test: it
prints, it asserts nothing.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_step import REPO, PeakMemory  # noqa: E402

READERS = {"baseline": "torch.load(weights_only=True, mmap=True)", "ours": "file_state_dict (indexed)",
           "unmapped": "torch.load(weights_only=True) without mmap"}


def write_checkpoint(path, size_gb, tensors):
    """A Lightning-style checkpoint of about `size_gb` GiB of fp32 tensors; returns the tensor count."""
    numel = int(size_gb * 2**30 / 4 / tensors)
    state_dict = OrderedDict()
    for i in range(tensors):
        state_dict[f"model.diffusion_model.input_blocks.{i}.0.weight"] = torch.full((numel,), float(i))
    torch.save({
        "epoch": 3, "global_step": 12000, "pytorch-lightning_version": "2.6.6", "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'}": {
            "best_model_score": torch.tensor(0.0831), "best_model_path": "epoch=3.ckpt", "dirpath": "logs/ckpt"}},
        "optimizer_states": [], "lr_schedulers": [],
        "hyper_parameters": {"base_learning_rate": 5e-5, "monitor": "val/loss", "tags": {"depth", "video"}},
    }, path)
    return len(state_dict)


def read(reader, path, touch):
    """Runs in the worker subprocess: one reader on `path`; prints a JSON line."""
    sys.path.insert(0, str(REPO))
    from myv_core.checkpoint import file_state_dict
    from myv_core.tensor_file import read as read_tensor
    memory = PeakMemory("cpu")
    memory.start()
    start = time.perf_counter()
    if reader == "ours":
        sd = file_state_dict(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=reader == "baseline")["state_dict"]
    seconds = time.perf_counter() - start
    total = sum(float(read_tensor(v).sum()) for v in sd.values()) if touch else None
    print(json.dumps({"peak": memory.stop(), "how": memory.how, "seconds": seconds, "tensors": len(sd),
                      "bytes": sum(v.numel() * v.dtype.itemsize for v in sd.values()), "sum": total}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="GiB of fp32 tensors in the file")
    parser.add_argument("--tensors", type=int, default=2000,
                        help="number of tensors they are split into (the release's UNet alone has 1,606)")
    parser.add_argument("--dir", help="folder for the temporary file (default: the system's temp folder)")
    parser.add_argument("--touch", action="store_true", help="also sum every tensor after reading")
    parser.add_argument("--worker", choices=sorted(READERS), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return read(args.worker, args.path, args.touch)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "model.ckpt"
        count = write_checkpoint(path, args.size_gb, args.tensors)
        size = path.stat().st_size
        print(f"checkpoint: {size / 2**30:.2f} GiB file, {count} fp32 tensors + Lightning-style entries, "
              f"torch {torch.__version__}, python {sys.version.split()[0]}")
        print(f"{'reader':>42}  {'peak RSS growth MiB':>19}  {'of file size':>12}  {'read s':>6}  tensors")
        results = {}
        for reader in ("baseline", "ours", "unmapped"):
            command = [sys.executable, __file__, "--worker", reader, "--path", str(path)]
            done = subprocess.run(command + (["--touch"] if args.touch else []), cwd=REPO, capture_output=True,
                                  text=True, check=True)
            results[reader] = result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{READERS[reader]:>42}  {result['peak'] / 2**20:>19.1f}  {100 * result['peak'] / size:>11.2f}%  "
                  f"{result['seconds']:>6.2f}  {result['tensors']}")
        same = len({(r["bytes"], r["sum"]) for r in results.values()}) == 1
        print(f"peak memory measured by {results['ours']['how']}; the readers return "
              f"{'the same ' if same else 'DIFFERENT '}{results['ours']['bytes'] / 2**30:.2f} GiB of tensors"
              f"{' (equal sums)' if args.touch and same else ''}")


if __name__ == "__main__":
    main()
