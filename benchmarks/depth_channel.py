"""The UNet's depth channel against the official get_batch_depth, without and with native_depth.

    python benchmarks/depth_channel.py [--estimator full|tiny] [--photos rocket coffee astronaut]

Runs on the CPU: 1 to 2.5 minutes a photograph at full size on this project's 2-core VM. Needs pytest
(it takes the clip and the official restatement from tests/test_depth.py).

Needs ComfyUI (--comfyui, else $COMFYUI_PATH, else the ComfyUI this pack sits in) and scikit-image
(its bundled photographs). For each photograph, a clip of --frames frames at --size x --size
(tests/test_depth.py photograph_clip: a square window panning across the photo, or zooming in on a
square one) goes through the default nodes in an in-process ComfyUI: MYV Depth Estimator Loader
(auto device and dtype) -> MYV Estimate Depth (batch 8, per_frame, smoothing 0) -> MYV Video
KSampler (cfg 7.5, one step, latent --size/8). A DIFFUSION_MODEL wrapper records the depth channel of
every UNet call (cond and uncond) and answers zeros instead of running the UNet (tiny Make-Your-Video
UNet: the channel does not depend on it). "before": depth IMAGE only (native_depth unconnected, as
before this input existed); "after": native_depth connected, as the shipped workflows wire it.

The official channel is tests/test_depth.py official_get_batch_depth, a restatement of
LatentDepthDiffusion.get_batch_depth: frames in [-1, 1], bicubic to 384x384, the network, one bicubic
resize to the latent size, per-frame min-max to [-1, 1] with 1e-7. Its network is the estimator's own
transformers network (the same weights), called directly: that network's parity with the official
MiDaS code is tests/test_depth_estimation.py's business (2.2e-6 of the output scale).

--estimator full: MiDaS DPT-Hybrid at full size (the released architecture, 123M parameters) with the
seeded random weights of scripts/make_midas_fixtures.py, saved in the original layout and read by
MYV Depth Estimator Loader like dpt_hybrid-midas-501f0c75.pt. --estimator tiny: the small DPT-Hybrid
of the tests. Random weights are not the real MiDaS: their maps have more fine detail than real
depth, so "before" overstates what the double resize costs on real weights; "after" does not depend
on it. A measurement, not a test: it prints, it asserts nothing.
"""

import argparse
import atexit
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_step import REPO, find_comfyui, load_comfyui  # noqa: E402

sys.path[:0] = [str(REPO), str(REPO / "tests")]
from test_depth import PHOTOGRAPHS, official_get_batch_depth, photograph_clip  # noqa: E402


def full_size_weights():
    """The seeded random DPT-Hybrid in the original MiDaS layout (scripts/make_midas_fixtures.py)."""
    spec = importlib.util.spec_from_file_location("make_midas_fixtures", REPO / "scripts" / "make_midas_fixtures.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    keys = json.loads((REPO / "tests" / "fixtures" / "midas_dpt_hybrid_keys.json").read_text())["keys"]
    return fixtures.seeded_midas_weights(keys)


def write_estimator(kind, folder):
    """The estimator file(s) in `folder`; returns the model_name MYV Depth Estimator Loader lists."""
    from safetensors.torch import save_file
    if kind == "full":
        save_file({k: v.contiguous() for k, v in full_size_weights().items()},
                  str(folder / "dpt_hybrid-midas-seeded.safetensors"))
        return "dpt_hybrid-midas-seeded.safetensors"
    import transformers
    from test_depth_estimation import seeded, tiny_dpt_config
    seeded(transformers.DPTForDepthEstimation(tiny_dpt_config())).save_pretrained(folder / "tiny-dpt")
    return "tiny-dpt/model.safetensors"


def video_model(pack):
    from myv_core.checkpoint import split_checkpoint
    from tiny_models import tiny_unet
    parts = split_checkpoint(tiny_unet(REPO / "tests" / "fixtures"))
    base = pack.nodes.loaders.build_spatial_model(parts, torch.float32)[0]
    return pack.nodes.patching.attach_temporal(base, parts.temporal)


def channels(pack, model, depth, native, latent_size):
    """The depth channel of every UNet call of MYV Video KSampler (cfg 7.5, 1 step), per cond/uncond chunk."""
    from comfy.patcher_extension import WrappersMP
    seen = []

    def capture(executor, x, *args, **kwargs):
        seen.append(x[:, 4:5].detach().float().cpu().clone())
        return torch.zeros_like(x[:, :4])

    model = model.clone()
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "depth_channel_benchmark", capture)
    frames = depth.shape[0]
    g = torch.Generator().manual_seed(1)
    positive = [[torch.randn(1, 77, 64, generator=g), {}]]
    negative = [[torch.randn(1, 77, 64, generator=g), {}]]
    pack.nodes.sampling.MYVVideoKSampler().sample(model, positive, negative, depth,
                                                  {"samples": torch.zeros(frames, 4, latent_size, latent_size)},
                                                  0, 1, 7.5, "ddpm", "ddim_uniform", 1.0, "per_frame",
                                                  native_depth=native)
    return [chunk for call in seen for chunk in call.split(frames)]


def error(chunks, official):
    diff = torch.stack([(chunk - official).abs() for chunk in chunks])
    return diff.max().item(), diff.mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--estimator", choices=["full", "tiny"], default="full")
    parser.add_argument("--photos", nargs="+", choices=PHOTOGRAPHS, default=list(PHOTOGRAPHS))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="frame height and width (latent: size / 8)")
    parser.add_argument("--comfyui")
    args = parser.parse_args()
    device = "cpu"  # the official restatement runs the estimator's network on the CPU beside it
    comfyui = find_comfyui(args.comfyui)
    pack = load_comfyui(comfyui, device)
    import folder_paths
    version = (Path(comfyui) / "comfyui_version.py").read_text().split('"')[1]

    folder = Path(tempfile.mkdtemp())  # MYV Estimate Depth reads the estimator file each run
    atexit.register(shutil.rmtree, folder)
    name = write_estimator(args.estimator, folder)
    folder_paths.add_model_folder_path("depth_estimators", str(folder), is_default=True)
    estimator = pack.nodes.depth_estimation.MYVDepthEstimatorLoader().load(name, "auto", "auto")[0]
    network = estimator.load().model.network
    model = video_model(pack)
    latent_size = args.size // 8
    print(f"{time.strftime('%Y-%m-%d')}, ComfyUI {version}, torch {torch.__version__}, device {device}, estimator "
          f"{args.estimator} DPT-Hybrid (seeded random weights, {sum(p.numel() for p in network.parameters()) / 1e6:.1f}M "
          f"parameters, {next(network.parameters()).dtype}), {args.frames} frames {args.size}x{args.size} -> latent "
          f"{latent_size}x{latent_size}; |UNet depth channel - official get_batch_depth| on [-1, 1]", flush=True)
    print(f"{'photo':<10} {'motion':<6} {'before max':>10} {'before mean':>11} {'after max':>9} {'after mean':>10} "
          f"{'seconds':>7}", flush=True)
    for photo in args.photos:
        start = time.perf_counter()
        clip = photograph_clip(photo, args.frames, args.size)
        depth, native = pack.nodes.depth_estimation.MYVEstimateDepth().estimate(estimator, clip, 8, "per_frame", 0.0)
        with torch.no_grad():
            official = official_get_batch_depth(network, clip, (latent_size, latent_size))
        before = error(channels(pack, model, depth, None, latent_size), official)
        after = error(channels(pack, model, depth, native, latent_size), official)
        motion = "pan" if photo != "astronaut" else "zoom"
        print(f"{photo:<10} {motion:<6} {before[0]:>10.2e} {before[1]:>11.2e} {after[0]:>9.2e} {after[1]:>10.2e} "
              f"{time.perf_counter() - start:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
