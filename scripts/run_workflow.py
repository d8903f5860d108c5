"""Run a Make-Your-Video workflow headless: start ComfyUI, submit an API-format workflow, wait, stop.

    python scripts/run_workflow.py --comfyui PATH [--workflow workflows/myv_video_rerender_api.json]
        [--video FILE] [--prompt TEXT] [--seed N] [--output-dir DIR] [--port N] [--self-check] [--cpu]

Run it with ComfyUI's Python. It starts `PATH/main.py` on 127.0.0.1 (refusing a port that already
answers), with this pack loaded even when the pack is not inside PATH/custom_nodes (through a
generated --extra-model-paths-config), a temporary input folder holding the clip and, by default,
ComfyUI's own output folder. It talks to the server over HTTP and a minimal websocket only: nothing
of ComfyUI is imported here.

Overrides, by node class: --video -> the first LoadVideo, --prompt -> the first CLIPTextEncode with
a non-empty text, --seed -> every seed input.

Without --workflow and without the real weights (model.ckpt in models/makeyourvideo/ or
models/checkpoints/), it runs a SELF-CHECK: a tiny random model, a tiny random depth estimator and a
generated clip through the re-render workflow, into temporary model folders. It proves the install
works and writes a noise video. --self-check forces it.

Exit status: 0 done; 2 bad input (missing model or input file, port taken, workflow refused by the
server, e.g. an unknown node type); 1 the server failed to start or a node failed while running.
"""

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PACK = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = PACK / "workflows" / "myv_video_rerender_api.json"
HOST = "127.0.0.1"
DEFAULT_PORT = 8189  # not ComfyUI's 8188, so a running ComfyUI of the user's is left alone
REAL_CKPT = "model.ckpt"
START_TIMEOUT = 300
BAD_INPUT, FAILED = 2, 1

# Loader inputs that name model files: class_type -> [(input, folders it is looked up in)].
MODEL_INPUTS = {
    "MYVCheckpointLoader": [("ckpt_name", ("makeyourvideo", "checkpoints"))],
    "MYVTemporalModuleLoader": [("temporal_name", ("makeyourvideo", "checkpoints"))],
    "MYVDepthEstimatorLoader": [("model_name", ("depth_estimators",))],
    "CheckpointLoaderSimple": [("ckpt_name", ("checkpoints",))],
    "VAELoader": [("vae_name", ("vae",))],
}
INPUT_FILES = {"LoadVideo": "file", "LoadImage": "image"}

SELF_CHECK_CKPT = "myv_selfcheck_tiny.safetensors"
SELF_CHECK_ESTIMATOR = "myv_selfcheck_dpt/model.safetensors"
SELF_CHECK_CLIP = "myv_selfcheck_clip.mp4"
SELF_CHECK_FRAMES = 4
SELF_CHECK_SIZE = 64
WEIGHTS_HELP = ("For real videos you need the real weights (Hugging Face Doubiiu/Make-Your-Video): put "
                "makeyourvideo_256_v1/model.ckpt in ComfyUI/models/makeyourvideo/ and "
                "dpt_hybrid-midas-501f0c75.pt in ComfyUI/models/depth_estimators/, then run the same command again.")


class RunError(Exception):
    """A message for the user and the exit status."""

    def __init__(self, message, status=BAD_INPUT):
        super().__init__(message)
        self.status = status


def say(message=""):
    print(message, flush=True)


# ---------------------------------------------------------------- HTTP

def http(url, data=None, timeout=30):
    """(status, parsed JSON body or text) of a GET, or of a POST when data is given."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def port_answers(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, port)) == 0


class Progress(threading.Thread):
    """Prints ComfyUI's websocket events (node started, sampler steps); silent if the socket fails."""

    def __init__(self, port, client_id, node_types):
        super().__init__(daemon=True)
        self.port, self.client_id, self.node_types = port, client_id, node_types
        self.last = {}
        self.sock = None

    def connect(self):
        self.sock = socket.create_connection((HOST, self.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={self.client_id} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1024)
            if not chunk:
                raise OSError("websocket closed during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise OSError("websocket handshake refused")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]
        self.sock.settimeout(None)

    def read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def frames(self):
        message, kind = b"", None
        while True:
            first, second = self.read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.read(8))[0]
            mask = self.read(4) if second & 0x80 else None
            payload = self.read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 8:
                return
            if opcode in (1, 2):
                message, kind = payload, opcode
            elif opcode == 0:
                message += payload
            else:
                continue  # ping / pong
            if first & 0x80 and kind == 1:
                yield message.decode(errors="replace")

    def run(self):
        try:
            for text in self.frames():
                self.show(json.loads(text))
        except Exception:  # progress is a nicety: /history decides the outcome
            pass

    def show(self, event):
        kind, data = event.get("type"), event.get("data") or {}
        if kind == "executing" and data.get("node") is not None:
            node = str(data["node"])
            say(f"  running node {node} ({self.node_types.get(node, '?')})")
        elif kind == "progress" and data.get("max"):
            node, value, total = str(data.get("node")), data.get("value", 0), data["max"]
            percent = int(100 * value / total)
            if percent >= self.last.get(node, -10) + 10 or value == total:
                self.last[node] = percent
                say(f"    {self.node_types.get(node, node)}: {value}/{total} ({percent}%)")

    def close(self):
        try:
            if self.sock:
                self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- the server

def cuda_available():
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip().endswith("True")


def pack_installed_in(comfyui):
    folder = comfyui / "custom_nodes"
    if not folder.is_dir():
        return False
    return any(entry.resolve() == PACK for entry in folder.iterdir() if entry.is_dir())


def extra_paths_yaml(work, comfyui):
    """A YAML for --extra-model-paths-config: the self-check model folders, and this pack when it is
    not inside ComfyUI's custom_nodes (a folder holding only a link to it: the pack's parent folder
    may hold other things that are not custom nodes)."""
    entries = {"makeyourvideo": work / "models" / "makeyourvideo",
               "depth_estimators": work / "models" / "depth_estimators"}
    for folder in entries.values():
        folder.mkdir(parents=True, exist_ok=True)
    if not pack_installed_in(comfyui):
        custom_nodes = work / "custom_nodes"
        custom_nodes.mkdir()
        (custom_nodes / PACK.name).symlink_to(PACK, target_is_directory=True)
        entries["custom_nodes"] = custom_nodes
    lines = ["myv_run:"] + [f"  {key}: {json.dumps(str(path))}" for key, path in entries.items()]
    path = work / "extra_model_paths.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Server:
    def __init__(self, comfyui, port, work, output_dir, cpu):
        self.url = f"http://{HOST}:{port}"
        self.log_path = work / "comfyui.log"
        for folder in ("user", "input"):
            (work / folder).mkdir(exist_ok=True)
        self.command = [sys.executable, str(comfyui / "main.py"), "--listen", HOST, "--port", str(port),
                        "--disable-auto-launch", "--output-directory", str(output_dir),
                        "--input-directory", str(work / "input"), "--temp-directory", str(work),
                        "--user-directory", str(work / "user"), "--database-url", "sqlite:///:memory:",
                        "--extra-model-paths-config", str(extra_paths_yaml(work, comfyui))]
        if cpu:
            self.command.append("--cpu")
        self.comfyui = comfyui
        self.process = None

    def log_tail(self, chars=3000):
        try:
            return "\n--- ComfyUI log (tail) ---\n" + self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=str(self.comfyui), env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if http(self.url + "/system_stats", timeout=2)[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            if self.process.poll() is not None:
                raise RunError(f"ComfyUI exited with code {self.process.returncode} while starting{self.log_tail()}",
                               FAILED)
            if time.monotonic() > deadline:
                raise RunError(f"ComfyUI did not answer within {START_TIMEOUT} s{self.log_tail()}", FAILED)
            time.sleep(0.5)

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def node_info(self, class_type):
        status, info = http(f"{self.url}/object_info/{class_type}", timeout=60)
        return info.get(class_type) if status == 200 and isinstance(info, dict) else None


# ---------------------------------------------------------------- the workflow

def load_workflow(path):
    try:
        graph = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read the workflow {path}: {e}")
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise RunError(f"{path} is a UI-format workflow (what the browser loads); give its API-format twin "
                       "(workflows/*_api.json), or export it from the browser with Workflow > Export (API).")
    if not isinstance(graph, dict) or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise RunError(f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}})")
    return graph


def nodes_of(graph, class_type):
    return [graph[k] for k in sorted(graph, key=lambda k: (len(k), k)) if graph[k]["class_type"] == class_type]


def apply_overrides(graph, video_name=None, prompt=None, seed=None):
    if video_name is not None:
        loaders = nodes_of(graph, "LoadVideo")
        if not loaders:
            raise RunError("--video: the workflow has no LoadVideo node")
        loaders[0]["inputs"]["file"] = video_name
    if prompt is not None:
        encoders = [n for n in nodes_of(graph, "CLIPTextEncode") if str(n["inputs"].get("text", "")).strip()]
        if not encoders:
            raise RunError("--prompt: the workflow has no CLIPTextEncode with a non-empty text")
        encoders[0]["inputs"]["text"] = prompt
    if seed is not None:
        for node in graph.values():
            for name in ("seed", "noise_seed"):
                if isinstance(node["inputs"].get(name), int):
                    node["inputs"][name] = seed


def self_check_overrides(graph):
    """Tiny files, few small frames and 2 steps; the tiny model has no text encoder, so the prompts
    become core LotusConditioning (a fixed [1, 2, 1024] conditioning)."""
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("MYVCheckpointLoader", "MYVTemporalModuleLoader"):
            inputs["ckpt_name" if kind == "MYVCheckpointLoader" else "temporal_name"] = SELF_CHECK_CKPT
        elif kind == "MYVDepthEstimatorLoader":
            inputs.update(model_name=SELF_CHECK_ESTIMATOR, device="cpu")
        elif kind == "LoadVideo":
            inputs["file"] = SELF_CHECK_CLIP
        elif kind == "CLIPTextEncode":
            node["class_type"], node["inputs"] = "LotusConditioning", {}
        elif kind == "MYVSelectFrames":
            inputs["max_frames"] = min(inputs.get("max_frames") or SELF_CHECK_FRAMES, SELF_CHECK_FRAMES)
        elif kind == "ImageScale":
            inputs["width"] = inputs["height"] = SELF_CHECK_SIZE
        elif kind == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = SELF_CHECK_SIZE
            inputs["batch_size"] = min(inputs["batch_size"], SELF_CHECK_FRAMES)
        elif kind in ("MYVVideoKSampler", "MYVLongVideoSampler", "KSampler"):
            inputs["steps"] = 2
            if kind == "MYVLongVideoSampler":
                inputs["window_frames"], inputs["context_frames"] = 2, 1
        elif kind == "SaveVideo":
            inputs["filename_prefix"] = "myv_selfcheck/" + str(inputs.get("filename_prefix", "video")).rsplit("/", 1)[-1]


def check_models(server, graph):
    """Every model file a loader names must be among the server's choices for it."""
    missing = []
    for node in graph.values():
        for name, folders in MODEL_INPUTS.get(node["class_type"], []):
            value = node["inputs"].get(name)
            if not isinstance(value, str):
                continue
            info = server.node_info(node["class_type"])
            if info is None:
                continue  # an unknown node: the server's validation reports it
            spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}.get(name)
            options = spec[0] if spec and isinstance(spec[0], list) else (spec[1].get("options", []) if spec else [])
            if value not in options:
                missing.append(f"missing model file {value}: put it in ComfyUI/models/{folders[0]}/ (see README)")
    if missing:
        raise RunError("\n".join(missing))


def prepare_inputs(graph, input_dir, comfyui, video):
    """Copies --video and every other input file the graph names into the server's input folder."""
    input_dir.mkdir(parents=True, exist_ok=True)
    if video is not None:
        source = Path(video)
        if not source.is_file():
            raise RunError(f"--video {video}: no such file")
        shutil.copy2(source, input_dir / source.name)
    for node in graph.values():
        name = INPUT_FILES.get(node["class_type"])
        value = node["inputs"].get(name) if name else None
        if not isinstance(value, str) or (input_dir / value).is_file():
            continue
        source = comfyui / "input" / value
        if not source.is_file():
            raise RunError(f"missing input file {value} ({node['class_type']}): pass --video FILE or put it in "
                           f"{comfyui / 'input'}/")
        (input_dir / value).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, input_dir / value)


def summarise_refusal(body):
    if not isinstance(body, dict):
        return str(body)
    lines = []
    error = body.get("error") or {}
    if isinstance(error, dict) and error.get("message"):
        lines.append(f"{error['message']}{' (' + error['details'] + ')' if error.get('details') else ''}")
    for node_id, data in (body.get("node_errors") or {}).items():
        for e in data.get("errors", []):
            lines.append(f"node {node_id} ({data.get('class_type')}): {e.get('message')}: {e.get('details')}")
    text = "\n".join(lines) or json.dumps(body)
    if "does not exist" in text:
        text += "\n(a node type the server does not know: install the custom node pack that provides it)"
    return text


def submit_and_wait(server, graph, port, timeout):
    client_id = uuid.uuid4().hex
    progress = Progress(port, client_id, {k: v["class_type"] for k, v in graph.items()})
    try:
        progress.connect()
        progress.start()
    except OSError:
        progress = None
    try:
        status, body = http(server.url + "/prompt", {"prompt": graph, "client_id": client_id}, timeout=60)
        if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
            raise RunError(f"ComfyUI refused the workflow (HTTP {status}):\n{summarise_refusal(body)}")
        prompt_id = body["prompt_id"]
        say(f"queued as {prompt_id}")
        deadline, shown = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            status, history = http(f"{server.url}/history/{prompt_id}")
            entry = history.get(prompt_id) if status == 200 and isinstance(history, dict) else None
            state = (entry or {}).get("status") or {}
            if state.get("completed") or state.get("status_str") == "error":
                return entry
            if progress is None:  # no websocket: say at least whether it runs or waits
                _, queue = http(server.url + "/queue")
                running = any(item[1] == prompt_id for item in (queue or {}).get("queue_running", []))
                if running != shown:
                    say("  running" if running else "  waiting in the queue")
                    shown = running
            time.sleep(0.5)
        raise RunError(f"the workflow did not finish within {timeout} s", FAILED)
    finally:
        if progress is not None:
            progress.close()


def output_files(entry, output_dir):
    paths = []
    for outputs in (entry.get("outputs") or {}).values():
        for items in outputs.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item and item.get("type") == "output":
                    paths.append(Path(output_dir) / item.get("subfolder", "") / item["filename"])
    return paths


# ---------------------------------------------------------------- the self-check's tiny files

def taesd_state_dict(seed=0):
    """Random weights for ComfyUI's TAESD VAE (taesd_encoder.*, taesd_decoder.*, vae_scale, vae_shift),
    written from its architecture: 64-wide 3x3 convolutions and residual blocks of three, three 2x
    down- (encoder) and up-steps (decoder), 4 latent channels."""
    import torch

    shapes = {}

    def conv(prefix, n_in, n_out, bias=True):
        shapes[prefix + ".weight"] = (n_out, n_in, 3, 3)
        if bias:
            shapes[prefix + ".bias"] = (n_out,)

    def block(prefix):
        for i in (0, 2, 4):
            conv(f"{prefix}.conv.{i}", 64, 64)

    conv("taesd_encoder.0", 3, 64)
    for i in (1, 3, 4, 5, 7, 8, 9, 11, 12, 13):
        block(f"taesd_encoder.{i}")
    for i in (2, 6, 10):
        conv(f"taesd_encoder.{i}", 64, 64, bias=False)
    conv("taesd_encoder.14", 64, 4)
    conv("taesd_decoder.1", 4, 64)
    for i in (3, 4, 5, 8, 9, 10, 13, 14, 15, 18):
        block(f"taesd_decoder.{i}")
    for i in (7, 12, 17):
        conv(f"taesd_decoder.{i}", 64, 64, bias=False)
    conv("taesd_decoder.19", 64, 3)

    g = torch.Generator().manual_seed(seed)
    sd = {"vae_scale": torch.tensor(1.0), "vae_shift": torch.tensor(0.0)}
    for key, shape in shapes.items():
        if len(shape) == 1:
            sd[key] = torch.zeros(shape)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
    return sd


def tiny_models_module():
    """The pack's tests/tiny_models.py: how the self-check's tiny checkpoint and estimator are made."""
    import importlib.util

    fixtures = PACK / "tests" / "fixtures"
    if not (fixtures / "myv_tiny_unet.safetensors").is_file():
        raise RunError(f"the self-check needs the pack's tests/ folder ({fixtures} is missing): install the pack "
                       "with git clone", FAILED)
    spec = importlib.util.spec_from_file_location("myv_tiny_models", PACK / "tests" / "tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_checkpoint(path):
    from safetensors.torch import save_file
    save_file(tiny_models_module().tiny_server_checkpoint(PACK / "tests" / "fixtures", vae=taesd_state_dict()),
              str(path))


def make_self_check_files(work):
    write_tiny_checkpoint(work / "models" / "makeyourvideo" / SELF_CHECK_CKPT)
    tiny_models_module().tiny_depth_estimator(work / "models" / "depth_estimators" / Path(SELF_CHECK_ESTIMATOR).parent)
    tiny_models_module().write_test_clip(work / "input" / SELF_CHECK_CLIP, size=SELF_CHECK_SIZE)


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", required=True, help="the ComfyUI folder (holding main.py)")
    parser.add_argument("--workflow", help=f"an API-format workflow (default: {DEFAULT_WORKFLOW.relative_to(PACK)})")
    parser.add_argument("--video", help="the input clip: copied to the server's input folder, given to the first LoadVideo")
    parser.add_argument("--prompt", help="text of the first CLIPTextEncode with a non-empty text")
    parser.add_argument("--seed", type=int, help="every seed input")
    parser.add_argument("--output-dir", help="where the videos go (default: ComfyUI's output folder)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    parser.add_argument("--self-check", action="store_true",
                        help="tiny random model, depth estimator and clip: proves the install, writes a noise video")
    parser.add_argument("--cpu", action="store_true", help="run ComfyUI on the CPU even when CUDA is available")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the workflow")
    args = parser.parse_args(argv)
    if args.seed is not None and args.seed < 0:
        parser.error("--seed must be 0 or more")
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    return args


def comfyui_folder(path):
    folder = Path(path).expanduser().resolve()
    if not (folder / "main.py").is_file() or not (folder / "comfy").is_dir():
        raise RunError(f"--comfyui {path}: not a ComfyUI folder (no main.py and comfy/ in it)")
    return folder


def real_weights_listed(server):
    info = server.node_info("MYVCheckpointLoader")
    if info is None:
        raise RunError("the server has no MYVCheckpointLoader: this pack failed to load" + server.log_tail(), FAILED)
    return REAL_CKPT in info["input"]["required"]["ckpt_name"][0]


def run(args):
    comfyui = comfyui_folder(args.comfyui)
    graph = load_workflow(args.workflow or DEFAULT_WORKFLOW)
    if port_answers(args.port):
        raise RunError(f"port {args.port} is taken: pass --port with a free port")
    output_dir = Path(args.output_dir).resolve() if args.output_dir else comfyui / "output"
    output_dir.mkdir(parents=True, exist_ok=True)
    cpu = args.cpu or not cuda_available()
    work = Path(tempfile.mkdtemp(prefix="myv_run_"))
    server = Server(comfyui, args.port, work, output_dir, cpu)
    try:
        say(f"starting ComfyUI ({comfyui}) on {server.url}{' on the CPU' if cpu else ''} ...")
        server.start()
        self_check = args.self_check
        weights = real_weights_listed(server)  # also: the pack loaded
        if not self_check and args.workflow is None and not weights:
            say(f"No Make-Your-Video weights found: {REAL_CKPT} is not in ComfyUI/models/makeyourvideo/ "
                "(or models/checkpoints/).")
            self_check = True
        if self_check:
            say("SELF-CHECK: a tiny random model, a tiny random depth estimator and a generated 64x64 clip "
                f"through the workflow ({SELF_CHECK_FRAMES} frames, 2 steps). The video will be noise.")
            make_self_check_files(work)
            self_check_overrides(graph)
        apply_overrides(graph, video_name=Path(args.video).name if args.video else None, prompt=args.prompt,
                        seed=args.seed)
        check_models(server, graph)
        prepare_inputs(graph, work / "input", comfyui, args.video)
        started = time.monotonic()
        entry = submit_and_wait(server, graph, args.port, args.timeout)
        state = entry.get("status") or {}
        if state.get("status_str") != "success":
            errors = [data for kind, data in state.get("messages", []) if kind == "execution_error"]
            detail = "; ".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_message', '').strip()}"
                               for e in errors) or json.dumps(state)
            raise RunError(f"the workflow failed: {detail}", FAILED)
        paths = output_files(entry, output_dir)
        say(f"done in {time.monotonic() - started:.1f} s")
        for path in paths:
            say(f"output: {path}")
        if self_check:
            say("Self-check passed: ComfyUI, this pack and the workflow run on this machine. The video is NOISE "
                "(a random model).")
            say(WEIGHTS_HELP)
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)  # stop the server on the way out
    try:
        return run(args)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
