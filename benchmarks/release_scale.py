"""The shipped re-render workflow with a checkpoint of the release's size, through a real ComfyUI server.

    python benchmarks/release_scale.py [--comfyui PATH] [--cache DIR] [--dtypes fp32 fp16 bf16 fp8_e4m3fn]
                                       [--steps 1] [--no-convert] [--depth-stage] [--ram GIB | --fit]

Builds (once, cached in --cache, default ~/.cache/myv-bench/release) a model.ckpt in the exact layout
of the release (8.18 GB; --depth-stage: with the MiDaS network inside, 8.67 GB) and a
dpt_hybrid-midas-501f0c75.pt (benchmarks/release_layout.py), then for each
MYV Checkpoint Loader weight_dtype starts a fresh ComfyUI server (--cpu) and runs
workflows/api/myv_video_rerender_api.json unchanged but for the steps and the weight_dtype, on a 32-frame
256x256 clip (16 frames selected). It prints per node the seconds (from the server's "executing"
events) and the server's resident memory: its peak (VmHWM), and the split at the highest sample
(taken every 50 ms from /proc/PID/status) into allocated (RssAnon) and file-backed (RssFile)
pages, and the file-backed pages left at the end. Then the converter on the same file (time, peak)
and core Load Checkpoint + MYV Temporal Module Loader on its output through the same workflow.
--ram / --fit run every server on a machine of a given size (MachineOfSize; the core loader run at
fp32's size) and report the runs that do not fit. Asserts nothing: it is a measurement.
"""

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))
from myv_runner.selfcheck import write_test_clip  # noqa: E402
from myv_runner.server import LocalServer, free_port  # noqa: E402
from myv_runner.workflow import load_workflow, nodes_of, set_output_folder, stage_inputs  # noqa: E402
from unet_step import find_comfyui  # noqa: E402

WORKFLOW = REPO / "workflows" / "api" / "myv_video_rerender_api.json"
MIDAS = "dpt_hybrid-midas-501f0c75.pt"
GIB = 2 ** 30
# Issue 21's targets, peak / file: 1.3 in fp32, 0.75 in 16 bits (and, here, fp8).
FP32_TARGET, OTHER_TARGET = 1.3, 0.75


class MemoryWatch(threading.Thread):
    """Samples /proc/PID/status every `interval` s: the highest VmRSS sample with its split, and the
    highest VmRSS while each node ran (`node` is set from the server's events)."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak, self.last, self.by_node = {}, {}, {}
        self.node = None
        self.stopped = threading.Event()

    def read(self):
        fields = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    fields[name] = int(value.split()[0]) * 1024
        return fields

    def run(self):
        while not self.stopped.is_set():
            try:
                sample = self.read()
            except OSError:
                return
            self.last = sample
            if sample.get("VmRSS", 0) > self.peak.get("VmRSS", 0):
                self.peak = dict(sample, node=self.node)
            if self.node is not None:
                self.by_node[self.node] = max(self.by_node.get(self.node, 0), sample.get("VmRSS", 0))
            time.sleep(self.interval)

    def stop(self):
        self.stopped.set()
        self.join()


class Balloon:
    """A process holding touched memory in 64 MiB chunks, resized on request: this machine with that
    much less RAM, as ComfyUI sees it (on a CPU it sizes VAE decode batches, attention chunks and
    depth batches by the available RAM)."""

    CHUNK = 64 * 2 ** 20
    CODE = ("import sys\n"
            "chunks = []\n"
            "for line in sys.stdin:\n"
            "    count = int(line)\n"
            "    while len(chunks) < count:\n"
            f"        chunk = bytearray({CHUNK})\n"
            "        chunk[::4096] = b'\\x01' * len(range(0, len(chunk), 4096))\n"
            "        chunks.append(chunk)\n"
            "    del chunks[count:]\n"
            "    print(len(chunks), flush=True)\n")

    def __init__(self, gib=0.0):
        self.process = subprocess.Popen([sys.executable, "-c", self.CODE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.size = 0
        self.resize(gib * GIB)

    def resize(self, size):
        self.process.stdin.write(f"{max(0, int(size // self.CHUNK))}\n")
        self.process.stdin.flush()
        self.size = int(self.process.stdout.readline()) * self.CHUNK

    def stop(self):
        self.process.kill()
        self.process.wait()


class MachineOfSize(threading.Thread):
    """Keeps a balloon sized so that the server sees a machine of `gib` GiB: its resident memory plus
    the RAM available to it (MemAvailable) stays at `gib` whatever other processes do. A server that
    needs more is ended by the kernel (run_server marks it as the one to end)."""

    def __init__(self, gib, pid, interval=0.2):
        super().__init__(daemon=True)
        self.size, self.pid, self.interval = gib * GIB, pid, interval
        self.balloon = Balloon()
        self.stopped = threading.Event()
        self.adjust()
        self.start()

    def adjust(self):
        with open(f"/proc/{self.pid}/status") as f:
            resident = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        excess = available() - (self.size - resident)
        if abs(excess) >= Balloon.CHUNK:
            self.balloon.resize(self.balloon.size + excess)

    def run(self):
        while not self.stopped.wait(self.interval):
            try:
                self.adjust()
            except (OSError, StopIteration, ValueError):
                return  # the server is gone

    def stop(self):
        self.stopped.set()
        self.join()
        self.balloon.stop()


def available():
    """MemAvailable in bytes: free RAM plus what the OS can reclaim (its file cache)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable")


def ensure_files(cache, depth_stage):
    """The release files in `cache` (model.ckpt in its own folder per variant), written once."""
    folder = cache / ("with_depth_stage" if depth_stage else "published")
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, midas, clip = folder / "model.ckpt", cache / MIDAS, cache / "walk_256.mp4"
    if not checkpoint.is_file() or not midas.is_file():
        # In a process of its own: a child's peak resident memory (ru_maxrss) starts from its parent's.
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from release_layout import write_release; "
                "n, size = write_release(sys.argv[2], sys.argv[3], sys.argv[4] == 'True'); "
                "print(f'{n} tensors, {size / 1e9:.2f} GB of tensors')")
        start = time.perf_counter()
        partial = [path.with_name(path.name + ".partial") for path in (checkpoint, midas)]
        out = subprocess.run([sys.executable, "-c", code, str(REPO / "benchmarks"), *map(str, partial),
                              str(depth_stage)], check=True, capture_output=True, text=True).stdout.strip()
        for written, path in zip(partial, (checkpoint, midas)):  # an interrupted write is never taken as done
            written.replace(path)
        print(f"wrote {checkpoint}: {out}, {time.perf_counter() - start:.0f} s", flush=True)
    if not clip.is_file():
        write_test_clip(clip, frames=32, size=256)
    return checkpoint, midas, clip


def link(target, folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / target.name).symlink_to(target)


def core_loader_graph(graph, spatial, temporal):
    """The workflow with core Load Checkpoint (the converter's spatial file) + MYV Temporal Module Loader."""
    loader_id, = (k for k, node in graph.items() if node["class_type"] == "MYVCheckpointLoader")
    graph[loader_id] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": spatial}}
    temporal_id = "myv_temporal"
    for node in graph.values():
        for name, value in node["inputs"].items():
            if value == [loader_id, 0]:
                node["inputs"][name] = [temporal_id, 0]
    graph[temporal_id] = {"class_type": "MYVTemporalModuleLoader",
                          "inputs": {"model": [loader_id, 0], "temporal_name": temporal}}
    return graph


def run_server(comfyui, graph, clip, models, label, flags=(), ram=0.0):
    """One fresh server, one run: ([(node label, seconds, highest resident bytes)], memory dict).
    ram: the server runs on a machine of that many GiB (MachineOfSize)."""
    with tempfile.TemporaryDirectory(prefix="myv_release_") as work:
        work = Path(work)
        server = LocalServer(comfyui, free_port(), work, work / "output", cpu=True)
        server.command.extend(flags)
        for folder, files in models.items():
            for path in files:
                link(path, work / "models" / folder)
        (work / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
        yaml = work / "extra_model_paths.yaml"
        yaml.write_text(yaml.read_text() + f"  checkpoints: \"{work / 'models' / 'checkpoints'}\"\n")
        server.start()
        # Out of memory, the kernel ends the server (the run did not fit), not the balloon standing in
        # for the rest of the machine (lowering a score needs a privilege raising one does not).
        Path(f"/proc/{server.process.pid}/oom_score_adj").write_text("1000")
        machine = MachineOfSize(ram, server.process.pid) if ram else None
        try:
            watch = MemoryWatch(server.process.pid)
            idle = watch.read()
            watch.start()
            stage_inputs(server.client, graph, clip=clip)
            set_output_folder(graph, "myv_release_bench")
            starts = []

            def on_event(event):
                if event.get("type") == "executing":
                    starts.append((time.perf_counter(), event))
                    watch.node = (event.get("data") or {}).get("node")

            server.client.run(graph, on_event=on_event)
            end = time.perf_counter()
            watch.stop()
            hwm = watch.read()["VmHWM"]
        except Exception:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            if machine is not None:
                machine.stop()
            server.stop()
    seconds = {}
    marks = [(t, (e.get("data") or {}).get("node")) for t, e in starts] + [(end, None)]
    for (t, node), (t_next, _) in zip(marks, marks[1:]):
        if node is not None:
            seconds[node] = seconds.get(node, 0.0) + t_next - t
    names = {node: f"{graph[node]['class_type']} ({node})" for node in seconds}
    peak = dict(watch.peak, node=names.get(watch.peak.get("node"), "-"))
    rows = [(names[node], s, watch.by_node.get(node, 0)) for node, s in seconds.items()]
    return rows, dict(idle=idle["VmRSS"], hwm=hwm, peak=peak, last=watch.last, label=label)


def convert(checkpoint, out_dir):
    """The converter in its own process: (seconds, peak resident bytes, {part: path})."""
    code = ("import resource, runpy, sys\n"
            "sys.argv = ['myv_core.convert'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('myv_core.convert', run_name='__main__')\n"
            "except SystemExit as e:\n    status = e.code\n"
            "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
            "sys.exit(status)\n")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code, str(checkpoint), "--out-dir", str(out_dir)],
                         cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"converter failed:\n{run.stdout}\n{run.stderr}")
    print(run.stdout.strip())
    peak = int(run.stdout.split("maxrss")[-1])
    name = checkpoint.stem
    return seconds, peak, {part: out_dir / f"{name}_{part}.safetensors" for part in ("spatial", "temporal", "depth")}


def report(rows, memory, file_size):
    peak = memory["peak"]
    print(f"\n## {memory['label']}")
    print(f"  {'node':42s} {'seconds':>8s}  {'highest resident':>16s}")
    for name, s, rss in rows:
        print(f"  {name:42s} {s:8.1f}  {rss / GIB:12.2f} GiB")
    print(f"  {'total':42s} {sum(s for _, s, _ in rows):8.1f}")
    print(f"  server idle {memory['idle'] / GIB:.2f} GiB; peak resident (VmHWM) {memory['hwm'] / GIB:.2f} GiB = "
          f"{memory['hwm'] / file_size:.2f}x the file")
    print(f"  at the highest sample ({peak['node']}): {peak.get('VmRSS', 0) / GIB:.2f} GiB = allocated "
          f"{peak.get('RssAnon', 0) / GIB:.2f} + file-backed {peak.get('RssFile', 0) / GIB:.2f} "
          f"(+ shared {peak.get('RssShmem', 0) / GIB:.2f})")
    print(f"  file-backed at the end: {memory['last'].get('RssFile', 0) / GIB:.2f} GiB", flush=True)
    return memory["hwm"] / file_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "myv-bench" / "release")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16", "fp8_e4m3fn"])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--no-convert", action="store_true", help="skip the converter and the core loader run")
    parser.add_argument("--pytorch-attention", action="store_true",
                        help="start ComfyUI with --use-pytorch-cross-attention (SDPA; its CPU default is sub-quadratic)")
    parser.add_argument("--balloon", type=float, default=0.0, metavar="GIB",
                        help="hold this much RAM in another process during the runs (a smaller machine)")
    parser.add_argument("--ram", type=float, default=0.0, metavar="GIB",
                        help="run each server on a machine of this size: its resident memory plus the RAM available "
                             "to it stays at GIB (a balloon holds the rest); a run that does not fit is ended by the kernel")
    parser.add_argument("--fit", action="store_true",
                        help="--ram set per weight_dtype to issue 21's target: 1.3x the file for fp32, 0.75x for the others")
    parser.add_argument("--depth-stage", action="store_true",
                        help="model.ckpt with the MiDaS depth stage inside (8.67 GB; the published file, 8.18 GB, has none)")
    args = parser.parse_args()
    comfyui = Path(find_comfyui(args.comfyui))
    checkpoint, midas, clip = ensure_files(args.cache, args.depth_stage)
    file_size = checkpoint.stat().st_size
    print(f"ComfyUI {comfyui}; {checkpoint} {file_size / 1e9:.2f} GB; {args.steps} step(s)", flush=True)
    flags = ["--use-pytorch-cross-attention"] if args.pytorch_attention else []
    print(f"ComfyUI flags: --cpu {' '.join(flags)}; balloon {args.balloon:g} GiB", flush=True)
    balloon = Balloon(args.balloon)
    try:
        ratios = run_all(args, comfyui, checkpoint, midas, clip, flags)
    finally:
        balloon.stop()
    weights = file_size + midas.stat().st_size
    print("\npeak / file: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    print(f"peak / the weights the workflow reads (model.ckpt + {MIDAS}, {weights / 1e9:.2f} GB): "
          + ", ".join(f"{k} {v * file_size / weights:.2f}x" for k, v in ratios.items()))


def machine_size(args, dtype, file_size):
    """GiB of the machine a run gets (--ram, or --fit's target for `dtype`); 0: this machine."""
    if args.fit:
        return (FP32_TARGET if dtype == "fp32" else OTHER_TARGET) * file_size / GIB
    return args.ram


def run_sized(args, comfyui, graph, clip, models, label, flags, ram, file_size):
    """run_server on a machine of `ram` GiB (0: this one) and its report: peak / file size, or None
    when the kernel ended the server (the run did not fit)."""
    if ram:
        print(f"\n{label}: on a machine of {ram:.2f} GiB", flush=True)
    try:
        rows, memory = run_server(comfyui, graph, clip, models, label, flags, ram)
    except Exception as error:  # with --ram: the kernel ended the server, the run did not fit
        if not ram:
            raise
        print(f"\n## {label}: did not complete in {ram:.2f} GiB ({type(error).__name__}: {error})", flush=True)
        return None
    return report(rows, memory, file_size)


def run_all(args, comfyui, checkpoint, midas, clip, flags):
    """Every weight_dtype, then the converter and the core loader: {label: peak / file size} of the
    runs that completed."""
    file_size = checkpoint.stat().st_size
    ratios = {}
    for dtype in args.dtypes:
        graph = load_workflow(WORKFLOW)
        for node in nodes_of(graph, "MYVVideoKSampler"):
            node["inputs"]["steps"] = args.steps
        for node in nodes_of(graph, "MYVCheckpointLoader"):
            node["inputs"]["weight_dtype"] = dtype
        models = {"makeyourvideo": [checkpoint], "depth_estimators": [midas]}
        ratios[dtype] = run_sized(args, comfyui, graph, clip, models, f"MYV Checkpoint Loader, weight_dtype {dtype}",
                                  flags, machine_size(args, dtype, file_size), file_size)
    if not args.no_convert:
        out = args.cache / "converted"
        out.mkdir(exist_ok=True)
        seconds, peak, parts = convert(checkpoint, out)
        print(f"\n## converter: {seconds:.0f} s, peak resident {peak / GIB:.2f} GiB = {peak / file_size:.2f}x the file")
        graph = core_loader_graph(load_workflow(WORKFLOW), parts["spatial"].name, parts["temporal"].name)
        for node in nodes_of(graph, "MYVVideoKSampler"):
            node["inputs"]["steps"] = args.steps
        models = {"checkpoints": [parts["spatial"]], "makeyourvideo": [parts["temporal"]], "depth_estimators": [midas]}
        # core Load Checkpoint keeps the converted fp32 files' UNet in fp32 on a CPU
        ratios["core"] = run_sized(args, comfyui, graph, clip, models, "core Load Checkpoint + MYV Temporal Module Loader",
                                   flags, machine_size(args, "fp32", file_size), file_size)
    return {label: ratio for label, ratio in ratios.items() if ratio is not None}


if __name__ == "__main__":
    main()
