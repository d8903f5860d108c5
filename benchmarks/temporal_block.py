"""The whole temporal layers, this pack vs the official modules, and where their time goes.

    .venv/bin/python benchmarks/temporal_block.py --official /path/to/Make-Your-Video

A benchmark, not a test. Builds the official TemporalTransformer (use_linear, relative positions,
causal mask) and TemporalConvBlock from a checkout of AILab-CVC/Make-Your-Video, loads the same
random weights into myv_core's modules (strict), and times both on the same input in turns (ours,
official, official, ours, ...) so background load hits both alike; medians are printed with their
ratio (official / ours: above 1 means the pack is faster). The transformer's parts are timed the
same way: the attention layer (q/k/v/out projections + attention), the feed-forward, and the
attention core alone. The GEMM floor is the time of the transformer's linear layers alone on
inputs of their sizes: an fp32 rewrite that keeps those products cannot be faster than it, so
official/floor bounds official/ours. Defaults: 16 frames, 512 sequences (2 x 16 x 16 positions),
320 channels, 5 heads of 64, fp32, torch's thread count.

The official code is not part of this repository: pass a checkout (it needs einops and opencv).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def in_turns(pairs, repeats):
    """{name: (ours seconds, official seconds)} medians, each pair timed alternately."""
    times = {name: ([], []) for name in pairs}
    for i in range(repeats):
        for name, (ours, official) in pairs.items():
            order = ((0, ours), (1, official)) if i % 2 == 0 else ((1, official), (0, ours))
            for side, fn in order:
                start = time.perf_counter()
                fn()
                times[name][side].append(time.perf_counter() - start)
    return {name: (statistics.median(a), statistics.median(b)) for name, (a, b) in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="checkout of AILab-CVC/Make-Your-Video (holds lvdm/)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="latent height = width")
    parser.add_argument("--batch", type=int, default=2, help="videos (cfg's cond + uncond: 2)")
    parser.add_argument("--channels", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    sys.path.insert(0, args.official)
    from lvdm.modules.attention import TemporalTransformer as OfficialTransformer  # the official code
    from lvdm.modules.networks.openaimodel3d import TemporalConvBlock as OfficialConv
    sys.path.insert(0, str(REPO))
    from myv_core.attention import temporal_attention
    from myv_core.temporal import TemporalConvBlock, TemporalTransformer

    torch.manual_seed(0)
    c, heads, head_dim = args.channels, args.channels // 64, 64
    official = OfficialTransformer(c, heads, head_dim, use_linear=True, relative_position=True, temporal_length=16,
                                   causal_attention=True, use_checkpoint=False, only_self_att=True).eval()
    official_conv = OfficialConv(c, spatial_aware=True).eval()  # as the model builds it (tempspatial_aware)
    for p in (*official.parameters(), *official_conv.parameters()):
        p.data.normal_(0.0, 0.05)
    ours = TemporalTransformer(c, heads, head_dim).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    ours_conv = TemporalConvBlock(c).eval()
    ours_conv.load_state_dict(official_conv.state_dict(), strict=True)

    x = torch.randn(args.batch, c, args.frames, args.size, args.size)
    seqs = args.batch * args.size ** 2
    tokens = torch.randn(seqs, args.frames, c)
    mask = official.mask[:, :args.frames, :args.frames].repeat(seqs, 1, 1)
    block, official_block = ours.transformer_blocks[0], official.transformer_blocks[0]
    q, k, v = (torch.randn(seqs, args.frames, c) for _ in range(3))
    rel = block.attn1.relative_position_k.embeddings_table
    official_core = official_block.attn1

    def official_attention_core():
        # The official CrossAttention forward minus its four projections: the same q/k/v as ours.
        h = official_core.heads
        qh, kh, vh = (t.reshape(seqs, args.frames, h, head_dim).permute(0, 2, 1, 3).reshape(seqs * h, args.frames, head_dim)
                      for t in (q, k, v))
        sim = torch.einsum("b i d, b j d -> b i j", qh, kh) * official_core.scale
        k2 = official_core.relative_position_k(args.frames, args.frames)
        sim = sim + torch.einsum("b t d, t s d -> b t s", qh, k2) * official_core.scale
        sim.masked_fill_(~(mask.repeat_interleave(h, dim=0) > 0.5), -torch.finfo(sim.dtype).max)
        sim = sim.softmax(dim=-1)
        out = torch.einsum("b i j, b j d -> b i d", sim, vh)
        out = out + torch.einsum("b t s, t s d -> b t d", sim, official_core.relative_position_v(args.frames, args.frames))
        return out.reshape(seqs, h, args.frames, head_dim).permute(0, 2, 1, 3).reshape(seqs, args.frames, c)

    with torch.inference_mode():
        error = (ours(x) - official(x)).abs().max().item()
        conv_error = (ours_conv(x) - official_conv(x)).abs().max().item()
        core_error = (temporal_attention(q, k, v, rel, block.attn1.relative_position_v.embeddings_table, heads)
                      - official_attention_core()).abs().max().item()
        pairs = {
            "TemporalTransformer (whole)": (lambda: ours(x), lambda: official(x)),
            "  attention layer (4 projections + core)": (lambda: block.attn1(tokens),
                                                         lambda: official_block.attn1(tokens, mask=mask)),
            "  attention core": (lambda: temporal_attention(q, k, v, rel, rel, heads), official_attention_core),
            "  feed-forward (GEGLU)": (lambda: block.ff(tokens), lambda: official_block.ff(tokens)),
            "TemporalConvBlock (whole)": (lambda: ours_conv(x), lambda: official_conv(x)),
        }
        # The GEMM floor: every nn.Linear of the block on an input of its size and nothing else.
        linears = [m for m in official.modules() if isinstance(m, torch.nn.Linear)]
        gemm_inputs = [torch.randn(seqs * args.frames, m.in_features) for m in linears]

        def gemms():
            for m, t in zip(linears, gemm_inputs):
                torch.nn.functional.linear(t, m.weight, m.bias)
        pairs["GEMMs alone"] = (gemms, gemms)
        in_turns(pairs, 1)  # warm-up
        result = in_turns(pairs, args.repeats)
        floor = statistics.median(result.pop("GEMMs alone"))

    print(f"{args.batch} videos x {args.frames} frames x {args.size}x{args.size}, {c} channels, {heads} heads, fp32, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} in turns")
    print(f"{'':42}  {'ours ms':>8}  {'official ms':>11}  {'official/ours':>13}")
    for name, (mine, theirs) in result.items():
        print(f"{name:42}  {mine * 1e3:>8.1f}  {theirs * 1e3:>11.1f}  {theirs / mine:>13.2f}")
    print(f"max |ours - official|: transformer {error:.1e}, conv block {conv_error:.1e}, attention core {core_error:.1e}")
    mine, theirs = result["TemporalTransformer (whole)"]
    print(f"GEMM floor (the transformer's {len(linears)} nn.Linear on inputs of their sizes, nothing else): "
          f"{floor * 1e3:.1f} ms; ours {mine / floor:.2f}x it, official {theirs / floor:.2f}x it: with the "
          f"same fp32 GEMMs no rewrite gets official/ours above {theirs / floor:.2f}")


if __name__ == "__main__":
    main()
