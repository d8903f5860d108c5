"""scripts/run_workflow.py without a server: arguments, workflow reading, overrides, refusal messages."""

import importlib.util
import json
import os
import sys
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
    for path in [ROOT / "scripts" / "run_workflow.py", *sorted((ROOT / "scripts" / "myv_runner").glob("*.py"))]:
        source = path.read_text()
        for name in ("comfy", "folder_paths", "nodes", "execution", "server", "comfy_extras", "comfy_api"):
            assert f"import {name}" not in source and f"from {name} " not in source and f"from {name}." not in source, \
                (path.name, name)


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
        runner.parse_args([])  # --comfyui or --server is required
    args = runner.parse_args(["--server", "http://a:8188", "--server", "http://b:8188", "--jobs", "j.csv"])
    assert (args.comfyui, args.server, args.jobs) == (None, ["http://a:8188", "http://b:8188"], "j.csv")
    for bad in (["--server", "a:8188"], ["--server", "http://a", "--jobs", "j.csv", "--video", "x.mp4"]):
        with pytest.raises(SystemExit):
            runner.parse_args(bad)


def test_not_a_comfyui_folder(runner, tmp_path):
    with pytest.raises(runner.RunError, match="not a ComfyUI folder") as error:
        runner.comfyui_folder(tmp_path)
    assert error.value.status == 2


def test_default_workflow_is_the_rerender_api_twin(runner):
    assert runner.DEFAULT_WORKFLOW == WORKFLOWS / "api" / "myv_video_rerender_api.json"
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
    graph = runner.load_workflow(WORKFLOWS / "api" / "myv_video_rerender_api.json")
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
    graph = runner.load_workflow(WORKFLOWS / "api" / "myv_long_video_api.json")
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


# ---------------------------------------------------------------- the self-check's tiny assets

def test_unet_shapes_are_the_official_layout(fixtures_dir):
    """The key -> shape table built from a config is the released model's (its key manifest) and the
    official tiny fixture's, key for key."""
    from safetensors import safe_open
    from tiny_models import UNET_PREFIX, unet_shapes
    manifest = json.loads((fixtures_dir / "myv_key_manifest_full.json").read_text())
    assert unet_shapes(manifest["config"]) == {k: tuple(v) for k, v in manifest["keys"].items()}
    config = json.loads((fixtures_dir / "myv_tiny_reference.json").read_text())["config"]
    with safe_open(str(fixtures_dir / "myv_tiny_unet.safetensors"), "pt") as f:
        tiny = {k[len(UNET_PREFIX):]: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert unet_shapes(config) == tiny


def test_self_check_checkpoint_reads_as_a_make_your_video_model():
    """The generated checkpoint splits like the real one: UNet with temporal layers, TAESD VAE."""
    from myv_core.checkpoint import split_checkpoint
    from tiny_models import tiny_checkpoint
    sd = tiny_checkpoint()
    assert "first_stage_model.taesd_decoder.1.weight" in sd
    parts = split_checkpoint(sd)
    assert parts.unet and parts.temporal and parts.vae and not parts.text_encoder
    assert (parts.config.model_channels, parts.config.context_dim) == (32, 1024)


# ---------------------------------------------------------------- batches (no server)

def jobs_module():
    import importlib
    sys.path.insert(0, str(ROOT / "scripts"))
    return importlib.import_module("myv_runner.jobs")


def test_job_lists_from_csv_json_and_a_folder(tmp_path):
    jobs = jobs_module()
    for name in ("a.mp4", "b.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text('clip,prompt,seed,steps,options\na.mp4,a cat,5,20,"{""cfg"": 6.5}"\nb.mp4,,,,\na.mp4,a dog,,,\n')
    listed = jobs.name_jobs(jobs.read_job_file(csv_file))
    assert [(j.name, j.prompt, j.seed, j.options) for j in listed] == [
        ("a", "a cat", 5, {"cfg": 6.5, "steps": 20}), ("b", None, None, {}), ("a_2", "a dog", None, {})]
    assert listed[0].clip == tmp_path / "a.mp4"
    json_file = tmp_path / "jobs.json"
    json_file.write_text(json.dumps([{"clip": str(tmp_path / "b.mp4"), "name": "my b", "options": {"frames": 8}}]))
    assert [(j.name, j.options) for j in jobs.name_jobs(jobs.read_job_file(json_file))] == [("my_b", {"frames": 8})]
    assert [j.clip.name for j in jobs.folder_jobs(tmp_path, "p", 1)] == ["a.mp4", "b.mp4"]
    for text, message in (("prompt\nx\n", "clip column"), ("clip,seed\na.mp4,-1\n", "0 or more"),
                          ("clip\nnothere.mp4\n", "no such clip")):
        csv_file.write_text(text)
        with pytest.raises(jobs.RunError, match=message):
            jobs.name_jobs(jobs.read_job_file(csv_file))


def test_job_options_reach_their_nodes(runner):
    graph = runner.load_workflow(WORKFLOWS / "api" / "myv_long_video_api.json")
    runner.apply_options(graph, {"steps": 7, "frames": 32, "width": 320, "MYVDepthEstimatorLoader.device": "cpu"})
    by_type = {n["class_type"]: n["inputs"] for n in graph.values()}
    assert by_type["MYVLongVideoSampler"]["steps"] == 7 and by_type["MYVSelectFrames"]["max_frames"] == 32
    assert by_type["EmptyLatentImage"]["batch_size"] == 1  # the long-video latent stays one frame
    assert by_type["EmptyLatentImage"]["width"] == 320 and by_type["MYVDepthEstimatorLoader"]["device"] == "cpu"
    for bad, message in (({"colour": 1}, "unknown job option"), ({"Nope.x": 1}, "has no Nope.x")):
        with pytest.raises(runner.RunError, match=message):
            runner.apply_options(graph, bad)


def test_done_marker(tmp_path):
    jobs = jobs_module()
    job = jobs.Job(clip=tmp_path / "a.mp4", name="a")
    assert jobs.finished(job, tmp_path) is None
    video = tmp_path / "a" / "v_00001_.mp4"
    video.parent.mkdir()
    video.write_bytes(b"v")
    jobs.mark_finished(job, tmp_path, [video], "http://s")
    assert jobs.finished(job, tmp_path) == [video]
    video.unlink()  # an output gone: the job is redone
    assert jobs.finished(job, tmp_path) is None


class FakeTarget:
    def __init__(self, name, dies_on=()):
        self.name, self.dies_on, self.ran = name, set(dies_on), []


def test_scheduler_retries_a_dead_servers_job_elsewhere(tmp_path):
    """One job per server at a time; the job of a server that dies goes to another; a job that fails
    on its own account is not retried; nothing left when every server died."""
    jobs = jobs_module()
    work = [jobs.Job(clip=tmp_path / f"{n}.mp4", name=n) for n in ("a", "b", "c", "bad")]
    running = set()

    def run_job(target, job, on_event):
        assert target.name not in running, "two jobs on one server"
        running.add(target.name)
        try:
            if job.name in target.dies_on:
                raise jobs.ServerGone(target.name, "connection refused")
            if job.name == "bad":
                raise jobs.RunError("the workflow failed: node 12")
            target.ran.append(job.name)
            path = tmp_path / job.name / "out.mp4"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"v")
            return [path]
        finally:
            running.discard(target.name)

    one, two = FakeTarget("one", dies_on={"a", "b"}), FakeTarget("two")
    bar = jobs.Bar(len(work), stream=open(os.devnull, "w"))
    done, failed = jobs.run_batch(work, [one, two], run_job, tmp_path, bar)
    assert sorted(done) == ["a", "b", "c"] and list(failed) == ["bad"]
    assert one.ran == [] and sorted(two.ran) == ["a", "b", "c"]
    assert all(jobs.finished(j, tmp_path) for j in work if j.name != "bad")
    assert "redone on another server after a server died: a" in jobs.summary(work, [], done, failed)

    lost = [jobs.Job(clip=tmp_path / "x.mp4", name="x")]
    done, failed = jobs.run_batch(lost, [FakeTarget("only", dies_on={"x"})], run_job, tmp_path, bar)
    assert not done and "no server left" in failed["x"]
