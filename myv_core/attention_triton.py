"""Fused temporal attention in Triton: band mask, both relative-position terms, fp32 softmax.

One program per (sequence, head, block of BT query frames). A query block of frames
s .. s+BT-1 needs the keys s-(W-1) .. s+BT-1 (the causal band of W = window frames), so one
program loads a (BT, D) query tile and a (BK >= BT+W-1, D) key/value tile, and computes
    logits[r, c] = scale * (q_r . k_c + q_r . rel_k[d(r, c)])        (fp32 accumulation)
with the relative term as a (BT, W) product q @ rel_k_band^T moved to key columns (c = r + o),
masks everything outside the band in registers (no mask tensor anywhere), takes the softmax in
fp32, and writes out_r = p @ v + p_band @ rel_v_band, with p_band the probabilities moved back
to band offsets. Logits never leave the chip; memory traffic is q, k, v and out once (k and v are
re-read by the neighbouring block, from cache).

Inputs fp16, bf16 or fp32. fp16/bf16: the dot products run on the input dtype with fp32
accumulation and the probabilities are rounded to the input dtype for the p @ v product (as in
flash attention); fp32: every product in IEEE fp32.

Runs on CUDA, and on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before
triton is imported), which is how the tests check it without a GPU.
"""

import os

import torch
import triton
import triton.language as tl

from .attention import CAUSAL_WINDOW

BLOCK_T = 16  # query frames per program (tl.dot needs >= 16)


@triton.jit
def _dot(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation. UPCAST: bf16 operands multiplied as fp32 (exact products,
    the same result up to summation order): Triton's CPU interpreter keeps bf16 as raw uint16
    and cannot multiply it."""
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    elif UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _temporal_attention_kernel(
        Q, K, V, RK, RV, O,
        frames, heads, stride_qs, stride_qt, stride_ks, stride_kt, stride_vs, stride_vt,
        stride_os, stride_ot, stride_r, scale,
        D: tl.constexpr, DP: tl.constexpr, W: tl.constexpr, WP: tl.constexpr,
        MAXD: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr,
        UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    blk = tl.program_id(1)
    seq = (pid // heads).to(tl.int64)
    head = pid % heads

    r = tl.arange(0, BT)
    c = tl.arange(0, BK)
    o = tl.arange(0, WP)
    dd = tl.arange(0, DP)
    dmask = dd < D
    qi = blk * BT + r  # query frames of this block
    kj = blk * BT - (W - 1) + c  # key frames of its window

    qptr = Q + seq * stride_qs + head * D + qi[:, None] * stride_qt + dd[None, :]
    q = tl.load(qptr, mask=(qi[:, None] < frames) & dmask[None, :], other=0.0)
    kin = (kj >= 0) & (kj < frames)
    kptr = K + seq * stride_ks + head * D + kj[:, None] * stride_kt + dd[None, :]
    k = tl.load(kptr, mask=kin[:, None] & dmask[None, :], other=0.0)
    vptr = V + seq * stride_vs + head * D + kj[:, None] * stride_vt + dd[None, :]
    v = tl.load(vptr, mask=kin[:, None] & dmask[None, :], other=0.0)

    # Band tables: row o is for key frame i - (W - 1) + o, distance o - (W - 1), clamped.
    dist = tl.minimum(tl.maximum(o - (W - 1), -MAXD), MAXD) + MAXD
    tmask = (o[:, None] < W) & dmask[None, :]
    rk = tl.load(RK + dist[:, None] * stride_r + dd[None, :], mask=tmask, other=0.0)
    rv = tl.load(RV + dist[:, None] * stride_r + dd[None, :], mask=tmask, other=0.0)

    qk = _dot(q, tl.trans(k), IEEE, UPCAST)  # (BT, BK)
    qr = _dot(q, tl.trans(rk), IEEE, UPCAST)  # (BT, WP)

    off = c[None, :] - r[:, None]  # band offset of key column c for query row r
    valid = (off >= 0) & (off < W) & (kj[None, :] >= 0) & (kj[None, :] < frames)
    rel = tl.gather(qr, tl.minimum(tl.maximum(off, 0), WP - 1), 1)  # (BT, BK)
    logits = (qk + rel) * scale
    logits = tl.where(valid, logits, -1.0e30)
    m = tl.max(logits, 1)
    p = tl.exp(logits - m[:, None])
    p = tl.where(valid, p, 0.0)
    total = tl.sum(p, 1)
    p = p / tl.where(total > 0, total, 1.0)[:, None]

    # Probabilities at band offsets: p_band[r, o] = p[r, r + o].
    pb = tl.gather(p, tl.minimum(r[:, None] + o[None, :], BK - 1), 1)  # (BT, WP)
    pb = tl.where(o[None, :] < W, pb, 0.0)
    acc = _dot(p.to(v.dtype), v, IEEE, UPCAST)
    acc += _dot(pb.to(rv.dtype), rv, IEEE, UPCAST)

    optr = O + seq * stride_os + head * D + qi[:, None] * stride_ot + dd[None, :]
    tl.store(optr, acc.to(O.dtype.element_ty), mask=(qi[:, None] < frames) & dmask[None, :])


def interpreted():
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1 when imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _pow2(x, least=16):
    return max(least, triton.next_power_of_2(x))


def temporal_attention_triton(q, k, v, rel_k, rel_v, heads, window=CAUSAL_WINDOW):
    """Same contract as `myv_core.attention.temporal_attention_torch`, as one Triton kernel.

    q, k, v: (sequences, frames, heads * head_dim), last dimension contiguous (any other strides).
    """
    seqs, frames, inner = q.shape
    head_dim = inner // heads
    out = torch.empty_like(q)
    if seqs == 0 or frames == 0:
        return out
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    rel_k = rel_k.to(device=q.device, dtype=q.dtype).contiguous()
    rel_v = rel_v.to(device=q.device, dtype=q.dtype).contiguous()
    max_distance = (rel_k.shape[0] - 1) // 2
    grid = (seqs * heads, triton.cdiv(frames, BLOCK_T))
    _temporal_attention_kernel[grid](
        q, k, v, rel_k, rel_v, out,
        frames, heads, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), rel_k.stride(0), head_dim ** -0.5,
        D=head_dim, DP=_pow2(head_dim), W=window, WP=_pow2(window), MAXD=max_distance,
        BT=BLOCK_T, BK=_pow2(BLOCK_T + window - 1), IEEE=q.dtype == torch.float32,
        UPCAST=q.dtype == torch.bfloat16 and interpreted())
    return out


# Agreement the first CUDA run asks of the kernel before trusting it: a few ulps of the output's
# scale in 16 bits (the kernel rounds the probabilities to the input dtype for p @ v), 1e-4 in fp32.
SELF_CHECK_TOL = {torch.float32: 1e-4, torch.float16: 4 * 2.0 ** -10, torch.bfloat16: 4 * 2.0 ** -7}


def disagreement(device):
    """None when the kernel gives temporal_attention_torch's output on `device`, else what differs.

    Cases: fp32, fp16 and bf16; a short clip and one longer than the causal band (the banded path).
    A kernel that fails to compile or run raises.
    """
    from .attention import temporal_attention_torch

    g = torch.Generator().manual_seed(0)
    heads, head_dim = 2, 16
    for frames in (5, CAUSAL_WINDOW + 9):
        inputs = [torch.randn(3, frames, heads * head_dim, generator=g) for _ in range(3)]
        inputs += [torch.randn(33, head_dim, generator=g) for _ in range(2)]
        for dtype, tol in SELF_CHECK_TOL.items():
            q, k, v, rel_k, rel_v = (x.to(device=device, dtype=dtype) for x in inputs)
            want = temporal_attention_torch(q, k, v, rel_k, rel_v, heads).float()
            got = temporal_attention_triton(q, k, v, rel_k, rel_v, heads).float()
            error = (got - want).abs().max().item()
            if not error <= tol * max(1.0, want.abs().max().item()):  # also catches NaN
                return (f"differs from the PyTorch path by {error:.3g} ({str(dtype).split('.')[-1]}, "
                        f"{frames} frames)")
    return None
