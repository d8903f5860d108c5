"""A local ComfyUI started for the run: its own port on 127.0.0.1 (a port that already answers is
refused), this pack loaded even when the pack is not inside ComfyUI's custom_nodes (through a
generated --extra-model-paths-config), a temporary input folder and model folders, SIGTERM at the end."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .client import Client
from .errors import FAILED, RunError

HOST = "127.0.0.1"
START_TIMEOUT = 300
PACK = Path(__file__).resolve().parents[2]


def free_port(host=HOST):
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_answers(port, host=HOST):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def cuda_available():
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip().endswith("True")


def comfyui_folder(path):
    folder = Path(path).expanduser().resolve()
    if not (folder / "main.py").is_file() or not (folder / "comfy").is_dir():
        raise RunError(f"--comfyui {path}: not a ComfyUI folder (no main.py and comfy/ in it)")
    return folder


def pack_installed_in(comfyui):
    folder = comfyui / "custom_nodes"
    if not folder.is_dir():
        return False
    return any(entry.resolve() == PACK for entry in folder.iterdir() if entry.is_dir())


def extra_paths_yaml(work, comfyui):
    """A YAML for --extra-model-paths-config: the self-check model folders (work/models), and this pack
    when it is not inside ComfyUI's custom_nodes (a folder holding only a link to it: the pack's parent
    folder may hold other things that are not custom nodes)."""
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


def stop_process(process, timeout=15):
    """SIGTERM (ComfyUI shuts down cleanly), then SIGKILL if it is still there after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class LocalServer:
    """ComfyUI's main.py as a child process; `client` talks to it once start() returned."""

    def __init__(self, comfyui, port, work, output_dir, cpu, env=None):
        self.client = Client(f"http://{HOST}:{port}")
        self.url, self.port, self.work, self.output_dir = self.client.url, port, work, Path(output_dir)
        self.models = work / "models"
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
        self.env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.process = None

    def log_tail(self, chars=3000):
        try:
            return "\n--- ComfyUI log (tail) ---\n" + self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self):
        if port_answers(self.port):
            raise RunError(f"port {self.port} is taken: pass --port with a free port")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=str(self.comfyui), env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.client.answers():
            if self.process.poll() is not None:
                raise RunError(f"ComfyUI exited with code {self.process.returncode} while starting{self.log_tail()}",
                               FAILED)
            if time.monotonic() > deadline:
                raise RunError(f"ComfyUI did not answer within {START_TIMEOUT} s{self.log_tail()}", FAILED)
            time.sleep(0.5)

    def stop(self):
        if self.process is not None:
            stop_process(self.process)
