"""The pack inside a real ComfyUI server: node registration, a whole depth-to-video run over HTTP,
and a clear, recoverable error for a bad input.

The server runs as its own process (python main.py --cpu) on 127.0.0.1 with a temporary base
directory holding a symlink to this repository in custom_nodes/ and a tiny random Make-Your-Video
checkpoint (context 1024 so core LotusConditioning fits, TAESD as the VAE) generated here.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import COMFYUI, ROOT
from tiny_models import tiny_server_checkpoint

HOST = "127.0.0.1"
PACK_DIR = "ComfyUI-MakeYourVideo"
CKPT = "tiny_myv.safetensors"
OTHER_CKPT = "tiny_myv_b.safetensors"
MYV_NODES = ("MYVCheckpointLoader", "MYVTemporalModuleLoader", "MYVApplyDepth", "MYVVideoKSampler",
             "MYVSelectFrames", "MYVLongVideoSampler", "MYVDepthEstimatorLoader", "MYVEstimateDepth")
KSAMPLER_INPUTS = ["model", "positive", "negative", "depth", "latent_image", "seed", "steps", "cfg",
                   "sampler_name", "scheduler", "denoise", "normalize"]
START_TIMEOUT = 120
PROMPT_TIMEOUT = 300
FRAMES = 4


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # ComfyUI 0.33 colours its log lines
LEVEL_TAG = re.compile(r"^\[(DEBUG|DETAIL|INFO|WARNING|ERROR|CRITICAL)\] ")  # ... and prefixes them with their level


def log_text(log_path):
    """The server log without colour codes."""
    return ANSI.sub("", log_path.read_text(errors="replace"))


def log_lines(log_path):
    """The server log's lines as the messages ComfyUI logged: colour codes and level tags removed."""
    return [LEVEL_TAG.sub("", line) for line in log_text(log_path).splitlines()]


def log_tail(log_path, chars=6000):
    try:
        text = log_text(log_path)
    except OSError as e:
        return f"<no server log: {e}>"
    return "\n--- server log (tail) ---\n" + text[-chars:]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(url, data=None, timeout=30):
    """(status, parsed JSON body) of a GET, or of a POST when data is given."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def answers(url):
    try:
        return http(url + "/system_stats", timeout=2)[0] == 200
    except (OSError, ValueError):
        return False


def random_taesd_state_dict(seed=0):
    """Random TAESD weights in the layout comfy.sd.VAE expects (taesd_encoder.*, taesd_decoder.*, vae_scale/shift).

    TAESD's convolutions skip weight initialisation, so every tensor is set here.
    """
    import comfy.taesd.taesd
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, value in comfy.taesd.taesd.TAESD().state_dict().items():
        if key == "vae_scale":
            sd[key] = torch.ones_like(value, dtype=torch.float32)
        elif key == "vae_shift" or value.ndim == 1:
            sd[key] = torch.zeros_like(value, dtype=torch.float32)
        else:
            fan_in = value[0].numel()
            sd[key] = torch.randn(value.shape, generator=g) * (1.0 / fan_in) ** 0.5
    assert "taesd_decoder.1.weight" in sd and "taesd_encoder.0.weight" in sd, sorted(sd)[:10]
    return sd


@pytest.fixture(scope="module")
def server(tmp_path_factory, fixtures_dir):
    """(url, log_path, base) of a running ComfyUI with this pack and the tiny checkpoint installed."""
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR).symlink_to(ROOT, target_is_directory=True)
    models = base / "models" / "makeyourvideo"
    models.mkdir(parents=True)
    vae = random_taesd_state_dict()
    save_file(tiny_server_checkpoint(fixtures_dir, vae=vae), str(models / CKPT))
    save_file(tiny_server_checkpoint(fixtures_dir, vae=vae, seed=1), str(models / OTHER_CKPT))

    port = free_port()
    url = f"http://{HOST}:{port}"
    assert not answers(url), f"something already answers on {url}; refusing to start ComfyUI there"
    log_path = base / "server.log"
    command = [sys.executable, str(COMFYUI / "main.py"), "--cpu", "--listen", HOST, "--port", str(port),
               "--disable-auto-launch", "--base-directory", str(base), "--database-url", "sqlite:///:memory:"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # One intra-op thread: the tiny model gains nothing from more, and with a busy second core every
    # OpenMP barrier waits a scheduler slice (~6 ms per op), which made a 0.2 s run take 20 s.
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=str(base), env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    (base / "server.pid").write_text(str(process.pid))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(url):
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {process.returncode} before answering"
                            f"{log_tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"ComfyUI did not answer {url}/system_stats within {START_TIMEOUT} s"
                            f"{log_tail(log_path)}")
            time.sleep(0.5)
        yield url, log_path, base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def graph(seed=1, latent_frames=FRAMES, prefix="myv_test"):
    """API-format workflow: tiny MYV model + Lotus conditioning + a moving-square depth clip -> PNGs.

    Depth clip: 6 frames 64x64, a bright square on a dark background, at one place in frames 0-2
    and another in frames 3-5; MYVSelectFrames keeps frames 0-3 (so the square moves).
    """
    return {
        "1": {"class_type": "MYVCheckpointLoader", "inputs": {"ckpt_name": CKPT, "weight_dtype": "auto"}},
        "2": {"class_type": "LotusConditioning", "inputs": {}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 3, "color": 0x202020}},
        "4": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 24, "batch_size": 1, "color": 0xE0E0E0}},
        "5": {"class_type": "ImageCompositeMasked",
              "inputs": {"destination": ["3", 0], "source": ["4", 0], "x": 8, "y": 8, "resize_source": False}},
        "6": {"class_type": "ImageCompositeMasked",
              "inputs": {"destination": ["3", 0], "source": ["4", 0], "x": 32, "y": 24, "resize_source": False}},
        "7": {"class_type": "ImageBatch", "inputs": {"image1": ["5", 0], "image2": ["6", 0]}},
        "8": {"class_type": "MYVSelectFrames",
              "inputs": {"images": ["7", 0], "start": 0, "stride": 1, "max_frames": FRAMES}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": latent_frames}},
        "10": {"class_type": "MYVVideoKSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "depth": ["8", 0],
            "latent_image": ["9", 0], "seed": seed, "steps": 2, "cfg": 2.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "normalize": "per_frame"}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": prefix}},
    }


def submit(server, prompt):
    url, log_path, _ = server
    status, body = http(url + "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200 and isinstance(body, dict) and "prompt_id" in body, \
        f"POST /prompt was refused: HTTP {status} {body}{log_tail(log_path)}"
    return body["prompt_id"]


def run_prompt(server, prompt):
    """The /history entry of a submitted prompt once it has finished (completed or error)."""
    return wait_for(server, submit(server, prompt))


def wait_for(server, prompt_id):
    url, log_path, _ = server
    deadline = time.monotonic() + PROMPT_TIMEOUT
    while time.monotonic() < deadline:
        status, history = http(f"{url}/history/{prompt_id}")
        entry = history.get(prompt_id) if status == 200 and isinstance(history, dict) else None
        state = (entry or {}).get("status") or {}
        if state.get("completed") or state.get("status_str") == "error":
            return entry
        time.sleep(0.25)
    pytest.fail(f"prompt {prompt_id} did not finish within {PROMPT_TIMEOUT} s{log_tail(log_path)}")


def execution_errors(entry):
    return [data for kind, data in (entry.get("status") or {}).get("messages", []) if kind == "execution_error"]


def assert_success(server, entry, prefix, frames=FRAMES):
    url, log_path, base = server
    state = entry.get("status") or {}
    assert state.get("completed") and state.get("status_str") == "success", \
        f"prompt failed: status {state.get('status_str')!r}, errors {execution_errors(entry)}{log_tail(log_path)}"
    files = sorted((base / "output").glob(f"{prefix}_*.png"))
    assert len(files) == frames, \
        f"expected {frames} {prefix}_*.png files in output/, found {[f.name for f in files]}{log_tail(log_path)}"
    for f in files:
        with Image.open(f) as image:
            assert image.size == (64, 64), f"{f.name} is {image.size}, expected 64x64"


def test_pack_nodes_registered(server):
    url, log_path, _ = server
    log = log_lines(log_path)
    # ComfyUI's own comfy_extras files report "IMPORT FAILED: nodes_x.py" (e.g. the audio nodes
    # without the optional torchaudio); any other IMPORT FAILED line is a custom node's.
    failed = [line for line in log if "IMPORT FAILED" in line and not re.fullmatch(r"IMPORT FAILED: \w+\.py", line.strip())]
    assert not failed, f"custom node import failed: {failed}{log_tail(log_path)}"
    loaded = [line for line in log if line.strip().endswith(f"custom_nodes/{PACK_DIR}")]
    assert loaded and "seconds:" in loaded[0], f"the pack is not in 'Import times for custom nodes'{log_tail(log_path)}"
    status, info = http(url + "/object_info", timeout=60)
    assert status == 200, f"GET /object_info: HTTP {status}{log_tail(log_path)}"
    missing = [name for name in MYV_NODES if name not in info]
    assert not missing, f"nodes missing from /object_info: {missing}{log_tail(log_path)}"

    status, loader = http(url + "/object_info/MYVCheckpointLoader")
    assert status == 200, f"GET /object_info/MYVCheckpointLoader: HTTP {status}{log_tail(log_path)}"
    options = loader["MYVCheckpointLoader"]["input"]["required"]["ckpt_name"][0]
    assert CKPT in options, f"ckpt_name options {options} lack {CKPT}{log_tail(log_path)}"

    sampler = info["MYVVideoKSampler"]
    names = sampler.get("input_order", {}).get("required") or list(sampler["input"]["required"])
    assert names == KSAMPLER_INPUTS, f"MYVVideoKSampler inputs {names}, expected {KSAMPLER_INPUTS}"
    assert list(sampler["input"]["required"]) == KSAMPLER_INPUTS, sampler["input"]["required"].keys()


def test_depth_video_run_saves_frames(server):
    assert_success(server, run_prompt(server, graph(seed=1, prefix="myv_test")), "myv_test")


def test_frame_mismatch_fails_cleanly_and_server_recovers(server):
    url, log_path, _ = server
    entry = run_prompt(server, graph(seed=1, latent_frames=3, prefix="myv_bad"))
    state = entry.get("status") or {}
    assert state.get("status_str") == "error", \
        f"a 3-frame latent with 4 depth frames should fail, got {state.get('status_str')!r}{log_tail(log_path)}"
    errors = execution_errors(entry)
    assert errors, f"no execution_error in /history messages: {state.get('messages')}{log_tail(log_path)}"
    message = errors[0].get("exception_message", "")
    assert errors[0].get("node_type") == "MYVVideoKSampler", f"error from {errors[0].get('node_type')}: {message}"
    assert re.search(r"\b4\b", message) and re.search(r"\b3\b", message) and "frames" in message, \
        f"error message should name the 4 depth frames and the 3 latent frames: {message!r}{log_tail(log_path)}"

    assert answers(url), f"server stopped answering /system_stats after the failed prompt{log_tail(log_path)}"
    assert_success(server, run_prompt(server, graph(seed=2, prefix="myv_after")), "myv_after")


def test_long_video_of_100_frames(server):
    """MYVLongVideoSampler chains 16-frame windows over a 100-frame depth clip (one latent frame repeated)."""
    prompt = graph(seed=3, prefix="myv_long")
    prompt["3"]["inputs"]["batch_size"] = 50  # two 50-frame halves with the square in different places
    prompt["9"]["inputs"]["batch_size"] = 1
    del prompt["8"], prompt["10"]
    prompt["13"] = {"class_type": "MYVLongVideoSampler", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "depth": ["7", 0],
        "latent_image": ["9", 0], "seed": 3, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
        "scheduler": "normal", "window_frames": 16, "context_frames": 4, "normalize": "per_clip"}}
    prompt["11"]["inputs"]["samples"] = ["13", 0]
    assert_success(server, run_prompt(server, prompt), "myv_long", frames=100)


def test_two_prompts_with_different_models_queued_at_once(server):
    first, second = graph(seed=11, prefix="myv_queue_a"), graph(seed=12, prefix="myv_queue_b")
    second["1"]["inputs"]["ckpt_name"] = OTHER_CKPT
    ids = [submit(server, first), submit(server, second)]  # both queued before either finishes
    for prompt_id, prefix in zip(ids, ("myv_queue_a", "myv_queue_b")):
        assert_success(server, wait_for(server, prompt_id), prefix)


def test_soak_30_runs(server):
    """30 runs in one server: resident memory after run 30 within 5% of run 5, no temporary files left."""
    _, log_path, base = server
    pid = int((base / "server.pid").read_text())

    def rss():
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024

    temp = base / "temp"
    memory = {}
    for i in range(1, 31):
        prefix = f"myv_soak_{i}"
        assert_success(server, run_prompt(server, graph(seed=1000 + i, prefix=prefix)), prefix)
        if i == 5:
            temp_files = sorted(temp.rglob("*")) if temp.exists() else []
        if i in (5, 30):
            memory[i] = rss()
    assert memory[30] <= 1.05 * memory[5], f"server RSS grew from {memory[5]} to {memory[30]} bytes{log_tail(log_path)}"
    assert (sorted(temp.rglob("*")) if temp.exists() else []) == temp_files
