"""Temporal self-attention of Make-Your-Video: causal band mask and relative positions.

Every attention function in this module has the signature of `temporal_attention`, so a faster
kernel can replace the pure-torch one without touching the layers that call it.
"""

import torch

# Frame i attends to frames i - (CAUSAL_WINDOW - 1) .. i. The official code hard-codes this band
# (16 frames, the trained clip length); it does not depend on the relative-position range.
CAUSAL_WINDOW = 16

# Upper bound on the number of float32 logits held at once; the batch (b*h*w sequences) is
# processed in chunks below it so memory stays bounded for large latents and long clips.
LOGIT_CHUNK_ELEMENTS = 1 << 26


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


def temporal_attention(q, k, v, rel_k, rel_v, heads, window=CAUSAL_WINDOW):
    """Masked self-attention over frames with learned relative positions.

    q, k, v: (sequences, frames, heads * head_dim). rel_k, rel_v: (2 * max_distance + 1, head_dim)
    tables. For query frame i and key frame j with d = clamp(j - i) + max_distance:
        logits[i, j] = (q_i . k_j + q_i . rel_k[d]) / sqrt(head_dim), band-masked, softmax in fp32
        out_i = sum_j p[i, j] * (v_j + rel_v[d])
    Returns (sequences, frames, heads * head_dim) in q's dtype.
    """
    seqs, frames, inner = q.shape
    head_dim = inner // heads
    scale = head_dim ** -0.5
    max_distance = (rel_k.shape[0] - 1) // 2

    dist = relative_distance_index(frames, max_distance, device=q.device)
    rk = rel_k.to(device=q.device, dtype=torch.float32)[dist]  # (T, T, D)
    rv = rel_v.to(device=q.device, dtype=torch.float32)[dist]
    blocked = ~causal_band_mask(frames, window, device=q.device)
    fill = torch.finfo(torch.float32).min

    out = torch.empty_like(q)
    chunk = max(1, LOGIT_CHUNK_ELEMENTS // (heads * frames * frames))
    for start in range(0, seqs, chunk):
        stop = min(seqs, start + chunk)
        qc, kc, vc = (t[start:stop].float().unflatten(-1, (heads, head_dim)).transpose(1, 2)
                      for t in (q, k, v))  # (n, heads, T, D)
        logits = torch.matmul(qc, kc.transpose(-1, -2))
        logits += torch.einsum("nhid,ijd->nhij", qc, rk)
        logits *= scale
        logits.masked_fill_(blocked, fill)
        probs = logits.softmax(dim=-1)
        o = torch.matmul(probs, vc) + torch.einsum("nhij,ijd->nhid", probs, rv)
        out[start:stop] = o.transpose(1, 2).flatten(2).to(q.dtype)
    return out
