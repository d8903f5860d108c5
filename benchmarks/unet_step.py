"""One sampling step of the tiny Make-Your-Video model: this pack through ComfyUI vs the official UNet.

    .venv/bin/python benchmarks/unet_step.py --official /path/to/Make-Your-Video

A benchmark, not a test: it asserts nothing about timing. For every (frames, cfg) it starts one
fresh subprocess per side, so each side's peak memory is its own, steps the two processes in turns
(ours, official, official, ours, ...) so that both share whatever else loads the machine, and prints
a table with

- ours step: one euler step through ComfyUI, exactly as the nodes are used: MYVCheckpointLoader
  (fp32) -> MYVApplyDepth (random depth IMAGE, 8x the latent size) -> comfy.sample.sample_custom
  with sigmas [sigma_t, 0], positive and negative conditioning. This includes ComfyUI's sampling
  overhead (model loading checks, cond processing, temporal-layer injection/ejection, depth
  resize + normalisation, CFG mixing), not just the UNet.
- ours UNet: the time spent inside ComfyUI's diffusion model forward during that step (measured
  with a DIFFUSION_MODEL wrapper), i.e. the same scope as the official forward.
- official: one forward of the official `lvdm.modules.networks.openaimodel3d.UNetModel`, built
  from the tiny config and loaded with the same weights (strict), on the same inputs: batch 2
  (cond + uncond) when cfg != 1, batch 1 when cfg == 1 (ComfyUI skips the uncond pass then).
- peak memory: on CPU the growth of the resident set (VmHWM after resetting it through
  /proc/self/clear_refs, else getrusage ru_maxrss) over the resident set just before the warm-up;
  on CUDA torch.cuda.max_memory_allocated over the allocated memory before the timed runs.
- max |d eps|: the largest difference between the guided eps of both sides (fp32, ~1e-5 expected).

The official code is not part of this repository: clone AILab-CVC/Make-Your-Video yourself and pass
its path. Only its UNet module (and what that imports: einops, and opencv through its utils) is used.
"""

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
CHECKPOINT = FIXTURES / "myv_tiny_unet.safetensors"
CONFIG = FIXTURES / "myv_tiny_reference.json"
UNET_PREFIX = "model.diffusion_model."
PACK_NAME = "comfyui_makeyourvideo"
LATENT_SCALE = 0.18215  # SD latent format: ComfyUI returns denoised / 0.18215
CONTEXT_TOKENS = 77


# ----------------------------------------------------------------------------- shared helpers

def pick_device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def make_inputs(frames, size, context_dim, seed):
    """Identical inputs for both sides: latent (frames, 4, h, w), contexts (2, 77, ctx) = [cond, uncond],
    and a depth IMAGE (frames, 8h, 8w, 3) in [0, 1] as ComfyUI would hand it to MYVApplyDepth."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(frames, 4, size, size, generator=g)
    contexts = torch.randn(2, CONTEXT_TOKENS, context_dim, generator=g)
    depth_image = torch.rand(frames, 8 * size, 8 * size, 3, generator=g)
    return latent, contexts, depth_image


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of what runs between start() and stop(), over the memory in use at start()."""

    def __init__(self, device):
        self.device = device
        self.how = None

    def start(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.how = "cuda max_memory_allocated"
            return
        self.base = rss_bytes()
        try:  # "5" resets the peak RSS (VmHWM) of this process (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.how = "VmHWM"
        except OSError:
            self.how = "ru_maxrss"

    def stop(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        if self.how == "VmHWM":
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024 - self.base
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base


# ----------------------------------------------------------------------------- workers
#
# A worker is a subprocess that holds one side of one row. The driver steps the two workers of a
# row in turns (ours, official, official, ours, ...), so both sides see the same background load,
# while each keeps its own process and so its own peak memory. Protocol: JSON lines on the
# worker's original stdout; anything printed by ComfyUI or the official code goes to stderr.

class OfficialSide:
    def __init__(self, job):
        device, frames, cfg = job["device"], job["frames"], job["cfg"]
        sys.path.insert(0, job["official"])
        try:
            from lvdm.modules.networks.openaimodel3d import UNetModel  # the official code
        except ImportError as e:
            raise SystemExit(f"cannot import the official UNet from {job['official']}: {e}. Its imports "
                             "need einops and OpenCV: pip install einops opencv-python-headless") from e
        from safetensors.torch import load_file

        sys.path.append(str(REPO))  # after the official path: only for the depth preprocessing below
        from myv_core.depth import depth_from_image, depth_to_latent

        config = json.loads(CONFIG.read_text())["config"]
        model = UNetModel(**config, dropout=0.0)
        weights = {k[len(UNET_PREFIX):]: v.float() for k, v in load_file(str(CHECKPOINT)).items()
                   if k.startswith(UNET_PREFIX)}
        model.load_state_dict(weights, strict=True)
        self.model = model.eval().to(device)

        latent, contexts, depth_image = make_inputs(frames, job["size"], config["context_dim"], job["seed"])
        # The official pipeline feeds min-max normalised, latent-sized depth as channel 5; our path
        # computes the same channel from the IMAGE inside every step (included in "ours step").
        depth = depth_to_latent(depth_from_image(depth_image), job["size"], job["size"], "per_frame")
        video = torch.cat([latent, depth], dim=1).permute(1, 0, 2, 3)[None]  # (1, 5, frames, h, w)
        self.chunks = 1 if cfg == 1 else 2
        self.cfg = cfg
        self.x = video.repeat(self.chunks, 1, 1, 1, 1).to(device)
        self.context = contexts[:self.chunks].to(device)  # [cond, uncond]
        self.timesteps = torch.full((self.chunks,), job["timestep"], dtype=torch.long, device=device)

    def step(self):
        return self.model(self.x, self.timesteps, self.context)

    def unet_calls(self):
        return []

    def finish(self, out, eps_path):
        eps = out.float().cpu()
        guided = eps[0] if self.chunks == 1 else eps[1] + self.cfg * (eps[0] - eps[1])  # (4, frames, h, w)
        torch.save(guided.permute(1, 0, 2, 3).contiguous(), eps_path)  # (frames, 4, h, w)
        return {"unet_batch": [self.chunks * self.x.shape[2]]}


def load_comfyui(comfyui, device, pytorch_attention=False):
    """ComfyUI in this process (CPU mode on the CPU) with the pack loaded as its custom node loader does.
    pytorch_attention: ComfyUI's --use-pytorch-cross-attention (SDPA, its choice on a GPU; on a CPU it
    picks attention_sub_quad otherwise)."""
    sys.path.insert(0, comfyui)
    from comfy.cli_args import args
    if device == "cpu":
        args.cpu = True  # before comfy.model_management is imported
    args.use_pytorch_cross_attention = pytorch_attention
    import importlib.util

    import nodes  # noqa: F401  ComfyUI's nodes.py first, as main.py does
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = pack
    spec.loader.exec_module(pack)
    return pack


def load_checkpoint_model(pack, checkpoint, weight_dtype="fp32"):
    """MYV Checkpoint Loader's MODEL for a checkpoint outside ComfyUI's model folders. The file is copied
    into a temporary models/makeyourvideo folder that lives as long as the process: ComfyUI may read it
    again (the non-dynamic clone of core TorchCompileModel under dynamic VRAM)."""
    import folder_paths

    folder = tempfile.mkdtemp(prefix="myv_bench_models_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    shutil.copy(checkpoint, Path(folder) / checkpoint.name)
    folder_paths.add_model_folder_path("makeyourvideo", folder, is_default=True)
    return pack.nodes.loaders.MYVCheckpointLoader().load(checkpoint.name, weight_dtype)[0]


class OursSide:
    def __init__(self, job):
        device, frames, cfg = job["device"], job["frames"], job["cfg"]
        pack = load_comfyui(job["comfyui"], device, job["pytorch_attention"])
        import comfy.ldm.modules.attention
        import comfy.model_management
        import comfy.sample
        import comfy.samplers
        from comfy.patcher_extension import WrappersMP

        self.info = {"attention": comfy.ldm.modules.attention.optimized_attention.__name__,
                     "torch_device": str(comfy.model_management.get_torch_device())}
        model = load_checkpoint_model(pack, CHECKPOINT)

        context_dim = json.loads(CONFIG.read_text())["config"]["context_dim"]
        latent, contexts, depth_image = make_inputs(frames, job["size"], context_dim, job["seed"])
        model = pack.nodes.depth.MYVApplyDepth().apply(model, depth_image, "per_frame")[0]

        self.calls = []

        def unet_timer(executor, x, *args, **kwargs):
            sync(device)
            start = time.perf_counter()
            out = executor(x, *args, **kwargs)
            sync(device)
            self.calls.append((x.shape[0], time.perf_counter() - start))
            return out

        self.model = model.clone()
        self.model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "benchmark", unet_timer)

        self.sigma = float(self.model.get_model_object("model_sampling").sigmas[job["timestep"]])
        self.x_t = latent * (self.sigma ** 2 + 1) ** 0.5  # the UNet sees x_t / sqrt(sigma^2 + 1) = latent
        self.cfg = cfg
        self.positive = [[contexts[0][None], {}]]
        self.negative = [[contexts[1][None], {}]]
        self.sampler = comfy.samplers.sampler_object("euler")
        self.sigmas = torch.tensor([self.sigma, 0.0])
        self.zeros = torch.zeros_like(latent)
        self.sample_custom = comfy.sample.sample_custom

    def step(self):
        # One euler step from sigma to 0 returns the (guided) denoised latent.
        return self.sample_custom(self.model, self.x_t / self.sigma, self.cfg, self.sampler, self.sigmas,
                                  self.positive, self.negative, self.zeros, disable_pbar=True, seed=0)

    def unet_calls(self):
        calls, self.calls = self.calls, []
        return calls

    def finish(self, out, eps_path):
        torch.save((self.x_t - out.float().cpu() * LATENT_SCALE) / self.sigma, eps_path)
        return dict(self.info)


def worker(job_path):
    job = json.loads(Path(job_path).read_text())
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # prints of ComfyUI / the official code must not mix with the protocol

    def send(**message):
        proto.write(json.dumps(message) + "\n")

    torch.set_num_threads(job["threads"])
    device = job["device"]
    side = (OursSide if job["side"] == "ours" else OfficialSide)(job)
    send(loaded=True, threads=torch.get_num_threads())
    memory = PeakMemory(device)
    out = None
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        for line in sys.stdin:
            command = line.strip()
            if command == "warmup":
                if device == "cpu":
                    memory.start()  # on CPU, memory the allocator keeps after the warm-up still counts
                for _ in range(job["warmup"]):
                    out = side.step()
                sync(device)
                side.unet_calls()
                if device == "cuda":
                    memory.start()  # the weights are on the GPU after the warm-up on both sides
                send(ready=True)
            elif command == "step":
                sync(device)
                start = time.perf_counter()
                out = side.step()
                sync(device)
                send(time=time.perf_counter() - start, unet=side.unet_calls())
            elif command == "finish":
                peak = memory.stop()
                send(peak=peak, memory=memory.how, **side.finish(out, job["eps_path"]))
                return


# ----------------------------------------------------------------------------- driver

def find_comfyui(explicit):
    candidates = [explicit, os.environ.get("COMFYUI_PATH"), str(REPO.parents[1]), "/opt/ComfyUI"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "comfy").is_dir() and (Path(candidate) / "nodes.py").is_file():
            return str(Path(candidate).resolve())
    sys.exit("ComfyUI not found: pass --comfyui PATH or set COMFYUI_PATH")


class Worker:
    def __init__(self, job, workdir):
        self.name = f"{job['side']}_f{job['frames']}_cfg{job['cfg']:g}"
        self.job = dict(job, eps_path=str(workdir / f"{self.name}.pt"))
        job_path = workdir / f"{self.name}.job.json"
        job_path.write_text(json.dumps(self.job))
        self.log_path = workdir / f"{self.name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(job_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def receive(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.close()
            sys.stderr.write(self.log_path.read_text()[-8000:])
            sys.exit(f"worker {self.name} failed (exit {self.proc.returncode})")
        return json.loads(line)

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.log.close()


def run_row(job, workdir, repeats):
    """Both sides of one (frames, cfg) row, stepped in turns; returns {"ours": ..., "official": ...}."""
    workers = {side: Worker(dict(job, side=side), workdir) for side in ("ours", "official")}
    try:
        for w in workers.values():
            w.receive()  # loaded (both load in parallel; only the steps are timed)
        for w in workers.values():
            w.ask("warmup")
        results = {side: {"times": [], "unet": []} for side in workers}
        for i in range(repeats):
            for side in (("ours", "official") if i % 2 == 0 else ("official", "ours")):
                reply = workers[side].ask("step")
                results[side]["times"].append(reply["time"])
                results[side]["unet"].append(reply["unet"])
        for side, w in workers.items():
            results[side].update(w.ask("finish"))
            results[side]["eps"] = torch.load(w.job["eps_path"], weights_only=True)
    finally:
        for w in workers.values():
            w.close()
    return results


def ms(seconds):
    return f"{seconds * 1e3:.1f}"


def mib(n):
    return f"{n / 2 ** 20:.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", help="checkout of AILab-CVC/Make-Your-Video (holds lvdm/)")
    parser.add_argument("--comfyui", help="ComfyUI checkout (default: $COMFYUI_PATH, the ComfyUI this "
                                          "pack sits in, /opt/ComfyUI)")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--cfg", type=float, nargs="+", default=[7.5, 1.0],
                        help="7.5: cond + uncond, 2 videos per UNet call; 1: ComfyUI runs cond only")
    parser.add_argument("--size", type=int, default=32, help="latent height = width (32: 256x256 video)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, both sides")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--timestep", type=int, default=981, help="DDPM timestep of the step (981: the first "
                                                                     "of 50 uniform DDIM steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pytorch-attention", action="store_true",
                        help="ComfyUI's --use-pytorch-cross-attention for our side (SDPA, its GPU default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        return worker(opts.worker)
    if not opts.official:
        parser.error("--official PATH is required (a clone of AILab-CVC/Make-Your-Video)")
    official = Path(opts.official).resolve()
    if not (official / "lvdm" / "modules" / "networks" / "openaimodel3d.py").is_file():
        parser.error(f"--official {official}: no lvdm/modules/networks/openaimodel3d.py there")
    device = pick_device(opts.device)
    base = {"official": str(official), "comfyui": find_comfyui(opts.comfyui), "device": device,
            "size": opts.size, "repeats": opts.repeats, "warmup": opts.warmup, "threads": opts.threads,
            "timestep": opts.timestep, "seed": opts.seed, "pytorch_attention": opts.pytorch_attention}

    gpu = f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""
    print(f"Make-Your-Video tiny model, one sampling step, latent {opts.size}x{opts.size} "
          f"({8 * opts.size}x{8 * opts.size} video), 1 video, fp32, device {device}{gpu}, "
          f"torch {torch.__version__}, {opts.threads} threads, timestep {opts.timestep}, "
          f"median of {opts.repeats} after {opts.warmup} warm-up, fresh process per side and row")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work on the "
          "machine slows both sides; the sides are stepped in turns so they share it)")
    rows, notes = [], set()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="myv_bench_") as tmp:
        for frames in opts.frames:
            for cfg in opts.cfg:
                result = run_row(dict(base, frames=frames, cfg=cfg), Path(tmp), opts.repeats)
                ours = result["ours"]
                notes.add(f"ComfyUI attention: {ours['attention']} on {ours['torch_device']}; "
                          f"peak memory via {ours['memory']}")
                rows.append((frames, cfg, ours, result["official"]))
                print(f"  done frames {frames} cfg {cfg:g} ({time.perf_counter() - started:.0f} s)", flush=True)

    print(f"load average after: {os.getloadavg()[0]:.2f}")
    header = ["frames", "cfg", "UNet batch", "ours step ms", "ours UNet ms", "official ms",
              "step/off", "UNet/off", "min step/off", "ours peak MiB", "off peak MiB", "max |d eps|"]
    table = []
    for frames, cfg, ours, off in rows:
        step, official_time = statistics.median(ours["times"]), statistics.median(off["times"])
        unet = statistics.median(sum(s for _, s in calls) for calls in ours["unet"])
        batch = "+".join(str(b) for b, _ in ours["unet"][-1])
        table.append([str(frames), f"{cfg:g}", f"{batch} / {off['unet_batch'][0]}", ms(step), ms(unet),
                      ms(official_time), f"{step / official_time:.2f}", f"{unet / official_time:.2f}",
                      f"{min(ours['times']) / min(off['times']):.2f}", mib(ours["peak"]), mib(off["peak"]),
                      f"{(ours['eps'] - off['eps']).abs().max().item():.1e}"])
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    print()
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print()
    print("UNet batch: images per UNet call, ours (one entry per call) / official (videos x frames).")
    print("times: median over the timed runs; min step/off: ratio of the fastest runs (less load noise).")
    print("ours step = ComfyUI sample_custom, one euler step incl. sampling overhead (load checks, conds,")
    print("  temporal-layer inject/eject, depth resize+normalise, CFG); ours UNet = ComfyUI diffusion model")
    print("  forward inside that step; official = official UNetModel.forward on the same inputs and weights.")
    print("peak = memory growth during warm-up + timed runs over the memory in use before them.")
    for note in sorted(notes):
        print(note)
    if device == "cuda":
        print("note: the tiny model is far from the real one's size; GPU numbers mostly show launch overhead.")


if __name__ == "__main__":
    main()
