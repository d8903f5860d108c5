"""Temporal attention alone: this pack's attention vs a naive reference of the official equations.

    .venv/bin/python benchmarks/temporal_attention.py            # CPU (and CUDA when present)

The naive reference is written here from the official formulation (see
/work/shared/design/make_your_video_model.md): q.k by einsum, the relative-k term by einsum with
a gathered (T, T, head_dim) table, the band mask repeated to (sequences * heads, T, T), masked_fill
with the dtype's most negative value, softmax, p.v plus einsum(p, gathered (T, T, head_dim) rel-v
table). "ours" is `myv_core.attention.temporal_attention` (the default dispatch: pure torch on the
CPU, the Triton kernel on CUDA).

Each (configuration, implementation) runs in its own fresh subprocess, naive and ours in turns:
- peak memory, CPU: growth of the resident set (VmHWM, reset through /proc/self/clear_refs) during
  the first full-size call, over the resident set just before it (inputs already allocated, a
  small warm-up call done). glibc's mmap threshold is pinned to 128 KiB in the worker (mallopt), so
  every large buffer is its own mapping and leaves the resident set as soon as it is freed: the
  peak is the peak of live buffers, not of heap that malloc kept around. The output tensor is
  counted on both sides.
- peak memory, CUDA: torch.cuda.max_memory_allocated over what is allocated before the call.
- time: median of --repeats calls (fewer for the big cases) after the first call and one more
  warm-up call, with the mmap threshold set back to glibc's dynamic maximum (32 MiB), so buffers
  below it are reused from the heap as in a long-running process.
It asserts nothing: it is not a test.
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAD_DIM = 64
GiB = 1 << 30


def naive_attention(q, k, v, rel_k, rel_v, heads, window=16):
    """The official formulation, restated from the equations (memory-hungry on purpose)."""
    import torch
    n, t, inner = q.shape
    d = inner // heads
    m = (rel_k.shape[0] - 1) // 2
    scale = d ** -0.5

    def split(x):  # b n (h d) -> (b h) n d
        return x.reshape(n, t, heads, d).permute(0, 2, 1, 3).reshape(n * heads, t, d)

    q, k, v = split(q), split(k), split(v)
    i = torch.arange(t, device=q.device)[:, None]
    j = torch.arange(t, device=q.device)[None, :]
    dist = (j - i).clamp(-m, m) + m
    sim = torch.einsum("bid,bjd->bij", q, k) * scale
    rk = rel_k[dist]  # (T, T, D)
    sim2 = torch.einsum("btd,tsd->bts", q, rk) * scale
    sim = sim + sim2
    band = (j <= i) & (j > i - window)
    mask = band[None].repeat(n * heads, 1, 1)  # (b*h, T, T), as the official code does
    sim = sim.masked_fill(~mask, torch.finfo(sim.dtype).min)
    p = sim.softmax(dim=-1)
    out = torch.einsum("bij,bjd->bid", p, v)
    rv = rel_v[dist]
    out2 = torch.einsum("bts,tsd->btd", p, rv)
    out = out + out2
    return out.reshape(n, heads, t, d).permute(0, 2, 1, 3).reshape(n, t, inner)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def worker(a):
    if a.device == "cpu":
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: see the docstring
    import torch
    sys.path.insert(0, str(ROOT))
    from myv_core.attention import temporal_attention, pick_attention
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    device = torch.device(a.device)
    fn = naive_attention if a.impl == "naive" else temporal_attention
    inner = a.heads * HEAD_DIM

    def inputs(seqs, frames):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(seqs, frames, inner, generator=g).to(device, dtype) for _ in range(3))
        rk, rv = (torch.randn(33, HEAD_DIM, generator=g).to(device, dtype) for _ in range(2))
        return q, k, v, rk, rv

    with torch.no_grad():
        small = inputs(4, a.frames)
        fn(*small, a.heads)  # loads kernels / compiles the Triton kernel
        q, k, v, rk, rv = inputs(a.seqs, a.frames)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = rss_bytes()
            reset_hwm()
        t0 = time.perf_counter()
        out = fn(q, k, v, rk, rv, a.heads)
        sync()
        first = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else hwm_bytes()) - base
        check = out[:2].double().cpu()
        del out
        if device.type == "cpu":  # back to a warmed-up default-like malloc for the timed calls
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: glibc's dynamic maximum
            libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD: 2x, as glibc's dynamic rule sets it
            fn(q, k, v, rk, rv, a.heads)
        times = []
        for _ in range(a.repeats):
            sync()
            t0 = time.perf_counter()
            out = fn(q, k, v, rk, rv, a.heads)
            sync()
            times.append(time.perf_counter() - t0)
            del out
    used = a.impl if a.impl == "naive" else pick_attention(device).__name__
    print(json.dumps({"ms": 1e3 * statistics.median(times) if times else 1e3 * first,
                      "peak": peak, "fn": used, "check": check.flatten()[:4096].tolist()}))


def run_worker(impl, frames, seqs, heads, device, dtype, repeats, threads):
    cmd = [sys.executable, __file__, "--worker", impl, "--frames", str(frames), "--seqs", str(seqs),
           "--heads", str(heads), "--device", device, "--dtype", dtype, "--repeats", str(repeats),
           "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{impl} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--seqs", type=str, nargs="+", default=["2x32x32", "2x64x64"],
                   help="sequences as batch x height x width (or a plain count)")
    p.add_argument("--heads", type=int, nargs="+", default=[5, 20])
    p.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, + cuda if present)")
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default float32 on CPU, float16 on CUDA)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--limit-gb", type=float, default=8.0,
                   help="skip a side whose estimated memory exceeds this (default 8)")
    a, rest = p.parse_known_args()
    if a.worker:
        a.impl = a.worker
        a.frames, a.seqs, a.heads, a.device = a.frames[0], int(a.seqs[0]), a.heads[0], a.device[0]
        a.dtype = a.dtype or "float32"
        return worker(a)

    import torch
    devices = a.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"torch {torch.__version__}, threads {a.threads or torch.get_num_threads()}, "
          f"head_dim {HEAD_DIM}, window 16, max distance 16, load average "
          f"{open('/proc/loadavg').read().split()[0]}")
    head = (f"{'device':6} {'dtype':8} {'seqs':>8} {'T':>4} {'heads':>5} {'naive ms':>10} {'ours ms':>9} "
            f"{'speedup':>7} {'naive MiB':>10} {'ours MiB':>9} {'mem ratio':>9} {'max |d|':>8}")
    print(head)
    for device in devices:
        dtype = a.dtype or ("float32" if device == "cpu" else "float16")
        size = 2 if dtype in ("float16", "bfloat16") else 4
        for spec in a.seqs:
            seqs = 1
            for part in spec.split("x"):
                seqs *= int(part)
            for frames in a.frames:
                for heads in a.heads:
                    inner = heads * HEAD_DIM
                    io = 4 * seqs * frames * inner * size  # q, k, v, out
                    logits = seqs * heads * frames * frames
                    # sim, sim2, masked, p in the dtype + the bool mask + einsum temporaries
                    naive_need = io + logits * (5 * size + 1)
                    ours_need = io + 3 * seqs * frames * inner * 4  # fp32 copies in the worst case
                    work = seqs * heads * frames * min(frames, 31) * HEAD_DIM
                    repeats = max(1, min(a.repeats, int(2e10 // max(1, work * frames / 16))))
                    row = f"{device:6} {dtype:8} {spec:>8} {frames:4d} {heads:5d} "
                    if ours_need > a.limit_gb * GiB:
                        print(row + f"skipped (inputs and output alone need {io / GiB:.1f} GB)", flush=True)
                        continue
                    naive = None
                    if naive_need <= a.limit_gb * GiB:
                        naive = run_worker("naive", frames, seqs, heads, device, dtype, repeats, a.threads)
                    ours = run_worker("ours", frames, seqs, heads, device, dtype, repeats, a.threads)
                    mib = 1 << 20
                    if naive is None:
                        print(row + f"{'skipped':>10} {ours['ms']:9.1f} {'':>7} "
                              f"{'':>10} {ours['peak'] / mib:9.0f}   (naive needs {naive_need / GiB:.1f} GB)",
                              flush=True)
                        continue
                    diff = max(abs(x - y) for x, y in zip(naive["check"], ours["check"]))
                    print(row + f"{naive['ms']:10.1f} {ours['ms']:9.1f} {naive['ms'] / ours['ms']:7.2f} "
                          f"{naive['peak'] / mib:10.0f} {ours['peak'] / mib:9.0f} "
                          f"{naive['peak'] / max(1, ours['peak']):9.2f} {diff:8.1e}", flush=True)


if __name__ == "__main__":
    main()
