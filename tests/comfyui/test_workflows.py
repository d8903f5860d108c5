"""The shipped workflows (workflows/*.json) stay true to the nodes of a real ComfyUI server with this pack.

- every node type of every UI workflow exists in /object_info (frontend-only Note nodes aside);
- each node's widgets_values line up with its widget inputs, positionally, as the browser reads them
  (frontend-only values accounted for: control_after_generate after seed widgets, the upload
  button value after upload combos; a dynamic combo's value is followed by the widgets of the option
  it selects, named "<combo>.<input>", as ComfyUI 0.33's frontend 1.49.6 lays them out), and
  widgets_values_named, where present, names them the same;
- every link's type agrees with its source output and its target input, and every node keeps the
  output slots its definition has;
- each API twin (api/<name>_api.json) equals the UI file converted here (widget values by name in order,
  links as [source id, slot], frontend-only values and nodes dropped);
- the files are what ComfyUI 0.33's browser saves (primary); on an older server (0.3.64) the few
  values and inputs that 0.33 added to core video nodes (NEWER_CORE) are the only allowed extras:
  the older browser ignores values past its widgets, the older server the inputs it does not define;
- the API twins run end to end on a tiny random checkpoint, a tiny depth estimator and a generated
  64x64 clip, and their SaveVideo files decode to the expected number of frames;
- scripts/run_workflow.py: the self-check run from a copy of the pack without tests/, and its refusals
  (missing model, port taken, unknown node type); --server and batches: test_runner_servers.py.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import urllib.request

import av
import pytest

from conftest import COMFYUI, ROOT
from tiny_models import taesd_state_dict, tiny_depth_estimator, write_test_clip

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder: test_server's helpers and fixture
from test_server import (CKPT, PACK_DIR, execution_errors, free_port, http, log_tail,  # noqa: E402
                         random_taesd_state_dict, run_prompt)
from test_server import server  # noqa: E402,F401  the module's own ComfyUI server

WORKFLOWS = ROOT / "workflows"
RUNNER = ROOT / "scripts" / "run_workflow.py"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))  # the API twins live in workflows/api/, out of the templates browser
EXPECTED = {"myv_video_rerender", "myv_long_video", "myv_depth_images"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # virtual nodes of the browser: never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
# Combos whose options are the files of a folder: the test server has other files than a user's.
FILE_WIDGETS = {("MYVCheckpointLoader", "ckpt_name"), ("MYVDepthEstimatorLoader", "model_name"),
                ("LoadVideo", "file"), ("LoadImage", "image")}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # a combo whose selected option brings its own inputs (ComfyUI 0.33)
# Core nodes that ComfyUI 0.33 gave more than 0.3.64 knows, so that a workflow saved by 0.33's browser
# carries, on an older server: `values` more widgets_values than the older browser reads (it assigns
# them positionally and ignores the rest) and API `inputs` the older server does not define (it
# validates and passes on only the inputs it defines). Nothing else may be extra anywhere.
NEWER_CORE = {
    "CreateVideo": {"values": 1, "inputs": {"bit_depth"}},   # bit_depth (0.33)
    "SaveVideo": {"values": 1, "inputs": {"format.codec"}},  # format's codec (0.33), then the hidden legacy codec
}
CLIP_FRAMES = 12  # the generated test clip; stride 2 keeps 6
ESTIMATOR = "tiny_dpt/model.safetensors"


# ---------------------------------------------------------------- the browser's reading of a node

def input_spec(info, name):
    for section in ("required", "optional"):
        if name in info["input"].get(section, {}):
            return info["input"][section][name]
    raise KeyError(name)


def input_names(info):
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    return list(order.get("required", [])) + list(order.get("optional", []))


def is_widget(spec):
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind == DYNAMIC_COMBO


def spec_options(spec):
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def widget_entries(name, spec):
    """The widgets_values one widget input takes: [(name, spec)], then (None, kind) for a frontend-only
    value (control_after_generate after a seed, the upload button after an upload combo)."""
    options = spec_options(spec)
    entries = [(name, spec)]
    if spec[0] == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
        entries.append((None, "control_after_generate"))
    if any(options.get(flag) for flag in UPLOAD_FLAGS):
        entries.append((None, "upload"))
    return entries


def selected_inputs(spec, key):
    """[(name, spec)] of the inputs a dynamic combo's option `key` brings, required first, as the browser
    adds them; [] for an unknown key."""
    for option in spec_options(spec).get("options", []):
        if option.get("key") == key:
            inputs = option.get("inputs") or {}
            return [(name, sub) for section in ("required", "optional")
                    for name, sub in (inputs.get(section) or {}).items()]
    return []


def combo_options(spec):
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == DYNAMIC_COMBO:
        return [option.get("key") for option in spec_options(spec).get("options", [])]
    return spec_options(spec).get("options", [])


def read_widgets(node, info):
    """How the browser assigns a UI node's widgets_values: ([(input name or None, spec, value)], widgets
    left without a value, values left over). Positional over the node's widgets in input order; a
    dynamic combo's value puts the widgets of the option it selects right after it ("<combo>.<input>")."""
    # A widget with a link keeps its value in widgets_values (both frontends serialise every widget).
    pending = [e for name in input_names(info) if is_widget(input_spec(info, name))
               for e in widget_entries(name, input_spec(info, name))]
    values = list(node.get("widgets_values") or [])
    read = []
    while pending and values:
        name, spec = pending.pop(0)
        value = values.pop(0)
        read.append((name, spec, value))
        if name is not None and spec[0] == DYNAMIC_COMBO:
            pending[0:0] = [e for sub, sub_spec in selected_inputs(spec, value) if is_widget(sub_spec)
                            for e in widget_entries(f"{name}.{sub}", sub_spec)]
    return read, pending, values


def widget_name(name, spec):
    return name if name is not None else spec  # frontend-only widgets: "control_after_generate", "upload"


def value_problem(node_type, name, spec, value):
    """What is wrong with one widget value (None if nothing)."""
    options = spec_options(spec)
    kind = spec[0]
    if kind == "INT":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "FLOAT":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "STRING":
        ok = isinstance(value, str)
    elif kind == "BOOLEAN":
        ok = isinstance(value, bool)
    elif (node_type, name) in FILE_WIDGETS:
        ok = isinstance(value, str) and value != ""
    else:
        ok = value in combo_options(spec)
    if not ok:
        is_combo = not isinstance(kind, str) or kind not in WIDGET_TYPES or kind == "COMBO"
        return f"{value!r} does not fit {'COMBO' if is_combo else kind} {combo_options(spec)[:8] if is_combo else ''}"
    if kind in ("INT", "FLOAT"):
        if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
            return f"{value} outside [{options.get('min')}, {options.get('max')}]"
    return None


def widget_problems(node, info):
    """What is wrong with one UI node's widgets_values against its /object_info entry ([] if nothing)."""
    node_type, values = node["type"], node.get("widgets_values") or []
    read, missing, extra = read_widgets(node, info)
    problems = []
    if missing:
        names = [widget_name(name, spec) for name, spec, _ in read] + [widget_name(*e) for e in missing]
        problems.append(f"{node_type} #{node['id']}: {len(values)} widgets_values {values} for {len(names)} widgets "
                        f"{names}")
    newer = NEWER_CORE.get(node_type)
    older_server = newer and not newer["inputs"] <= accepted_inputs(info, {n: v for n, _, v in read if n is not None})
    if extra and not (older_server and len(extra) == newer["values"]):
        problems.append(f"{node_type} #{node['id']}: {len(values)} widgets_values {values} for {len(read)} widgets "
                        f"{[widget_name(name, spec) for name, spec, _ in read]}")
    for name, spec, value in read:
        where = f"{node_type} #{node['id']}.{widget_name(name, spec)}"
        if name is None:
            ok = value in CONTROL_VALUES if spec == "control_after_generate" else value == "image"
            if not ok:
                problems.append(f"{where}: frontend-only value {value!r}")
            continue
        problem = value_problem(node_type, name, spec, value)
        if problem:
            problems.append(f"{where}: {problem}")
    named = node.get("widgets_values_named")
    if named is not None:  # the browser writes it beside widgets_values: every widget by name, same order
        if list(named.values()) != values:
            problems.append(f"{node_type} #{node['id']}: widgets_values_named {named} != widgets_values {values}")
        elif not missing and not extra and list(named) != [widget_name(name, spec) for name, spec, _ in read]:
            problems.append(f"{node_type} #{node['id']}: widgets_values_named names {list(named)}, the widgets are "
                            f"{[widget_name(name, spec) for name, spec, _ in read]}")
    return problems


def ui_to_api(workflow, object_info):
    """The API graph the browser would queue for a UI workflow (no muted or bypassed nodes here)."""
    links = {link[0]: link for link in workflow["links"]}
    api = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node.get("mode", 0) == 0, f"node #{node['id']} is muted or bypassed: not supported here"
        info = object_info[node["type"]]
        read, missing, _ = read_widgets(node, info)
        assert not missing, \
            f"{node['type']} #{node['id']}: no widgets_values left for {[widget_name(*e) for e in missing]}"
        inputs = {name: value for name, _, value in read if name is not None}
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, src, slot, _, _, _ = links[socket["link"]]
                inputs[socket["name"]] = [str(src), slot]
        order = [n for name in input_names(info) for n in [name] + [k for k in inputs if k.startswith(name + ".")]]
        ordered = {name: inputs[name] for name in order if name in inputs}
        assert set(ordered) == set(inputs), f"{node['type']} #{node['id']}: {sorted(set(inputs) - set(ordered))}"
        api[str(node["id"])] = {"inputs": ordered, "class_type": node["type"],
                                "_meta": {"title": node.get("title") or info.get("display_name") or node["type"]}}
    return api


def accepted_inputs(info, inputs):
    """The input names a server reads from an API node: its inputs, and those of each dynamic combo's
    selected option ("<combo>.<input>", nested)."""
    names = set()

    def walk(entries, prefix):
        for name, spec in entries:
            full = prefix + name
            names.add(full)
            if spec[0] == DYNAMIC_COMBO and full in inputs:
                walk(selected_inputs(spec, inputs[full]), full + ".")
    walk([(name, input_spec(info, name)) for name in input_names(info)], "")
    return names


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def object_info(server):
    url, log_path, _ = server
    status, info = http(url + "/object_info", timeout=60)
    assert status == 200, f"GET /object_info: HTTP {status}{log_tail(log_path)}"
    return info


def load(path):
    return json.loads(path.read_text())


def count_frames(path):
    with av.open(str(path)) as container:
        frames = [f for f in container.decode(video=0)]
    return len(frames), (frames[0].width, frames[0].height) if frames else None


@pytest.fixture(scope="module")
def run_inputs(server):
    """The test clip in the server's input/ and the tiny depth estimator in models/depth_estimators/."""
    _, _, base = server
    (base / "input").mkdir(exist_ok=True)
    write_test_clip(base / "input" / "test_clip.mp4", frames=CLIP_FRAMES)
    tiny_depth_estimator(base / "models" / "depth_estimators" / "tiny_dpt")
    return "test_clip.mp4"


def tiny_run_graph(api, clip, prefix):
    """The API twin with test-time overrides: tiny model files, the test clip, 2 steps, 64x64, few frames."""
    graph = copy.deepcopy(api)
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "MYVCheckpointLoader":
            inputs["ckpt_name"] = CKPT
        elif kind == "MYVDepthEstimatorLoader":
            inputs["model_name"] = ESTIMATOR
            inputs["device"] = "cpu"
        elif kind == "LoadVideo":
            inputs["file"] = clip
        elif kind == "CLIPTextEncode":  # the tiny checkpoint has no text encoder: a fixed [1, 2, 1024] cond
            node["class_type"], node["inputs"] = "LotusConditioning", {}
        elif kind == "MYVSelectFrames" and inputs["max_frames"] <= 16:
            inputs["max_frames"] = 4
        elif kind == "ImageScale":
            inputs["width"] = inputs["height"] = 64
        elif kind == "EmptyLatentImage":  # a batch_size linked to MYV Select Frames follows max_frames
            inputs["width"] = inputs["height"] = 64
        elif kind in ("MYVVideoKSampler", "MYVLongVideoSampler"):
            inputs["steps"] = 2
            if kind == "MYVLongVideoSampler":
                inputs["window_frames"], inputs["context_frames"] = 4, 2
        elif kind == "SaveVideo":
            inputs["filename_prefix"] = f"{prefix}/{inputs['filename_prefix'].rsplit('/', 1)[-1]}"
    return graph


# ---------------------------------------------------------------- static checks

def test_templates_browser_lists_exactly_the_ui_workflows_with_thumbnails(server):
    """ComfyUI serves a pack's workflows/*.json in the templates browser (/workflow_templates) and the
    frontend shows /api/workflow_templates/<pack>/<name>.jpg on each card; the API twins stay out."""
    url, log_path, _ = server
    status, templates = http(url + "/workflow_templates")
    assert status == 200, f"GET /workflow_templates: HTTP {status}{log_tail(log_path)}"
    assert sorted(templates.get(PACK_DIR, [])) == sorted(EXPECTED), templates
    for name in EXPECTED:
        for suffix, kind in ((".json", "application/json"), (".jpg", "image/jpeg")):
            with urllib.request.urlopen(f"{url}/api/workflow_templates/{PACK_DIR}/{name}{suffix}", timeout=30) as response:
                assert response.status == 200 and response.headers["Content-Type"].startswith(kind), (name, suffix)
                body = response.read()
            if suffix == ".json":
                assert "nodes" in json.loads(body), f"{name}.json is not a UI workflow"


def test_the_three_workflows_ship_in_both_formats():
    names = {p.stem for p in UI_FILES}
    assert EXPECTED <= names, f"workflows/ lacks {sorted(EXPECTED - names)}"
    for path in UI_FILES:
        assert (WORKFLOWS / "api" / f"{path.stem}_api.json").is_file(), f"{path.name} has no API twin {path.stem}_api.json"
        workflow = load(path)
        assert workflow.get("version") == 0.4, f"{path.name}: version {workflow.get('version')}"
        ids = [n["id"] for n in workflow["nodes"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate node ids"
        assert workflow["last_node_id"] == max(ids), f"{path.name}: last_node_id {workflow['last_node_id']} != {max(ids)}"
        link_ids = [link[0] for link in workflow["links"]]
        assert len(link_ids) == len(set(link_ids)), f"{path.name}: duplicate link ids"
        assert workflow["last_link_id"] == max(link_ids), f"{path.name}: last_link_id"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_every_node_type_exists(path, object_info):
    types = {n["type"] for n in load(path)["nodes"]} - FRONTEND_ONLY
    missing = sorted(t for t in types if t not in object_info)
    assert not missing, f"{path.name} uses node types unknown to the server: {missing}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_widgets_values_line_up(path, object_info):
    problems = []
    for node in load(path)["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            assert not node.get("inputs") and not node.get("outputs"), f"{node['type']} #{node['id']} is wired"
            continue
        problems += widget_problems(node, object_info[node["type"]])
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_links_agree_with_sockets(path, object_info):
    workflow = load(path)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    problems = []
    for link_id, src, src_slot, dst, dst_slot, link_type in workflow["links"]:
        source, target = nodes[src], nodes[dst]
        out_types = object_info[source["type"]]["output"]
        if src_slot >= len(out_types) or out_types[src_slot] != link_type:
            problems.append(f"link {link_id}: source {source['type']}[{src_slot}] outputs "
                            f"{out_types[src_slot] if src_slot < len(out_types) else None}, link says {link_type}")
        output = source["outputs"][src_slot]
        if output["type"] != link_type or link_id not in (output.get("links") or []):
            problems.append(f"link {link_id}: {source['type']} output {src_slot} is {output}")
        socket = target["inputs"][dst_slot]
        if socket.get("link") != link_id or socket["type"] != link_type:
            problems.append(f"link {link_id}: {target['type']} input {dst_slot} is {socket}")
        spec = input_spec(object_info[target["type"]], socket["name"])
        expected = "COMBO" if isinstance(spec[0], list) else spec[0]
        if expected != link_type and expected != "*":
            problems.append(f"link {link_id}: {target['type']}.{socket['name']} takes {expected}, gets {link_type}")
    for node in workflow["nodes"]:
        for socket in node.get("inputs", []):
            if socket.get("link") is not None and socket["link"] not in {link[0] for link in workflow["links"]}:
                problems.append(f"{node['type']} #{node['id']}.{socket['name']}: dangling link {socket['link']}")
        if node["type"] in FRONTEND_ONLY:
            continue
        info = object_info[node["type"]]
        # every output slot of the definition, in order; slots past it (an older server's view of a
        # newer node's outputs) must be unconnected
        saved = node.get("outputs") or []
        if [o["type"] for o in saved[:len(info["output"])]] != list(info["output"]):
            problems.append(f"{node['type']} #{node['id']}: output slots {[o['type'] for o in saved]}, "
                            f"the node has {info['output']}")
        if any(o.get("links") for o in saved[len(info["output"]):]):
            problems.append(f"{node['type']} #{node['id']}: links from output slots the node does not have")
        connected = {s["name"] for s in node.get("inputs", []) if s.get("link") is not None}
        required = [n for n in info.get("input_order", {}).get("required", []) if not is_widget(input_spec(info, n))]
        unconnected = [n for n in required if n not in connected]
        if unconnected:
            problems.append(f"{node['type']} #{node['id']}: required inputs without a link: {unconnected}")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_equals_the_ui_file(path, object_info):
    expected = ui_to_api(load(path), object_info)
    twin = load(WORKFLOWS / "api" / f"{path.stem}_api.json")
    twin, expected = ({k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in graph.items()}
                      for graph in (twin, expected))
    for node_id, node in twin.items():  # on an older server: the inputs of NEWER_CORE it ignores
        if node["class_type"] not in object_info:
            continue
        unknown = set(node["inputs"]) - accepted_inputs(object_info[node["class_type"]], node["inputs"])
        ignored = unknown & NEWER_CORE.get(node["class_type"], {}).get("inputs", set())
        assert not any(isinstance(node["inputs"][name], list) for name in ignored), f"#{node_id}: links in {ignored}"
        for name in ignored:
            del node["inputs"][name]
    assert twin == expected


def test_the_widget_check_catches_misaligned_values(object_info):
    """The checks above would fail on the usual breakages: a lost control_after_generate, a widget
    added to a node without the workflow following, a value of the wrong type, an unknown option, a
    codec the chosen format does not offer, misnamed widgets_values_named."""
    nodes = {n["type"]: n for n in load(WORKFLOWS / "myv_video_rerender.json")["nodes"]}
    sampler, select = nodes["MYVVideoKSampler"], nodes["MYVSelectFrames"]
    save, create = nodes["SaveVideo"], nodes["CreateVideo"]
    for node in (sampler, select, save, create):
        assert not widget_problems(node, object_info[node["type"]]), node
    dynamic_format = input_spec(object_info["SaveVideo"], "format")[0] == DYNAMIC_COMBO
    broken = [
        (sampler, lambda v: v.pop(1)),                     # control_after_generate dropped
        (sampler, lambda v: v.append("per_clip")),          # one value too many
        (sampler, lambda v: v.__setitem__(4, "no_such_sampler")),
        (sampler, lambda v: v.__setitem__(2, 7.5)),         # steps as a float
        (select, lambda v: v.__setitem__(1, 0)),            # stride below its min
        (nodes["LoadVideo"], lambda v: v.pop()),            # upload button value dropped
        (create, lambda v: v.append(8)),                    # more values than even 0.33 saves
        (save, lambda v: v.__setitem__(slice(1, 3), ["webm", "h264"])),  # 0.33: webm has no h264; 0.3.64: no webm
    ]
    if dynamic_format:  # 0.33's layout: format, format's codec, the hidden legacy codec
        broken += [(save, lambda v: v.pop()), (save, lambda v: v.append("auto")),
                   (create, lambda v: v.__setitem__(1, 12))]  # bit_depth above its max
    for node, damage in broken:
        node = copy.deepcopy(node)
        node.pop("widgets_values_named", None)  # the positional reading alone must catch it
        damage(node["widgets_values"])
        assert widget_problems(node, object_info[node["type"]]), f"not caught: {node['type']} {node['widgets_values']}"
    misnamed = copy.deepcopy(sampler)
    misnamed["widgets_values_named"] = {("step" if k == "steps" else k): v
                                        for k, v in misnamed["widgets_values_named"].items()}
    assert widget_problems(misnamed, object_info["MYVVideoKSampler"])


@pytest.mark.parametrize("name", ["myv_video_rerender", "myv_depth_images"])
def test_the_clip_length_is_set_in_one_place(name):
    """Empty Latent Image's batch_size takes MYV Select Frames' frame_count through a link (a widget
    turned input, as both frontends save it), so max_frames is the only edit for another length."""
    workflow = load(WORKFLOWS / f"{name}.json")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    latent, = (n for n in workflow["nodes"] if n["type"] == "EmptyLatentImage")
    socket, = (i for i in latent["inputs"] if i["name"] == "batch_size")
    assert socket["widget"] == {"name": "batch_size"} and socket["type"] == "INT"
    link = next(link for link in workflow["links"] if link[0] == socket["link"])
    source = nodes[link[1]]
    assert source["type"] == "MYVSelectFrames" and source["outputs"][link[2]]["name"] == "frame_count"
    assert socket["link"] in source["outputs"][link[2]]["links"] and link[3:5] == [latent["id"], 0]


def test_official_defaults_in_the_rerender_workflow():
    api = load(WORKFLOWS / "api" / "myv_video_rerender_api.json")
    by_type = {}
    for node in api.values():
        by_type.setdefault(node["class_type"], []).append(node["inputs"])
    select = by_type["MYVSelectFrames"][0]
    assert (select["start"], select["stride"], select["max_frames"]) == (0, 2, 16)
    sampler = by_type["MYVVideoKSampler"][0]
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == (50, 7.5, "ddpm", "ddim_uniform")
    latent = by_type["EmptyLatentImage"][0]
    assert (latent["width"], latent["height"]) == (256, 256)
    select_id, = (k for k, node in api.items() if node["class_type"] == "MYVSelectFrames")
    assert latent["batch_size"] == [select_id, 1]  # frame_count: max_frames is the one edit for the length
    assert {v["fps"] for v in by_type["CreateVideo"]} == {8.0}
    texts = sorted(v["text"] for v in by_type["CLIPTextEncode"])
    assert texts == ["", "a tiger walks in the forest, photorealistic"]
    assert by_type["MYVCheckpointLoader"][0]["ckpt_name"] == "model.ckpt"
    assert by_type["MYVDepthEstimatorLoader"][0]["model_name"] == "dpt_hybrid-midas-501f0c75.pt"
    assert by_type["LoadVideo"][0]["file"] == "input.mp4"


@pytest.mark.parametrize("name", ["myv_video_rerender", "myv_long_video"])
def test_estimated_depth_reaches_the_sampler_at_its_native_size(name):
    """The workflows with a depth estimator connect both of MYV Estimate Depth's outputs to the sampler:
    depth (the IMAGE, also saved) and native_depth (for the official depth channel)."""
    api = load(WORKFLOWS / "api" / f"{name}_api.json")
    sampler = next(n["inputs"] for n in api.values() if n["class_type"] in ("MYVVideoKSampler", "MYVLongVideoSampler"))
    source, slot = sampler["depth"]
    assert api[source]["class_type"] == "MYVEstimateDepth" and slot == 0
    assert sampler.get("native_depth") == [source, 1]


# ---------------------------------------------------------------- end to end on the tiny model

RUN_CASES = {  # workflow: {SaveVideo prefix: frames}, from a 12-frame clip
    "myv_video_rerender": {"myv_rerender": 4, "myv_depth": 4},
    "myv_long_video": {"myv_long": 6, "myv_long_depth": 6},  # stride 2 of 12 frames, 64 allowed
    "myv_depth_images": {"myv_from_depth": 4},
}


@pytest.mark.parametrize("name", sorted(RUN_CASES))
def test_api_twin_runs_on_the_tiny_model(name, server, run_inputs):
    url, log_path, base = server
    prefix = f"wf_{name}"
    graph = tiny_run_graph(load(WORKFLOWS / "api" / f"{name}_api.json"), run_inputs, prefix)
    entry = run_prompt(server, graph)
    state = entry.get("status") or {}
    assert state.get("status_str") == "success", \
        f"{name} failed: {execution_errors(entry)}{log_tail(log_path)}"
    for video_prefix, frames in RUN_CASES[name].items():
        files = sorted((base / "output" / prefix).glob(f"{video_prefix}_[0-9]*.mp4"))
        assert len(files) == 1, f"{name}: expected one {prefix}/{video_prefix}_*.mp4, found {files}"
        assert count_frames(files[0]) == (frames, (64, 64)), f"{files[0].name}: {count_frames(files[0])}"


# ---------------------------------------------------------------- the headless runner

def run_runner(*args, timeout=600, runner=RUNNER):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(runner), "--comfyui", str(COMFYUI), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(runner.parents[1]))


def pack_without_tests(tmp_path):
    """A copy of the pack as an archive without tests/ would install it (no tests/, no .git)."""
    copy_root = tmp_path / "ComfyUI-MakeYourVideo"
    shutil.copytree(ROOT, copy_root, ignore=shutil.ignore_patterns("tests", ".git", "__pycache__", ".*cache"))
    assert not (copy_root / "tests").exists()
    return copy_root


def test_runner_self_check_renders_a_video(tmp_path):
    """The first run before the weights, from a copy of the pack WITHOUT tests/: everything the self-check
    needs is generated by the pack's own code."""
    out = tmp_path / "out"
    runner = pack_without_tests(tmp_path) / "scripts" / "run_workflow.py"
    done = run_runner("--self-check", "--output-dir", str(out), "--port", str(free_port()), runner=runner)
    report = f"\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    paths = [line.split("output:", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("output:")]
    assert paths, f"no 'output:' line{report}"
    for path in paths:
        assert os.path.isfile(path) and os.path.commonpath([path, str(out)]) == str(out), f"{path}{report}"
    videos = [p for p in paths if os.path.basename(p).startswith("myv_rerender")]
    assert videos and count_frames(videos[0])[0] == 4, f"{videos}{report}"
    assert "real weights" in done.stdout and "models/makeyourvideo/" in done.stdout, report


def test_runner_taesd_weights_fit_comfyui_taesd():
    """The self-check VAE is written without importing ComfyUI: same keys and shapes as comfy.taesd."""
    ours = {k: tuple(v.shape) for k, v in taesd_state_dict().items()}
    comfy = {k: tuple(v.shape) for k, v in random_taesd_state_dict().items()}
    assert ours == comfy


def test_runner_refuses_a_missing_model_file(tmp_path):
    """A workflow naming a checkpoint that is not installed: exit 2 and where to put the file."""
    graph = load(WORKFLOWS / "api" / "myv_video_rerender_api.json")
    loader = next(n for n in graph.values() if n["class_type"] == "MYVCheckpointLoader")
    loader["inputs"]["ckpt_name"] = "model_not_installed.ckpt"
    path = tmp_path / "missing_model_api.json"
    path.write_text(json.dumps(graph))
    done = run_runner("--workflow", str(path), "--output-dir", str(tmp_path / "out"), "--port", str(free_port()),
                      timeout=300)
    assert done.returncode == 2, f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "missing model file model_not_installed.ckpt" in done.stderr, done.stderr
    assert "models/makeyourvideo/" in done.stderr, done.stderr


def test_runner_refuses_a_taken_port(server, tmp_path):
    url, _, _ = server
    port = int(url.rsplit(":", 1)[1])
    done = run_runner("--self-check", "--output-dir", str(tmp_path), "--port", str(port), timeout=120)
    assert done.returncode == 2, f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    assert f"port {port} is taken" in done.stderr and "--port" in done.stderr, done.stderr


def test_runner_reports_an_unknown_node_type(tmp_path):
    graph = load(WORKFLOWS / "api" / "myv_video_rerender_api.json")
    graph["99"] = {"class_type": "NoSuchNodeFromAnotherPack", "inputs": {"images": ["11", 0]}}
    broken = tmp_path / "broken_api.json"
    broken.write_text(json.dumps(graph))
    done = run_runner("--self-check", "--workflow", str(broken), "--output-dir", str(tmp_path / "out"),
                      "--port", str(free_port()), timeout=300)
    assert done.returncode == 2, f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "NoSuchNodeFromAnotherPack" in done.stderr, done.stderr
