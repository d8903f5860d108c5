"""scripts/run_workflow.py without a server: arguments, workflow reading, overrides, refusal messages."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("run_workflow_under_test", ROOT / "scripts" / "run_workflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_nothing_of_comfyui(runner):
    source = (ROOT / "scripts" / "run_workflow.py").read_text()
    for name in ("comfy", "folder_paths", "nodes", "execution", "server", "comfy_extras", "comfy_api"):
        assert f"import {name}" not in source and f"from {name} " not in source and f"from {name}." not in source


def test_arguments(runner):
    args = runner.parse_args(["--comfyui", "/x"])
    assert (args.workflow, args.video, args.prompt, args.seed, args.port, args.self_check) == \
        (None, None, None, None, runner.DEFAULT_PORT, False)
    args = runner.parse_args(["--comfyui", "/x", "--seed", "7", "--port", "9000", "--self-check", "--prompt", "a cat"])
    assert (args.seed, args.port, args.self_check, args.prompt) == (7, 9000, True, "a cat")
    for bad in (["--seed", "-1"], ["--port", "0"], ["--port", "70000"], ["--seed", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            runner.parse_args(["--comfyui", "/x", *bad])
        assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        runner.parse_args([])  # --comfyui is required


def test_not_a_comfyui_folder(runner, tmp_path):
    with pytest.raises(runner.RunError, match="not a ComfyUI folder") as error:
        runner.comfyui_folder(tmp_path)
    assert error.value.status == 2


def test_default_workflow_is_the_rerender_api_twin(runner):
    assert runner.DEFAULT_WORKFLOW == WORKFLOWS / "myv_video_rerender_api.json"
    graph = runner.load_workflow(runner.DEFAULT_WORKFLOW)
    assert {n["class_type"] for n in graph.values()} >= {"LoadVideo", "MYVEstimateDepth", "MYVVideoKSampler", "SaveVideo"}


def test_ui_format_and_garbage_are_refused(runner, tmp_path):
    with pytest.raises(runner.RunError, match="UI-format workflow"):
        runner.load_workflow(WORKFLOWS / "myv_video_rerender.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(runner.RunError, match="cannot read"):
        runner.load_workflow(bad)
    bad.write_text(json.dumps({"1": {"inputs": {}}}))
    with pytest.raises(runner.RunError, match="not an API-format"):
        runner.load_workflow(bad)


def test_overrides_by_node_class(runner):
    graph = runner.load_workflow(WORKFLOWS / "myv_video_rerender_api.json")
    runner.apply_overrides(graph, video_name="mine.mp4", prompt="a fox in the snow", seed=42)
    texts = sorted(n["inputs"]["text"] for n in graph.values() if n["class_type"] == "CLIPTextEncode")
    assert texts == ["", "a fox in the snow"]  # the negative (empty) prompt stays empty
    assert [n["inputs"]["file"] for n in graph.values() if n["class_type"] == "LoadVideo"] == ["mine.mp4"]
    assert [n["inputs"]["seed"] for n in graph.values() if "seed" in n["inputs"]] == [42]


def test_overrides_that_do_not_fit(runner):
    graph = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    with pytest.raises(runner.RunError, match="no LoadVideo"):
        runner.apply_overrides(graph, video_name="x.mp4")
    with pytest.raises(runner.RunError, match="no CLIPTextEncode"):
        runner.apply_overrides(graph, prompt="x")


def test_self_check_overrides(runner):
    graph = runner.load_workflow(WORKFLOWS / "myv_long_video_api.json")
    runner.self_check_overrides(graph)
    kinds = {n["class_type"] for n in graph.values()}
    assert "CLIPTextEncode" not in kinds and "LotusConditioning" in kinds
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] == "MYVCheckpointLoader":
            assert inputs["ckpt_name"] == runner.SELF_CHECK_CKPT
        if node["class_type"] == "MYVLongVideoSampler":
            assert inputs["steps"] == 2 and inputs["context_frames"] < inputs["window_frames"]
        if node["class_type"] == "SaveVideo":
            assert inputs["filename_prefix"].startswith("myv_selfcheck/")


def test_refusal_summary_names_unknown_nodes(runner):
    body = {"error": {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the class_type "
                      "property.", "details": "Node ID '#99'"}, "node_errors": {}}
    assert "Node ID '#99'" in runner.summarise_refusal(body)
    body = {"error": {"message": "Prompt outputs failed validation"}, "node_errors": {
        "8": {"class_type": "MYVCheckpointLoader", "errors": [{"message": "Value not in list",
                                                              "details": "ckpt_name: 'x.ckpt' not in []"}]}}}
    text = runner.summarise_refusal(body)
    assert "node 8 (MYVCheckpointLoader)" in text and "x.ckpt" in text
    text = runner.summarise_refusal({"error": {"message": "Cannot execute because node Foo does not exist."}})
    assert "install the custom node pack" in text


def test_output_files(runner, tmp_path):
    entry = {"outputs": {"15": {"images": [{"filename": "a_00001_.mp4", "subfolder": "video", "type": "output"}],
                                "animated": [True]},
                         "20": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]}}}
    assert runner.output_files(entry, tmp_path) == [tmp_path / "video" / "a_00001_.mp4"]
