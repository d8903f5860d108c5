"""Temporal attention: the pure-torch path and the Triton kernel against the equations.

The Triton kernel runs under Triton's CPU interpreter (TRITON_INTERPRET=1) in a subprocess, so the
variable is set before triton is imported there whatever this process imported already.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from myv_core import attention as attention_module
from myv_core.attention import (pick_attention, temporal_attention, temporal_attention_torch,
                                triton_available)

ROOT = Path(__file__).resolve().parent.parent


def reference(q, k, v, rel_k, rel_v, heads, window=16):
    """The equations in float64, one query frame at a time."""
    n, t, inner = q.shape
    d = inner // heads
    m = (rel_k.shape[0] - 1) // 2
    q, k, v = (x.double().reshape(n, t, heads, d) for x in (q, k, v))
    rel_k, rel_v = rel_k.double(), rel_v.double()
    out = torch.zeros(n, t, heads, d, dtype=torch.float64)
    for i in range(t):
        keys = torch.arange(max(0, i - window + 1), i + 1)
        dist = (keys - i).clamp(-m, m) + m
        kk = k[:, keys] + rel_k[dist][None, :, None]  # (n, keys, heads, d)
        logits = torch.einsum("nhd,njhd->nhj", q[:, i], kk) * d ** -0.5
        p = logits.softmax(-1)
        out[:, i] = torch.einsum("nhj,njhd->nhd", p, v[:, keys] + rel_v[dist][None, :, None])
    return out.reshape(n, t, inner)


def make(seqs, frames, heads, head_dim, dtype=torch.float32, seed=0, max_distance=16):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(seqs, frames, heads * head_dim, generator=g).to(dtype) for _ in range(3))
    rel_k, rel_v = (torch.randn(2 * max_distance + 1, head_dim, generator=g).to(dtype) for _ in range(2))
    return q, k, v, rel_k, rel_v


@pytest.mark.parametrize("frames", [1, 7, 16, 17, 40, 100])
@pytest.mark.parametrize("heads,head_dim", [(1, 64), (3, 16)])
def test_torch_path_matches_equations(frames, heads, head_dim):
    q, k, v, rk, rv = make(3, frames, heads, head_dim, seed=frames)
    got = temporal_attention_torch(q, k, v, rk, rv, heads)
    assert got.shape == q.shape and got.dtype == torch.float32
    assert (got.double() - reference(q, k, v, rk, rv, heads)).abs().max() <= 1e-5


@pytest.mark.parametrize("window", [1, 4, 40])
@pytest.mark.parametrize("frames", [3, 20, 50])
def test_torch_path_other_windows(frames, window):
    """Window and relative range are independent: a window wider than the table clamps distances."""
    q, k, v, rk, rv = make(2, frames, 2, 16, seed=window, max_distance=8)
    got = temporal_attention_torch(q, k, v, rk, rv, 2, window=window)
    assert (got.double() - reference(q, k, v, rk, rv, 2, window)).abs().max() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frames", [7, 16, 40])
def test_torch_path_half_inputs(dtype, frames):
    q, k, v, rk, rv = make(4, frames, 2, 32, dtype=dtype, seed=frames)
    got = temporal_attention_torch(q, k, v, rk, rv, 2)
    assert got.dtype == dtype
    want = reference(q, k, v, rk, rv, 2)  # exact math on the rounded inputs
    # Computed in fp32, only the output is rounded: within one ulp of the output's dtype.
    ulp = torch.finfo(dtype).eps * want.abs().clamp(min=1.0)
    assert ((got.double() - want).abs() <= ulp).all()


@pytest.mark.parametrize("frames", [1, 12, 16, 24, 70])
def test_torch_path_chunking_gives_the_same_result(monkeypatch, frames):
    q, k, v, rk, rv = make(10, frames, 2, 16, seed=3)
    whole = temporal_attention_torch(q, k, v, rk, rv, 2)
    keys = frames if frames <= 16 else 31
    padded = frames if frames <= 16 else -(-frames // 16) * 16
    monkeypatch.setattr(attention_module, "LOGIT_CHUNK_ELEMENTS", 3 * padded * keys)  # 3 sequences
    assert torch.equal(temporal_attention_torch(q, k, v, rk, rv, 2), whole)


def test_torch_path_takes_strided_inputs():
    """q, k, v as column slices of one projection (rows not contiguous) give the same result."""
    q, k, v, rk, rv = make(3, 20, 2, 16, seed=5)
    packed = torch.cat([q, k, v], dim=-1)
    got = temporal_attention_torch(*packed.split(32, dim=-1), rk, rv, 2)
    assert torch.equal(got, temporal_attention_torch(q, k, v, rk, rv, 2))


def test_default_dispatch_on_cpu_is_the_torch_path():
    assert not triton_available("cpu")
    assert pick_attention(torch.device("cpu")) is temporal_attention_torch
    q, k, v, rk, rv = make(2, 20, 2, 16)
    assert torch.equal(temporal_attention(q, k, v, rk, rv, 2), temporal_attention_torch(q, k, v, rk, rv, 2))


# The Triton kernel, interpreted on the CPU, against the torch path. Small cases: seconds in all.
TRITON_CASES = [(dtype, frames, heads, head_dim)
                for dtype in ("float32", "float16", "bfloat16")
                for frames in (1, 7, 16, 20, 40)
                for heads, head_dim in ((2, 16), (1, 64))]

TRITON_SCRIPT = textwrap.dedent("""
    import json, os, sys
    assert os.environ.get("TRITON_INTERPRET") == "1"
    sys.path.insert(0, sys.argv[1])
    import torch
    from myv_core.attention import temporal_attention_torch
    from myv_core.attention_triton import temporal_attention_triton
    results = {}
    for dtype, frames, heads, head_dim in json.loads(sys.argv[2]):
        g = torch.Generator().manual_seed(frames)
        q, k, v = (torch.randn(3, frames, heads * head_dim, generator=g).to(getattr(torch, dtype))
                   for _ in range(3))
        rk, rv = (torch.randn(33, head_dim, generator=g).to(q.dtype) for _ in range(2))
        got = temporal_attention_triton(q, k, v, rk, rv, heads)
        want = temporal_attention_torch(q, k, v, rk, rv, heads)
        results[f"{dtype}-{frames}-{heads}-{head_dim}"] = {
            "dtype": str(got.dtype).split(".")[-1], "shape": list(got.shape),
            "err": (got.float() - want.float()).abs().max().item(),
            "scale": want.float().abs().max().item()}
    # window 4 and a strided q (a column slice of a wider tensor)
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(2, 30, 96, generator=g)
    q, k, v = wide.split(32, dim=-1)
    rk, rv = (torch.randn(17, 16, generator=g) for _ in range(2))
    got = temporal_attention_triton(q, k, v, rk, rv, 2, window=4)
    want = temporal_attention_torch(q, k, v, rk, rv, 2, window=4)
    results["window4-strided"] = {"dtype": "float32", "shape": list(got.shape),
                                  "err": (got - want).abs().max().item(), "scale": 1.0}
    from myv_core.attention_triton import disagreement
    results["self_check"] = disagreement("cpu")
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def interpreted_kernel():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cases = json.dumps(TRITON_CASES)
    res = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, str(ROOT), cases], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


# fp32: both paths compute in fp32 (IEEE products in the kernel). fp16/bf16: the kernel rounds
# the probabilities to the input dtype for p @ v (as flash attention does) and both round the
# output: a few ulps of the output's scale.
TRITON_TOL = {"float32": 1e-5, "float16": 4 * 2.0 ** -10, "bfloat16": 4 * 2.0 ** -7}


@pytest.mark.parametrize("case", TRITON_CASES, ids=lambda c: "-".join(map(str, c)))
def test_triton_kernel_interpreted_matches_torch_path(interpreted_kernel, case):
    dtype, frames, heads, head_dim = case
    r = interpreted_kernel[f"{dtype}-{frames}-{heads}-{head_dim}"]
    assert r["dtype"] == dtype and r["shape"] == [3, frames, heads * head_dim]
    assert r["err"] <= TRITON_TOL[dtype] * max(1.0, r["scale"]), r


def test_triton_kernel_interpreted_other_window_and_strided_input(interpreted_kernel):
    assert interpreted_kernel["window4-strided"]["err"] <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frames", [1, 16, 40, 100])
def test_default_on_cuda_matches_torch_path(dtype, frames):
    assert triton_available("cuda")
    q, k, v, rk, rv = (x.cuda() for x in make(64, frames, 5, 64, dtype=dtype, seed=frames))
    got = temporal_attention(q, k, v, rk, rv, 5)
    want = temporal_attention_torch(q, k, v, rk, rv, 5)
    assert got.dtype == dtype
    tol = {torch.float32: 1e-4, torch.float16: 4 * 2.0 ** -10, torch.bfloat16: 4 * 2.0 ** -7}[dtype]
    assert (got.float() - want.float()).abs().max() <= tol * max(1.0, want.float().abs().max().item())


# The first CUDA run compares the kernel with the torch path before trusting it (attention.triton_agrees).
# On the CPU the kernel itself is replaced here by a wrong one and by one that fails to compile.

def test_triton_self_check_passes_with_the_real_kernel(interpreted_kernel):
    assert interpreted_kernel["self_check"] is None


@pytest.mark.parametrize("failure", ["disagrees", "fails to compile"])
def test_triton_kernel_that_disagrees_or_fails_falls_back_with_one_line(failure, monkeypatch, caplog):
    attention_triton = pytest.importorskip("myv_core.attention_triton")
    from myv_core.attention import temporal_attention_torch, triton_agrees

    def wrong(q, k, v, rel_k, rel_v, heads, window=16):
        return temporal_attention_torch(q, k, v, rel_k, rel_v, heads, window) * 1.01

    def broken(*args, **kwargs):
        raise RuntimeError("PassManager::run failed\nmore detail")

    monkeypatch.setattr(attention_triton, "temporal_attention_triton", wrong if failure == "disagrees" else broken)
    with caplog.at_level(logging.WARNING):
        assert triton_agrees("cpu") is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "using the PyTorch path instead" in lines[0]
    expected = "differs from the PyTorch path by" if failure == "disagrees" else \
        "failed to compile or run (RuntimeError: PassManager::run failed)"
    assert expected in lines[0], lines[0]
