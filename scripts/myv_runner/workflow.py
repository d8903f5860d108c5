"""API-format workflows: reading them, the overrides by node class (clip, prompt, seed, job options,
output folder, the self-check's tiny files) and the checks against a server before queuing."""

import hashlib
import json
from pathlib import Path

from . import selfcheck
from .errors import RunError

# Loader inputs that name model files: class_type -> [(input, folders it is looked up in)].
MODEL_INPUTS = {
    "MYVCheckpointLoader": [("ckpt_name", ("makeyourvideo", "checkpoints"))],
    "MYVTemporalModuleLoader": [("temporal_name", ("makeyourvideo", "checkpoints"))],
    "MYVDepthEstimatorLoader": [("model_name", ("depth_estimators",))],
    "CheckpointLoaderSimple": [("ckpt_name", ("checkpoints",))],
    "VAELoader": [("vae_name", ("vae",))],
}
INPUT_FILES = {"LoadVideo": "file", "LoadImage": "image"}
SAMPLERS = ("MYVVideoKSampler", "MYVLongVideoSampler", "KSampler")
# Job options by short name: the (class_type, input) pairs they set.
OPTIONS = {
    "steps": [(s, "steps") for s in SAMPLERS], "cfg": [(s, "cfg") for s in SAMPLERS],
    "sampler_name": [(s, "sampler_name") for s in SAMPLERS], "scheduler": [(s, "scheduler") for s in SAMPLERS],
    "denoise": [(s, "denoise") for s in SAMPLERS],
    "frames": [("MYVSelectFrames", "max_frames"), ("EmptyLatentImage", "batch_size")],
    "stride": [("MYVSelectFrames", "stride")], "start": [("MYVSelectFrames", "start")],
    "width": [("ImageScale", "width"), ("EmptyLatentImage", "width")],
    "height": [("ImageScale", "height"), ("EmptyLatentImage", "height")],
    "fps": [("CreateVideo", "fps")],
}


def load_workflow(path):
    try:
        graph = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read the workflow {path}: {e}")
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise RunError(f"{path} is a UI-format workflow (what the browser loads); give its API-format twin "
                       "(workflows/api/*_api.json), or export it from the browser with Workflow > Export (API).")
    if not isinstance(graph, dict) or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise RunError(f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}})")
    return graph


def nodes_of(graph, class_type):
    return [graph[k] for k in sorted(graph, key=lambda k: (len(k), k)) if graph[k]["class_type"] == class_type]


def apply_overrides(graph, video_name=None, prompt=None, seed=None):
    """--video -> the first LoadVideo, --prompt -> the first CLIPTextEncode with a non-empty text,
    --seed -> every seed input."""
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


def apply_options(graph, options):
    """Job options: short names (OPTIONS: steps, cfg, frames, width, ...) or "ClassType.input" for
    every node of that class. An option that fits no node of the workflow is an error."""
    for key, value in options.items():
        if key in OPTIONS:
            targets = OPTIONS[key]
        elif "." in key:
            targets = [tuple(key.split(".", 1))]
        else:
            raise RunError(f"unknown job option {key!r}: use one of {', '.join(OPTIONS)} or ClassType.input")
        hits = 0
        for class_type, name in targets:
            for node in nodes_of(graph, class_type):
                if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                    if key == "frames" and name == "batch_size" and node["inputs"][name] == 1:
                        continue  # a 1-frame latent the long-video sampler repeats
                    node["inputs"][name] = value
                    hits += 1
        if not hits:
            raise RunError(f"job option {key!r}: the workflow has no {' or '.join(f'{c}.{n}' for c, n in targets)}")


def set_output_folder(graph, folder):
    """Every save node writes under `folder` (a subfolder of the output folder), keeping its name."""
    for node in graph.values():
        prefix = node["inputs"].get("filename_prefix")
        if isinstance(prefix, str):
            node["inputs"]["filename_prefix"] = f"{folder}/{prefix.rsplit('/', 1)[-1]}"


def self_check_overrides(graph):
    """Tiny files, few small frames and 2 steps; the tiny model has no text encoder, so the prompts
    become core LotusConditioning (a fixed [1, 2, 1024] conditioning)."""
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("MYVCheckpointLoader", "MYVTemporalModuleLoader"):
            inputs["ckpt_name" if kind == "MYVCheckpointLoader" else "temporal_name"] = selfcheck.CHECKPOINT
        elif kind == "MYVDepthEstimatorLoader":
            inputs.update(model_name=selfcheck.ESTIMATOR, device="cpu")
        elif kind == "LoadVideo":
            inputs["file"] = selfcheck.CLIP
        elif kind == "CLIPTextEncode":
            node["class_type"], node["inputs"] = "LotusConditioning", {}
        elif kind == "MYVSelectFrames":
            inputs["max_frames"] = min(inputs.get("max_frames") or selfcheck.FRAMES, selfcheck.FRAMES)
        elif kind in ("ImageScale", "EmptyLatentImage"):
            inputs["width"] = inputs["height"] = selfcheck.SIZE
            if kind == "EmptyLatentImage" and not isinstance(inputs["batch_size"], list):  # a link follows max_frames
                inputs["batch_size"] = min(inputs["batch_size"], selfcheck.FRAMES)
        elif kind in SAMPLERS:
            inputs["steps"] = 2
            if kind == "MYVLongVideoSampler":
                inputs["window_frames"], inputs["context_frames"] = 2, 1
    set_output_folder(graph, "myv_selfcheck")


# ---------------------------------------------------------------- against a server

def check_server(client, graph, where=""):
    """Before queuing: the server knows every node type of the graph (the pack's among them) and lists
    every model file a loader names. `where` is appended to each message (e.g. " on http://...")."""
    info = client.object_info()
    unknown = sorted({n["class_type"] for n in graph.values()} - set(info))
    if unknown:
        ours = [c for c in unknown if c.startswith("MYV")]
        hint = (f"this pack (ComfyUI-MakeYourVideo) is not loaded{where}: install it in ComfyUI/custom_nodes/ and "
                "restart ComfyUI (if it is installed, its import failed: see ComfyUI's log)") if ours else \
            "install the custom node pack that provides them"
        raise RunError(f"the server{where} does not know the node types {', '.join(unknown)}: {hint}")
    missing = []
    for node in graph.values():
        for name, folders in MODEL_INPUTS.get(node["class_type"], []):
            value = node["inputs"].get(name)
            options = client.options(node["class_type"], name)
            if isinstance(value, str) and options is not None and value not in options:
                missing.append(f"missing model file {value}{where}: put it in ComfyUI/models/{folders[0]}/ (see README)")
    if missing:
        raise RunError("\n".join(missing))


def upload_name(path):
    """The name a clip gets in the server's input folder: its content hash and its own name, so two
    different clips never share a name (ComfyUI caches a loader's result by its inputs)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"myv_{digest.hexdigest()[:12]}_{Path(path).name}"


def stage_inputs(client, graph, clip=None, local_inputs=None, where=""):
    """Uploads the clip (given to the first LoadVideo) and every other input file the graph names that
    the server does not list but `local_inputs` (a local input folder, e.g. ComfyUI/input) holds."""
    if clip is not None:
        apply_overrides(graph, video_name=client.upload(clip, upload_name(clip)))
    for node in graph.values():
        name = INPUT_FILES.get(node["class_type"])
        value = node["inputs"].get(name) if name else None
        if not isinstance(value, str) or value in (client.options(node["class_type"], name) or []):
            continue
        source = Path(local_inputs) / value if local_inputs else None
        if source is None or not source.is_file():
            raise RunError(f"missing input file {value} ({node['class_type']}){where}: pass --video FILE"
                           + (f" or put it in {local_inputs}/" if local_inputs else ""))
        node["inputs"][name] = client.upload(source, value)
