"""The trained micro model through the real nodes: depth and prompt adherence, coherence, seams.

    python benchmarks/micro_quality.py [--clips 4] [--markdown table.md] [--picture docs/micro_model.png]

Loads tests/fixtures/myv_micro.safetensors (scripts/train_micro_model.py) with MYV Checkpoint Loader
in an in-process ComfyUI (COMFYUI_PATH or --comfyui), samples held-out synthetic clips
(scripts/micro_model/data.py, seed 100, prompts in turn) under each condition below and prints one
table of the benchmarks/micro_metrics.py metrics, averaged over the clips. The latents are compared
in the model's own space (no VAE: the micro model was trained without one).

Conditions: 16 frames in one pass (MYV Video KSampler); 64 frames in one pass (the causal mask); 64
frames with MYV Long Video Sampler, context 0, 2, 4, 8 with shared noise (its default) and 2, 4 with
independent noise; 64 frames as independent 16-frame runs (seed, seed + 1, ...); 64 frames with core
context windows (Context Windows (Manual) at its defaults, dim 0, where ComfyUI has it); with --ade,
64 frames with AnimateDiff-Evolved's Standard Static, Standard Uniform and Looped Uniform context
options (16 / 4) and Standard Static with FreeNoise; per_frame vs per_clip normalisation on a clip whose
depth scale grows 0.3 -> 1.0; re-rendering (denoise 0.6 from a clip with a different layout); with
--long, 256 frames in one pass, with MYV Long Video Sampler at its defaults and with core windows.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "scripts")]
sys.path.append(str(HERE.parent))  # myv_core; after ComfyUI's path, so `nodes` stays ComfyUI's nodes.py
import micro_metrics as metrics  # noqa: E402
from micro_model import data  # noqa: E402
from myv_core.chaining import window_schedule  # noqa: E402
from unet_step import LATENT_SCALE, REPO, find_comfyui, load_checkpoint_model, load_comfyui  # noqa: E402

CHECKPOINT = REPO / "tests" / "fixtures" / "myv_micro.safetensors"
STEPS, CFG, SAMPLER, SCHEDULER = 20, 5.0, "euler", "normal"
WINDOW = 16
EVAL_SEED = 100
RERENDER_DENOISE = 0.6


def depth_image(depth):
    """(frames, 1, H, W) near = bright -> the IMAGE a depth estimator would hand the nodes."""
    return depth.permute(0, 2, 3, 1).expand(-1, -1, -1, 3).contiguous()


class MicroSampler:
    """Samples one clip under one condition through the pack's nodes; returns model-space latents."""

    def __init__(self, pack, model):
        self.pack, self.model = pack, model
        self.prompts = data.prompt_embeddings()

    def conds(self, prompt):
        """(positive, negative); prompt: one prompt index, or one per frame (a prompt schedule: one cond
        row per frame, with a per-frame pooled_output as ADE's and FizzNodes' schedules give)."""
        if isinstance(prompt, int):
            return [[self.prompts[prompt:prompt + 1], {}]], [[self.prompts[-1:], {}]]
        rows = self.prompts[torch.as_tensor(prompt)]
        return [[rows, {"pooled_output": rows.mean(dim=1)}]], [[self.prompts[-1:], {}]]

    def one_pass(self, depth, prompt, seed, normalize="per_frame", start=None, denoise=1.0):
        positive, negative = self.conds(prompt)
        latent = torch.zeros(depth.shape[0], 4, data.LATENT, data.LATENT) if start is None else start / LATENT_SCALE
        out = self.pack.nodes.sampling.MYVVideoKSampler().sample(
            self.model, positive, negative, depth_image(depth), {"samples": latent}, seed, STEPS, CFG, SAMPLER,
            SCHEDULER, denoise, normalize)[0]["samples"]
        return out * LATENT_SCALE

    def long_video(self, depth, prompt, seed, context, noise="shared"):
        positive, negative = self.conds(prompt)
        out = self.pack.nodes.long_video.MYVLongVideoSampler().sample(
            self.model, positive, negative, depth_image(depth), {"samples": torch.zeros(1, 4, data.LATENT, data.LATENT)},
            seed, STEPS, CFG, SAMPLER, SCHEDULER, WINDOW, context, "per_frame", noise=noise)[0]["samples"]
        return out * LATENT_SCALE

    def independent(self, depth, prompt, seed):
        return torch.cat([self.one_pass(depth[s:s + WINDOW], prompt, seed + k)
                          for k, s in enumerate(range(0, depth.shape[0], WINDOW))])

    def core_windows(self, depth, prompt, seed, steps=STEPS):
        """Core Context Windows (Manual) with its defaults (dim 0): (latents, first new frame of each window).

        steps: ComfyUI 0.3.64 runs these windows on a frames-as-batch latent only when steps + 1 equals
        the frame count (docs/long_video.md)."""
        from long_video import core_context_windows

        positive, negative = self.conds(prompt)
        common = dict(model=self.model, positive=positive, negative=negative, depth=depth_image(depth), seed=seed,
                      steps=steps, cfg=CFG, sampler_name=SAMPLER, scheduler=SCHEDULER, normalize="per_frame")
        job = {"window": WINDOW, "context": 4, "frames": depth.shape[0], "size": data.LATENT}
        out, windows = core_context_windows(self.pack, common, job)
        return out * LATENT_SCALE, [w.start + w.keep for w in windows if w.start]

    def ade(self, nodes, depth, prompt, seed, options="ADE_StandardStaticContextOptions", noise_type="default"):
        """MYV Apply Depth + AnimateDiff-Evolved's Use Evolved Sampling (no motion model) with one of its
        context options at its defaults (context 16, overlap 4) and its sample settings' noise_type.
        nodes: ADE's NODE_CLASS_MAPPINGS."""
        def run(key, **inputs):
            node = nodes[key]()
            return getattr(node, node.FUNCTION)(**inputs)[0]

        extra = {} if options == "ADE_StandardStaticContextOptions" else {"context_stride": 1}
        if options == "ADE_LoopedUniformContextOptions":
            extra["closed_loop"] = False
        context = run(options, context_length=WINDOW, context_overlap=4, **extra)
        settings = run("ADE_AnimateDiffSamplingSettings", batch_offset=0, noise_type=noise_type, seed_gen="comfy",
                       seed_offset=0)
        model = self.pack.nodes.depth.MYVApplyDepth().apply(self.model, depth_image(depth), "per_frame")[0]
        model = run("ADE_UseEvolvedSampling", model=model, beta_schedule="autoselect", context_options=context,
                    sample_settings=settings)
        positive, negative = self.conds(prompt)
        latent = {"samples": torch.zeros(depth.shape[0], 4, data.LATENT, data.LATENT)}
        out = comfy_nodes().common_ksampler(model, seed, STEPS, CFG, SAMPLER, SCHEDULER, positive, negative,
                                            latent)[0]["samples"]
        return out * LATENT_SCALE


def comfy_nodes():
    import nodes
    return nodes


def window_starts(context, frames=64):
    """The first new frame of every window after the first in MYV Long Video Sampler's schedule."""
    return [w.start + w.keep for w in window_schedule(frames, WINDOW, context)[1:]]


def has_core_context_windows():
    return importlib.util.find_spec("comfy_extras.nodes_context_windows") is not None


def evaluation_clips(count, frames=64):
    return data.make_clips(count, torch.Generator().manual_seed(EVAL_SEED), frames=frames,
                           prompts=torch.arange(count) % data.PROMPTS)


def growing_depth(depth):
    """The clip's depth scaled by 0.3 -> 1.0 over its frames (relative depth whose range drifts)."""
    return depth * torch.linspace(0.3, 1.0, depth.shape[0])[:, None, None, None]


ADE_OPTIONS = {"Standard Static": ("ADE_StandardStaticContextOptions", "default"),
               "Standard Uniform": ("ADE_StandardUniformContextOptions", "default"),
               "Looped Uniform": ("ADE_LoopedUniformContextOptions", "default"),
               "Standard Static, FreeNoise": ("ADE_StandardStaticContextOptions", "FreeNoise")}
LONG_CONTEXT = 2  # MYV Long Video Sampler's default


def load_ade(path):
    """AnimateDiff-Evolved's NODE_CLASS_MAPPINGS, loaded as ComfyUI loads a custom node (its model
    folders go to a temporary models_dir)."""
    import asyncio
    import tempfile

    import folder_paths
    import nodes
    models_dir, folder_paths.models_dir = folder_paths.models_dir, tempfile.mkdtemp(prefix="myv-ade-")
    try:
        if not asyncio.run(nodes.load_custom_node(str(path))):
            raise SystemExit(f"--ade {path}: ComfyUI could not load it as a custom node")
    finally:
        folder_paths.models_dir = models_dir
    return nodes.NODE_CLASS_MAPPINGS


def run(sampler, clips, cores=True, ade=None):
    """{condition: {metric: mean over clips}}, and the first clip's latents per condition (for the picture).

    ade: AnimateDiff-Evolved's NODE_CLASS_MAPPINGS, for its rows."""
    count = clips.latents.shape[0]
    wrong = torch.roll(torch.arange(count), 1)  # each clip scored against another clip's depth: chance
    starts = {f"context {c}": window_starts(c) for c in (0, 2, 4, 8)}
    table, first = {}, {}

    def add(name, i, latents, coverage, centres, prompt, first_new_frames=None, layout_only=False):
        """layout_only: the video scored against another clip's layout, where only the position metrics mean anything."""
        row = table.setdefault(name, {})
        values = {"depth IoU": metrics.depth_iou(latents, coverage), "track": metrics.track_error(latents, centres)}
        if not layout_only:
            values["prompt"] = float(metrics.prompt_choice(latents, coverage, data.COLOURS) == prompt)
            values["flicker"] = metrics.static_flicker(latents, coverage)
            values["drift"] = metrics.drift(latents, coverage)
        if first_new_frames:
            values["seams"] = metrics.seams(latents, first_new_frames)
        for k, v in values.items():
            row.setdefault(k, []).append(v)
        if i == 0:
            first[name] = latents

    for i in range(count):
        depth, cov, centres, prompt = clips.depth[i], clips.coverage[i], clips.centres[i], int(clips.prompts[i])
        seed = 1000 + i
        short = sampler.one_pass(depth[:16], prompt, seed)
        add("16 frames, one pass", i, short, cov[:16], centres[:16], prompt)
        add("16 frames, scored against another clip's depth (chance)", i, short, clips.coverage[wrong[i], :16],
            clips.centres[wrong[i], :16], prompt, layout_only=True)
        other = clips.latents[wrong[i], :16]
        noised = sampler.one_pass(depth[:16], prompt, seed, start=other, denoise=RERENDER_DENOISE)
        add(f"16 frames, re-render at denoise {RERENDER_DENOISE} from another clip", i, noised, cov[:16], centres[:16], prompt)
        add("16 frames, re-render, scored against the source clip's layout", i, noised,
            clips.coverage[wrong[i], :16], clips.centres[wrong[i], :16], prompt, layout_only=True)
        for normalize in ("per_frame", "per_clip"):
            grown = sampler.one_pass(growing_depth(depth[:16]), prompt, seed, normalize=normalize)
            add(f"16 frames, depth scale 0.3 -> 1.0, {normalize}", i, grown, cov[:16], centres[:16], prompt)
        add("64 frames, one pass", i, sampler.one_pass(depth, prompt, seed), cov, centres, prompt,
            starts["context 0"])
        for context in (0, 2, 4, 8):
            add(f"64 frames, MYV Long Video Sampler, context {context}", i,
                sampler.long_video(depth, prompt, seed, context), cov, centres, prompt, starts[f"context {context}"])
        for context in (2, 4):
            add(f"64 frames, MYV Long Video Sampler, context {context}, independent noise", i,
                sampler.long_video(depth, prompt, seed, context, "independent"), cov, centres, prompt,
                starts[f"context {context}"])
        add("64 frames, independent 16-frame runs", i, sampler.independent(depth, prompt, seed), cov, centres,
            prompt, starts["context 0"])
        if cores:
            latents, core_starts = sampler.core_windows(depth, prompt, seed)
            add("64 frames, core context windows", i, latents, cov, centres, prompt, core_starts)
        for name, (options, noise_type) in ADE_OPTIONS.items() if ade else ():
            # seams where core windows of the same length and overlap have them
            add(f"64 frames, ADE {name}", i, sampler.ade(ade, depth, prompt, seed, options, noise_type), cov,
                centres, prompt, starts["context 4"])
        print(f"clip {i + 1}/{count} done", flush=True)
    means = {name: {k: sum(v) / len(v) for k, v in row.items()} for name, row in table.items()}
    return means, first


def run_long(sampler, clips, cores=True):
    """The 256-frame rows: one pass, MYV Long Video Sampler at its defaults, core windows."""
    table = {}
    for i in range(clips.latents.shape[0]):
        depth, cov, centres, prompt = clips.depth[i], clips.coverage[i], clips.centres[i], int(clips.prompts[i])
        frames, seed = depth.shape[0], 1000 + i
        videos = {"one pass": (sampler.one_pass(depth, prompt, seed), None),
                  "MYV Long Video Sampler": (sampler.long_video(depth, prompt, seed, LONG_CONTEXT),
                                             window_starts(LONG_CONTEXT, frames))}
        if cores:
            videos["core context windows"] = sampler.core_windows(depth, prompt, seed)
        for name, (latents, first_new) in videos.items():
            row = table.setdefault(f"{frames} frames, {name}", {})
            values = {"depth IoU": metrics.depth_iou(latents, cov), "flicker": metrics.static_flicker(latents, cov),
                      "drift": metrics.drift(latents, cov), "track": metrics.track_error(latents, centres),
                      "prompt": float(metrics.prompt_choice(latents, cov, data.COLOURS) == prompt)}
            if first_new:
                values["seams"] = metrics.seams(latents, first_new)
            for k, v in values.items():
                row.setdefault(k, []).append(v)
        print(f"long clip {i + 1} done", flush=True)
    return {name: {k: sum(v) / len(v) for k, v in row.items()} for name, row in table.items()}


COLUMNS = ("depth IoU", "prompt", "flicker", "drift", "track", "seams")


def markdown(means):
    lines = ["| condition | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, row in means.items():
        cells = [f"{row[c]:.3f}" if c in row else "" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latent_rgb(latents):
    """(frames, 4, 8, 8) -> (frames, 64, 64, 3) uint8: the prompt colours' directions as red, green, blue."""
    projection = torch.tensor([[1.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 1.0]]) / 2
    rgb = torch.einsum("rc,fchw->fhwr", projection, latents) * 0.5 + 0.5
    rgb = rgb.clamp(0, 1).repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    return (rgb * 255).round().byte()


def picture(first, depth, path, frames=(0, 8, 15, 16, 24, 31, 32, 47, 48, 63)):
    """Rows: the depth video and the first clip under each 64-frame condition; columns: frames."""
    from PIL import Image, ImageDraw

    rows = [("depth (input)", (depth[:, 0, :, :, None].expand(-1, -1, -1, 3) * 255).round().byte())]
    rows += [(name, latent_rgb(latents)) for name, latents in first.items() if latents.shape[0] == 64]
    label, cell, gap = 300, 64, 4
    canvas = Image.new("RGB", (label + len(frames) * (cell + gap), 20 + len(rows) * (cell + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, f in enumerate(frames):
        draw.text((label + j * (cell + gap) + 4, 4), f"frame {f}", fill="black")
    for i, (name, video) in enumerate(rows):
        y = 20 + i * (cell + gap)
        draw.text((4, y + cell // 2 - 6), name.replace("64 frames, ", ""), fill="black")
        for j, f in enumerate(frames):
            canvas.paste(Image.fromarray(video[f].numpy()), (label + j * (cell + gap), y))
    canvas.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--picture", type=Path, help="write the frames-side-by-side picture here (PNG)")
    parser.add_argument("--ade", type=Path, help="a ComfyUI-AnimateDiff-Evolved folder: adds its context options' rows")
    parser.add_argument("--long", type=int, default=0, metavar="FRAMES", help="adds rows at this length (e.g. 256)")
    args = parser.parse_args()

    torch.set_num_threads(2)
    pack = load_comfyui(find_comfyui(args.comfyui), "cpu")
    sampler = MicroSampler(pack, load_checkpoint_model(pack, args.checkpoint))
    ade = load_ade(args.ade) if args.ade else None
    clips = evaluation_clips(args.clips)
    with torch.inference_mode():
        means, first = run(sampler, clips, cores=has_core_context_windows(), ade=ade)
        if args.long:
            means.update(run_long(sampler, evaluation_clips(args.clips, frames=args.long), has_core_context_windows()))
    table = markdown(means)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.picture:
        picture(first, clips.depth[0], args.picture)


if __name__ == "__main__":
    main()
