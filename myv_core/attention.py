"""Temporal self-attention of Make-Your-Video: causal band mask and relative positions.

Every attention function in this module has the signature of `temporal_attention`, so a faster
kernel can replace the pure-torch one without touching the layers that call it:

    fn(q, k, v, rel_k, rel_v, heads, window=CAUSAL_WINDOW)

- `temporal_attention` (the default the layers use) dispatches: the Triton kernel
  (`myv_core.attention_triton`) when q is a CUDA tensor and Triton works there, else
  `temporal_attention_torch`.
- `temporal_attention_torch` is the pure-torch path. It never builds a (T, T, head_dim) table or
  a mask per sequence, and for clips longer than the band it only computes the band: every query
  frame sees at most `window` key frames, so logits and probabilities are (T, window) per
  sequence and head instead of (T, T).
"""

import functools
import logging

import torch

# Frame i attends to frames i - (CAUSAL_WINDOW - 1) .. i. The official code hard-codes this band
# (16 frames, the trained clip length); it does not depend on the relative-position range.
CAUSAL_WINDOW = 16

# Upper bound on the number of float32 logits (sequences * frames * keys per frame, one head at a
# time) held at once; the batch (b*h*w sequences) is processed in chunks below it so memory stays
# bounded for large latents and long clips. About ten buffers of this size (logits,
# probabilities, fp32 copies of one head's q/k/v) are alive at once: 2**20 fp32 elements are 4 MiB.
LOGIT_CHUNK_ELEMENTS = 1 << 20


def causal_band_mask(frames, window=CAUSAL_WINDOW, device=None):
    """Boolean (frames, frames) mask, True where query frame i may attend to key frame j.

    Built for any number of frames (the official mask is a precomputed 64x64 buffer).
    """
    i = torch.arange(frames, device=device)[:, None]
    j = torch.arange(frames, device=device)[None, :]
    return (j <= i) & (j > i - window)


def relative_distance_index(frames, max_distance, device=None):
    """(frames, frames) long tensor: clamp(j - i, -max_distance, max_distance) + max_distance."""
    i = torch.arange(frames, device=device)[:, None]
    j = torch.arange(frames, device=device)[None, :]
    return (j - i).clamp(-max_distance, max_distance) + max_distance


def band_tables(rel_k, rel_v, width, device):
    """The rows of the relative tables that a band of `width` key frames uses, as fp32.

    Row o is for key frame j = i - (width - 1) + o of query frame i, i.e. distance
    j - i = o - (width - 1), clamped to the table's range.
    """
    max_distance = (rel_k.shape[0] - 1) // 2
    offsets = torch.arange(width, device=device) - (width - 1)
    rows = offsets.clamp(-max_distance, max_distance) + max_distance
    return (rel_k.to(device=device, dtype=torch.float32)[rows],
            rel_v.to(device=device, dtype=torch.float32)[rows])


def _dense_head(qh, kh, vh, rk, rv, scale, upper):
    """Frames T <= window: every key j <= i is in the band. One head of a chunk of sequences.

    qh, kh, vh: (n, T, D) views (any dtype, rows may be strided). rk, rv: (T, D) fp32 band tables,
    row o for distance o - (T - 1); rk is pre-scaled. upper: (T, T) bool, True above the diagonal.
    Returns (n, T, D) fp32.
    """
    n, t, d = qh.shape
    qh, kh, vh = (x.to(torch.float32) for x in (qh, kh, vh))
    rel = torch.mm(qh.reshape(n * t, d), rk.t())  # (n*T, T): [i, o] = scale * q_i . rk[o]
    # logits[i, j] = scale * (q_i . k_j) + rel[i, j - i + T - 1]: a strided read of rel, rows
    # shifted by one each; the entries j > i read the next row and are masked below.
    logits = torch.baddbmm(rel.as_strided((n, t, t), (t * t, t - 1, 1), t - 1), qh,
                           kh.transpose(1, 2), beta=1.0, alpha=scale)
    del rel
    logits.masked_fill_(upper, torch.finfo(torch.float32).min)
    probs = logits.softmax(dim=-1)
    del logits
    out = torch.bmm(probs, vh)
    # Value term: probabilities moved from key j to band index o = j - i + T - 1 by a strided
    # write into rows of 2T - 1 (keys j > i, whose probabilities are exactly 0, land in columns
    # T .. 2T - 2 and are dropped), then @ the band table.
    skew = probs.new_zeros(n, t, 2 * t - 1)
    skew.as_strided((n, t, t), (t * (2 * t - 1), 2 * t - 2, 1), t - 1).copy_(probs)
    del probs
    out.view(n * t, d).addmm_(skew.view(n * t, 2 * t - 1)[:, :t], rv)
    return out


def _banded_head(qh, kh, vh, rk, rv, scale, window, block, before):
    """Frames T > window: query blocks of `block` frames against windows of block + window - 1 keys.

    qh, kh, vh: (n, T, D) views. rk, rv: (window, D) fp32 band tables, row o for distance
    o - (window - 1); rk is pre-scaled. before: (window - 1, window) bool, True where the first
    query frames' band reaches before frame 0. Logits and probabilities stay in band form
    (n, T, window). Returns (n, Tp, D) fp32 with Tp = T rounded up to the block.
    """
    n, t, d = qh.shape
    w = window
    nb = -(-t // block)
    tp = nb * block
    span = block + w - 1
    # All sequences' frames in one flat fp32 buffer with w - 1 frames in front: the key window of
    # query block g (global over sequences) starts at frame g * block, a uniform stride, so the
    # windows are a strided view that bmm reads directly. Windows of a sequence's first block
    # reach into the previous sequence's last frames (or the front padding): masked by `before`.
    def flat(x):
        buf = x.new_empty((w - 1 + n * tp, d), dtype=torch.float32)
        buf[:w - 1].zero_()
        body = buf[w - 1:].view(n, tp, d)
        body[:, :t] = x
        if tp > t:
            body[:, t:].zero_()
        return buf

    kb, vb = flat(kh), flat(vh)
    qb = flat(qh)[w - 1:] if tp > t else qh.to(torch.float32).reshape(n * t, d)
    kwin = kb.as_strided((n * nb, span, d), (block * d, d, 1))
    vwin = vb.as_strided((n * nb, span, d), (block * d, d, 1))
    full = torch.bmm(qb.view(n * nb, block, d), kwin.transpose(1, 2))  # (n*nb, block, span)
    # Query row r of a block sees band offset o at column r + o: a strided read.
    band = full.as_strided((n * nb, block, w), (block * span, span + 1, 1))
    logits = torch.mm(qb, rk.t()).view(n * nb, block, w)  # scale * q_i . rk[o]
    logits.add_(band, alpha=scale)
    del full, band
    logits.view(n, tp, w)[:, :w - 1].masked_fill_(before, torch.finfo(torch.float32).min)
    probs = logits.softmax(dim=-1)
    del logits
    out = torch.mm(probs.view(n * tp, w), rv)  # value-side relative term, (n*Tp, D)
    # Probabilities back to the key columns of each block: strided write into a zero buffer.
    spread = probs.new_zeros(n * nb, block, span)
    spread.as_strided((n * nb, block, w), (block * span, span + 1, 1)).copy_(probs)
    del probs
    out.view(n * nb, block, d).baddbmm_(spread, vwin)
    return out.view(n, tp, d)


def temporal_attention_torch(q, k, v, rel_k, rel_v, heads, window=CAUSAL_WINDOW):
    """Masked self-attention over frames with learned relative positions (pure torch).

    q, k, v: (sequences, frames, heads * head_dim). rel_k, rel_v: (2 * max_distance + 1, head_dim)
    tables. For query frame i and key frame j with d = clamp(j - i) + max_distance:
        logits[i, j] = (q_i . k_j + q_i . rel_k[d]) / sqrt(head_dim), band-masked, softmax in fp32
        out_i = sum_j p[i, j] * (v_j + rel_v[d])
    Computed in fp32 whatever the input dtype, one head and one chunk of sequences at a time.
    Returns (sequences, frames, heads * head_dim) in q's dtype.
    """
    seqs, frames, inner = q.shape
    head_dim = inner // heads
    scale = head_dim ** -0.5
    out = torch.empty_like(q)
    if seqs == 0 or frames == 0:
        return out
    dense = frames <= window
    width = frames if dense else window
    rk, rv = band_tables(rel_k, rel_v, width, q.device)
    rk = rk * scale
    block = window
    if dense:
        keys, padded = frames, frames
        mask = torch.ones(frames, frames, dtype=torch.bool, device=q.device).triu_(1)
    else:
        keys, padded = block + window - 1, -(-frames // block) * block
        i = torch.arange(window - 1, device=q.device)[:, None]
        o = torch.arange(window, device=q.device)[None, :]
        mask = (i - (window - 1) + o) < 0
    chunk = max(1, LOGIT_CHUNK_ELEMENTS // (padded * keys))
    for start in range(0, seqs, chunk):
        stop = min(seqs, start + chunk)
        for h in range(heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            qh, kh, vh = (x[start:stop, :, cols] for x in (q, k, v))
            if dense:
                o = _dense_head(qh, kh, vh, rk, rv, scale, mask)
            else:
                o = _banded_head(qh, kh, vh, rk, rv, scale, window, block, mask)[:, :frames]
            out[start:stop, :, cols] = o
    return out


@functools.cache
def _triton_works_on_cuda():
    return torch.cuda.is_available() and triton_agrees("cuda")


def triton_agrees(device):
    """Whether the Triton kernel runs on `device` and agrees with the torch path there.

    No GPU has been at hand for every release, so the kernel is not trusted before it has been
    compared; when it disagrees or fails to compile, one log line says so and the torch path is used.
    """
    try:
        from . import attention_triton
    except ImportError:  # no triton (e.g. Windows without triton-windows): the torch path, silently
        return False
    try:
        problem = attention_triton.disagreement(device)
    except Exception as e:  # compile errors, driver or architecture problems: all mean "do not use it"
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else "no detail"
        problem = f"failed to compile or run ({type(e).__name__}: {detail})"
    if problem is not None:
        logging.warning("Make-Your-Video: the Triton temporal attention kernel %s on %s; using the PyTorch "
                       "path instead (correct, somewhat slower).", problem, device)
        return False
    return True


def triton_available(device):
    """Whether the Triton kernel can run on `device` (checked once per process)."""
    return torch.device(device).type == "cuda" and _triton_works_on_cuda()


def pick_attention(device):
    """The attention function `temporal_attention` uses for tensors on `device`."""
    if triton_available(device):
        from .attention_triton import temporal_attention_triton
        return temporal_attention_triton
    return temporal_attention_torch


def temporal_attention(q, k, v, rel_k, rel_v, heads, window=CAUSAL_WINDOW):
    """The default temporal attention: the Triton kernel on CUDA when Triton works, else torch.

    Same contract as `temporal_attention_torch`.
    """
    return pick_attention(q.device)(q, k, v, rel_k, rel_v, heads, window)
