"""Long videos: chained windows (MYVLongVideoSampler) vs core context windows vs one pass (MYVVideoKSampler).

    .venv/bin/python benchmarks/long_video.py [--frames 32 64 128] [--steps 2] [--cfg 7.5]

A benchmark, not a test. Every (mode, frames) runs in a fresh subprocess with the tiny model through
the real nodes in an in-process ComfyUI (CPU unless a GPU is there), and reports the peak memory
growth of the run (CPU: resident set via VmHWM; CUDA: max_memory_allocated), the time per frame,
each mode's peak at each length over its peak at the shortest, and the seam metric of
myv_core.chaining.seam_ratio (mean |frame-to-frame change| across window boundaries over the same
inside windows; with the tiny random model it only shows that the metric runs, real weights are
needed to judge seams). "core-windows" is MYV Apply Depth + core "Context Windows (Manual)" (dim 0,
window/context as given, the node's other defaults, so ComfyUI 0.33's causal_window_fix) + core
KSampler; its seams are taken where each window's overlap with the previous one ends.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_step import (CHECKPOINT, REPO, PeakMemory, find_comfyui, load_checkpoint_model, load_comfyui,  # noqa: E402
                       pick_device, sync)


MODES = ("chained", "core-windows", "one-pass")


def random_sd_vae():
    """ComfyUI's SD VAE (KL-f8, the model's VAE) with random weights."""
    import comfy.ldm.models.autoencoder
    import comfy.sd
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    shapes = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4).state_dict()
    g = torch.Generator().manual_seed(0)
    return comfy.sd.VAE(sd={k: torch.randn(v.shape, generator=g) * 0.02 for k, v in shapes.items()})


def decode(job):
    """Core VAEDecode of `frames` latents: its peak shows whether decoding is chunked."""
    load_comfyui(job["comfyui"], job["device"])
    import nodes
    vae = random_sd_vae()
    latent = {"samples": torch.randn(job["frames"], 4, job["size"], job["size"])}
    memory = PeakMemory(job["device"])
    with torch.inference_mode():
        memory.start()
        start = time.perf_counter()
        nodes.VAEDecode().decode(vae, latent)
        sync(job["device"])
        seconds = time.perf_counter() - start
        peak = memory.stop()
    return {"seconds": seconds, "peak": peak, "memory": memory.how, "seams": None}


def core_context_windows(pack, common, job):
    """MYV Apply Depth + core Context Windows (Manual) + KSampler; the latents and the windows it ran."""
    import inspect

    import comfy.sample
    from comfy.patcher_extension import WrappersMP
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    from myv_core.chaining import Window
    model = pack.nodes.depth.MYVApplyDepth().apply(common["model"], common["depth"], common["normalize"])[0]
    defaults = {"freenoise": False} if "freenoise" in inspect.signature(ContextWindowsManualNode.execute).parameters else {}
    model = ContextWindowsManualNode.execute(model, job["window"], job["context"], "standard_static", 1, False,
                                             "pyramid", 0, **defaults).result[0]
    starts = set()

    def record(executor, x, timesteps, context, y, control, transformer_options, *args, **kwargs):
        window = transformer_options["context_window"]
        starts.add((window.index_list[0], window.index_list[-1] + 1))
        return executor(x, timesteps, context, y, control, transformer_options, *args, **kwargs)

    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "benchmark", record)
    frames, size = job["frames"], job["size"]
    latent = torch.zeros(frames, 4, size, size)
    noise = comfy.sample.prepare_noise(latent, common["seed"])
    out = comfy.sample.sample(model, noise, common["steps"], common["cfg"], common["sampler_name"],
                              common["scheduler"], common["positive"], common["negative"], latent,
                              disable_pbar=True, seed=common["seed"])
    windows = [Window(start, stop, min(job["context"], stop - start - 1) if start else 0)
               for start, stop in sorted(starts)]
    return out, windows


def run(job):
    """One measurement in this process: returns seconds, peak bytes and (chained) the seam ratio."""
    device = job["device"]
    if job["mode"] == "decode":
        return decode(job)
    pack = load_comfyui(job["comfyui"], device)
    sys.path.append(str(REPO))  # after ComfyUI's path, so `nodes` stays ComfyUI's nodes.py
    from myv_core.chaining import seam_ratio, window_schedule

    model = load_checkpoint_model(pack, CHECKPOINT)
    frames, size = job["frames"], job["size"]
    g = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, 64, generator=g), {}]]
    negative = [[torch.randn(1, 77, 64, generator=g), {}]]
    depth = torch.rand(frames, 8 * size, 8 * size, 3, generator=g)
    common = dict(model=model, positive=positive, negative=negative, depth=depth, seed=1, steps=job["steps"],
                  cfg=job["cfg"], sampler_name="euler", scheduler="normal", normalize="per_frame")
    memory = PeakMemory(device)
    with torch.inference_mode():
        memory.start()
        sync(device)
        start = time.perf_counter()
        if job["mode"] == "chained":
            out = pack.nodes.long_video.MYVLongVideoSampler().sample(
                latent_image={"samples": torch.zeros(1, 4, size, size)}, window_frames=job["window"],
                context_frames=job["context"], **common)[0]["samples"]
        elif job["mode"] == "core-windows":
            out, windows = core_context_windows(pack, common, job)
        else:
            out = pack.nodes.sampling.MYVVideoKSampler().sample(
                latent_image={"samples": torch.zeros(frames, 4, size, size)}, denoise=1.0, **common)[0]["samples"]
        sync(device)
        seconds = time.perf_counter() - start
        peak = memory.stop()
    if job["mode"] == "chained":
        windows = window_schedule(frames, job["window"], job["context"])
    seams = seam_ratio(out, windows) if job["mode"] != "one-pass" else None
    return {"seconds": seconds, "peak": peak, "memory": memory.how, "seams": seams}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--size", type=int, default=32, help="latent size (32 = 256x256 video)")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--context", type=int, default=2, help="chained context frames / core windows' overlap")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--decode-size", type=int, default=0,
                        help="also time core VAEDecode (SD VAE, random weights) of latents this size; 0 = skip")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--comfyui")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(run(json.loads(args.job))))
        return

    base = dict(steps=args.steps, cfg=args.cfg, size=args.size, window=args.window, context=args.context,
                device=pick_device(args.device), comfyui=find_comfyui(args.comfyui))
    print(f"Make-Your-Video tiny model, latent {args.size}x{args.size}, {args.steps} steps, cfg {args.cfg:g}, "
          f"window {args.window}, context {args.context}, device {base['device']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; one fresh process per row")
    rows = {}
    modes = tuple(args.modes) + (("decode",) if args.decode_size else ())
    for frames in args.frames:
        for mode in modes:
            job = dict(base, mode=mode, frames=frames, **({"size": args.decode_size} if mode == "decode" else {}))
            done = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], cwd=REPO,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{mode} {frames} frames failed:\n{done.stderr[-3000:]}")
            rows[mode, frames] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  done {mode} {frames} frames ({rows[mode, frames]['seconds']:.1f} s)", flush=True)

    first = args.frames[0]
    print(f"\n{'frames':>6}  {'mode':12}  {'s/frame':>8}  {'peak MiB':>9}  {'peak / peak@' + str(first):>14}  {'seam ratio':>10}")
    for frames in args.frames:
        for mode in modes:
            r = rows[mode, frames]
            growth = r["peak"] / rows[mode, first]["peak"]
            seams = "" if r["seams"] is None else f"{r['seams']:.2f}"
            print(f"{frames:>6}  {mode:12}  {r['seconds'] / frames:>8.3f}  {r['peak'] / 2**20:>9.0f}  "
                  f"{growth:>14.2f}  {seams:>10}")
    print(f"\npeak: memory growth during the run ({rows[modes[0], first]['memory']}); "
          "seam ratio: myv_core.chaining.seam_ratio of the windowed latents (1.0 = seams move like the rest).")
    if args.decode_size:
        print(f"decode: core VAEDecode, SD VAE with random weights, latents {args.decode_size}x{args.decode_size} "
              f"({8 * args.decode_size}x{8 * args.decode_size} frames); ComfyUI sizes its frame batches to free memory.")


if __name__ == "__main__":
    main()
