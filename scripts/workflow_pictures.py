"""Pictures of the shipped workflows as ComfyUI's own frontend draws them: docs/workflows/<name>.png,
and from each the thumbnail the templates browser shows beside it, workflows/<name>.jpg.

For every UI-format workflow in workflows/ (the API twins are in workflows/api/) this script starts a ComfyUI
server with this pack loaded, opens its frontend in headless Chromium, loads the workflow with the
frontend's own `app.loadGraphData`, fits the whole graph into the window and saves a screenshot.
Run it again whenever the workflows or the frontend change. It is not part of the tests or CI.

Needs (none of it is a dependency of the pack):
  - a ComfyUI tree (made for ComfyUI 0.33.0, whose frontend package 1.49.6 is current) and a Python
    that runs it (ComfyUI's venv), given as --comfyui and --python;
  - Python playwright in the Python that runs this script (`pip install playwright`; do NOT run
    `playwright install`, the system Chromium is used);
  - Chromium: Debian's `apt-get install -y chromium` (/usr/bin/chromium, or --chromium PATH).

Example (the project's cached ComfyUI 0.33.0):
  C=~/.cache/myv-ci/ComfyUI-0.33.0-783545f6
  $C/venv/bin/pip install playwright
  $C/venv/bin/python scripts/workflow_pictures.py --comfyui $C/ComfyUI

The server runs on 127.0.0.1 (a free port) with --cpu and a temporary base directory: a symlink to
this repository in custom_nodes/, EMPTY placeholder files named as the workflows name them
(models/makeyourvideo/model.ckpt, models/depth_estimators/dpt_hybrid-midas-501f0c75.pt), so the
combo boxes show those names, and a short generated clip as input/input.mp4 and depth.mp4 so that
Load Video shows a frame. Nothing is run: the picture is the graph only. The server and the browser
are stopped at the end and the temporary directory is removed.

--after-run also runs each workflow from the page, as the Run button would, with the runner's
self-check files (tiny random models, a short clip, 2 steps; myv_runner.workflow.self_check_overrides)
at the shipped shapes, a square (256x256) and a 16:9 clip, queued with the page's client id so that
the previews land on the graph's nodes. Then it checks that no node's rectangle (title included)
covers another's and saves docs/workflows/<name>_after_run.png (the square run). It exits 1 naming
the nodes that overlap.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from myv_runner import selfcheck  # scripts/ is this script's folder, first on sys.path
from myv_runner.server import free_port, stop_process
from myv_runner.workflow import self_check_overrides

ROOT = Path(__file__).resolve().parent.parent
PACK_DIR = "ComfyUI-MakeYourVideo"
HOST = "127.0.0.1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PLACEHOLDER_MODELS = {"makeyourvideo": ["model.ckpt"], "depth_estimators": ["dpt_hybrid-midas-501f0c75.pt"]}
INPUT_CLIPS = {"input.mp4": (0.9, 0.8, 0.6), "depth.mp4": (1.0, 1.0, 1.0)}  # name: colour (depth is grey)
# Settings written to the fresh user directory before the page opens: no first-run template browser,
# no update or release-notes pop-ups, no link tooltips over the graph.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Validation.Workflows": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.NodeBadge.NodeSourceBadgeMode": "None",  # badges of stacked nodes land inside the node above
    "Comfy.NodeBadge.NodeIdBadgeMode": "None",
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Graph.CanvasMenu": False,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Toast.DisableReconnectingToast": True,
    "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.3,
}
START_TIMEOUT = 180


def answers(url):
    try:
        with urllib.request.urlopen(url + "/system_stats", timeout=2) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def write_clip(path, frames=24, width=224, height=128, tint=(0.9, 0.8, 0.6)):
    """A short clip (a bright disc moving over a gradient) so Load Video has something to show.
    Uses PyAV (a ComfyUI requirement); without it the placeholder is an empty file."""
    try:
        import av
        import numpy as np
    except ImportError:
        path.write_bytes(b"")
        return
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / height
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            cx = (0.25 + 0.5 * t / max(frames - 1, 1)) * width / height
            disc = ((xx - cx) ** 2 + (yy - 0.55) ** 2) < 0.03
            grey = 0.25 + 0.35 * yy + 0.4 * disc
            rgb = np.stack([grey * c for c in tint], axis=-1)
            frame = av.VideoFrame.from_ndarray((rgb * 255).clip(0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def prepare_base(base, runnable=False):
    """The server's base directory; `runnable` adds the self-check's tiny models and clip."""
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK_DIR).symlink_to(ROOT, target_is_directory=True)
    for folder, names in PLACEHOLDER_MODELS.items():
        (base / "models" / folder).mkdir(parents=True)
        for name in names:
            (base / "models" / folder / name).write_bytes(b"")
    (base / "input").mkdir()
    for name, tint in INPUT_CLIPS.items():
        write_clip(base / "input" / name, tint=tint)
    if runnable:
        selfcheck.install_models(base / "models")
        selfcheck.write_test_clip(base / "input" / selfcheck.CLIP)
    settings_dir = base / "user" / "default"
    settings_dir.mkdir(parents=True)
    (settings_dir / "comfy.settings.json").write_text(json.dumps(SETTINGS, indent=2))


class Server:
    """ComfyUI on a free local port with the temporary base directory; stopped on exit."""

    def __init__(self, comfyui, python, base):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = base / "server.log"
        command = [python, str(comfyui / "main.py"), "--cpu", "--listen", HOST, "--port", str(self.port),
                   "--disable-auto-launch", "--base-directory", str(base),
                   "--database-url", "sqlite:///:memory:"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=str(base), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def wait(self):
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ComfyUI did not start; its log:\n{self.log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        with urllib.request.urlopen(self.url + "/object_info", timeout=60) as response:
            info = json.load(response)
        if "MYVVideoKSampler" not in info:
            raise SystemExit(f"the pack did not load in ComfyUI; its log:\n{self.log_path.read_text(errors='replace')[-4000:]}")

    def stop(self):
        stop_process(self.process, timeout=10)


# Runs in the page: load the workflow with the frontend's own loader.
LOAD = """
async (workflow) => { await window.app.loadGraphData(workflow, true, true, null); }
"""
# Runs in the page: fit every node into the canvas with a margin, redraw. Returns the scale used,
# so a too-small picture can be noticed.
FIT = """
(margin) => {
    const app = window.app;
    const canvas = app.canvas;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const node of app.graph._nodes) {
        const b = node.getBounding ? node.getBounding() : [node.pos[0], node.pos[1] - 30, node.size[0], node.size[1] + 30];
        x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]);
        x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]);
    }
    const el = canvas.canvas;
    const w = el.clientWidth, h = el.clientHeight;
    const scale = Math.min((w - 2 * margin) / (x1 - x0), (h - 2 * margin) / (y1 - y0));
    canvas.ds.scale = scale;
    canvas.ds.offset[0] = (w / scale - (x1 - x0)) / 2 - x0;
    canvas.ds.offset[1] = (h / scale - (y1 - y0)) / 2 - y0;
    canvas.setDirty(true, true);
    canvas.draw(true, true);
    return {scale, nodes: app.graph._nodes.length, width: w, height: h};
}
"""
VIDEOS_READY = "[...document.querySelectorAll('video')].every(v => v.readyState >= 2)"
# Runs in the page: every pair of nodes whose rectangles (title bar included) overlap.
OVERLAPS = """
() => {
    const boxes = window.app.graph._nodes.map(n => ({
        name: `${n.title || n.type} #${n.id}`,
        b: n.getBounding ? Array.from(n.getBounding()) : [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30]}));
    const hits = [];
    for (let i = 0; i < boxes.length; i++) {
        for (let j = i + 1; j < boxes.length; j++) {
            const a = boxes[i].b, c = boxes[j].b;
            const w = Math.min(a[0] + a[2], c[0] + c[2]) - Math.max(a[0], c[0]);
            const h = Math.min(a[1] + a[3], c[1] + c[3]) - Math.max(a[1], c[1]);
            if (w > 0 && h > 0) hits.push(`${boxes[i].name} and ${boxes[j].name} (${Math.round(w)}x${Math.round(h)})`);
        }
    }
    return hits;
}
"""
GRAPH_TO_PROMPT = "async () => (await window.app.graphToPrompt()).output"
CLIENT_ID = "() => (window.app.api && window.app.api.clientId) || sessionStorage.getItem('clientId') || window.name"
# The run's clip shapes (multiples of 8, as latents need): the shipped 256x256 and a 16:9 clip, small.
RUN_SHAPES = {"square": (64, 64), "16:9": (128, 72)}
RUN_TIMEOUT = 600


def take_pictures(url, workflows, out_dir, width, height, chromium, margin, after_run=False):
    """The pictures (and thumbnails); with after_run also the runs and their overlap check: the
    overlaps found, one line each."""
    from playwright.sync_api import sync_playwright
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="myv-chromium-"))
    overlaps = []
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(profile), executable_path=chromium, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": width, "height": height}, device_scale_factor=1)
            try:
                for path in workflows:
                    page = open_workflow(context, url, path)
                    target = out_dir / (path.stem + ".png")
                    snapshot(page, target, margin)
                    thumbnail(target, path.with_suffix(".jpg"))
                    page.close()
                    for shape, size in (RUN_SHAPES.items() if after_run else ()):
                        page = open_workflow(context, url, path)
                        run_from_page(page, url, size)
                        page.wait_for_function(VIDEOS_READY, timeout=60_000)
                        page.wait_for_timeout(1500)  # previews resize their nodes once read
                        found = page.evaluate(OVERLAPS)
                        overlaps += [f"{path.name}, {shape} run: {hit}" for hit in found]
                        print(f"{path.name}, {shape} run: {len(found)} overlapping node pairs")
                        if shape == "square":
                            snapshot(page, out_dir / f"{path.stem}_after_run.png", margin)
                        page.close()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return overlaps


def open_workflow(context, url, path):
    """A new page of the frontend with the workflow loaded by its own loader, its videos read."""
    page = context.new_page()
    page.goto(url, wait_until="networkidle", timeout=120_000)
    page.wait_for_function("window.app && window.app.graph && window.app.canvas", timeout=120_000)
    page.keyboard.press("Escape")  # any dialog the frontend opened on its own
    hide_chrome(page)
    page.evaluate(LOAD, json.loads(path.read_text()))
    page.keyboard.press("Escape")
    hide_chrome(page)
    # Video previews resize their nodes once the clip is read: wait for that before anything else.
    page.wait_for_function(VIDEOS_READY, timeout=30_000)
    page.wait_for_timeout(1500)
    return page


def snapshot(page, target, margin):
    """Fit the whole graph into the window and save a screenshot."""
    info = page.evaluate(FIT, margin)
    page.wait_for_timeout(1000)  # DOM widgets (text boxes, video previews) follow the canvas
    page.evaluate("window.app.canvas.draw(true, true)")
    page.screenshot(path=str(target))
    print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
          f"{info['nodes']} nodes, {info['width']}x{info['height']}, scale {info['scale']:.2f}")


def run_from_page(page, url, size):
    """Queue the page's graph as the Run button would (its own prompt, its client id, so that the
    outputs come back to this page) with the self-check's files and a `size` (width, height) clip;
    wait until the server has finished it."""
    prompt = page.evaluate(GRAPH_TO_PROMPT)
    self_check_overrides(prompt)
    for node in prompt.values():
        if node["class_type"] in ("ImageScale", "EmptyLatentImage"):
            node["inputs"]["width"], node["inputs"]["height"] = size
    body = json.dumps({"prompt": prompt, "client_id": page.evaluate(CLIENT_ID)}).encode()
    request = urllib.request.Request(url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            prompt_id = json.load(response)["prompt_id"]
    except urllib.error.HTTPError as e:
        raise SystemExit(f"the server refused the run: {e.read().decode(errors='replace')[:2000]}")
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}", timeout=30) as response:
            entry = json.load(response).get(prompt_id)
        if entry:
            if entry.get("status", {}).get("status_str") != "success":
                raise SystemExit(f"the run failed: {json.dumps(entry.get('status'))[:2000]}")
            return
        time.sleep(1)
    raise SystemExit(f"the run did not finish within {RUN_TIMEOUT} s")


def thumbnail(picture, target, width=640):
    """The templates browser's card picture: ComfyUI's frontend (1.49) asks a custom node pack for
    /api/workflow_templates/<pack>/<workflow>.jpg, served from beside the workflow."""
    from PIL import Image

    with Image.open(picture) as image:
        image = image.convert("RGB")
        image.thumbnail((width, width))
        image.save(target, "JPEG", quality=85, optimize=True)


def hide_chrome(page):
    """Hide the frontend's menus, side bar, tabs and toasts, so the picture is the graph alone."""
    page.add_style_tag(content="""
        .graph-canvas-container > .z-999, .side-tool-bar-container, .workflow-tabs-container,
        .comfyui-body-top, .comfyui-body-left, .comfyui-body-right, .comfyui-body-bottom,
        .p-toast, .p-dialog-mask, .p-blockui-mask { display: none !important; }
        video::-webkit-media-controls { display: none !important; }  /* a still frame, no player bar */
    """)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="the ComfyUI tree (made for 0.33.0)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs ComfyUI (default: this one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "workflows", help="where the PNGs go")
    parser.add_argument("--size", default="2400x1350", help="window size in pixels, WIDTHxHEIGHT")
    parser.add_argument("--margin", type=int, default=30, help="pixels around the graph")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--after-run", action="store_true",
                        help="also run each workflow from the page and check that no node covers another")
    parser.add_argument("workflows", nargs="*", type=Path,
                        help="UI-format workflow files (default: every workflows/*.json)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    workflows = args.workflows or sorted((ROOT / "workflows").glob("*.json"))
    for path in workflows:
        if "nodes" not in json.loads(path.read_text()):
            raise SystemExit(f"{path}: not a UI-format workflow (no 'nodes'); the API twins have no layout")
    base = Path(tempfile.mkdtemp(prefix="myv-pictures-"))
    server = None
    try:
        prepare_base(base, runnable=args.after_run)
        server = Server(args.comfyui.resolve(), args.python, base)
        server.wait()
        overlaps = take_pictures(server.url, workflows, args.out.resolve(), width, height, args.chromium,
                                 args.margin, args.after_run)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    if overlaps:
        raise SystemExit("nodes cover each other after a run:\n" + "\n".join(overlaps))


if __name__ == "__main__":
    main()
