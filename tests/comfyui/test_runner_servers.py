"""scripts/run_workflow.py against ComfyUI servers that are already running (--server), and batches
over two of them, one killed mid-batch.

The two servers are real ComfyUI processes on free ports with this pack and the self-check's tiny
model files (written by the pack's scripts/myv_runner/selfcheck.py). The runner runs as a user would
run it, as a subprocess with --server URLs and no --comfyui: clips go up through /upload/image,
results come back through /view into its own output folder.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import COMFYUI, ROOT
from tiny_models import write_test_clip

sys.path.insert(0, str(ROOT / "scripts"))
from myv_runner import selfcheck  # noqa: E402
from myv_runner.jobs import MARKER  # noqa: E402
from myv_runner.server import LocalServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_server import free_port  # noqa: E402

RUNNER = ROOT / "scripts" / "run_workflow.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # one thread: 2 cores, two servers


def runner_command(*args):
    return [sys.executable, str(RUNNER), *args]


def run_runner(*args, cwd, timeout=600):
    done = subprocess.run(runner_command(*args), capture_output=True, text=True, timeout=timeout, env=ENV, cwd=str(cwd))
    return done, f"\nexit {done.returncode}\nstdout:\n{done.stdout[-5000:]}\nstderr:\n{done.stderr[-3000:]}"


def got_prompts(server):
    return server.log_path.read_text(errors="replace").count("got prompt")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two running ComfyUI servers (A, B) with the self-check's tiny models."""
    started = []
    try:
        for name in ("a", "b"):
            work = tmp_path_factory.mktemp(f"server_{name}")
            server = LocalServer(COMFYUI, free_port(), work, work / "output", cpu=True, env=ENV)
            selfcheck.install_models(server.models)
            started.append(server)
            server.start()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for name, frames in (("walk", 10), ("run", 12)):
        write_test_clip(folder / f"{name}.mp4", frames=frames)
    return folder


def test_server_option_queues_on_a_running_server(servers, clips, tmp_path):
    """--server: nothing is started; the clip is uploaded, the results fetched into --output-dir."""
    a, _ = servers
    before = got_prompts(a)
    out = tmp_path / "out"
    done, report = run_runner("--server", a.url, "--self-check", "--video", str(clips / "walk.mp4"),
                              "--output-dir", str(out), cwd=tmp_path)
    assert done.returncode == 0, report
    assert "starting ComfyUI" not in done.stdout and got_prompts(a) == before + 1, report
    paths = [line.split("output:", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("output:")]
    assert len(paths) == 2 and all(p.startswith(str(out)) and os.path.getsize(p) > 0 for p in paths), report
    for path in paths:  # the same bytes as the server's own file
        on_server = a.output_dir / os.path.relpath(path, out)
        assert open(path, "rb").read() == on_server.read_bytes(), path
    uploaded = [p.name for p in (a.work / "input").iterdir()]
    assert any(name.endswith("_walk.mp4") for name in uploaded), uploaded


def test_server_option_checks_before_queuing(servers, tmp_path):
    a, _ = servers
    graph = json.loads((ROOT / "workflows" / "api" / "myv_video_rerender_api.json").read_text())
    next(n for n in graph.values() if n["class_type"] == "MYVCheckpointLoader")["inputs"]["ckpt_name"] = "nope.ckpt"
    workflow = tmp_path / "missing_api.json"
    workflow.write_text(json.dumps(graph))
    before = got_prompts(a)
    done, report = run_runner("--server", a.url, "--workflow", str(workflow), cwd=tmp_path, timeout=120)
    assert done.returncode == 2, report
    assert f"missing model file nope.ckpt on {a.url}" in done.stderr and "models/makeyourvideo/" in done.stderr, report
    assert "missing model file dpt_hybrid-midas-501f0c75.pt" in done.stderr, report
    assert got_prompts(a) == before, report  # nothing queued
    nobody = f"http://127.0.0.1:{free_port()}"
    done, report = run_runner("--server", nobody, "--self-check", cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and f"no ComfyUI answers at {nobody}" in done.stderr, report


def test_batch_over_two_servers_survives_a_killed_server(servers, clips, tmp_path):
    """Four jobs on A and B; B is killed while it runs its first job. Every job ends with its outputs,
    B's job redone on A; a rerun of the same batch queues nothing. (Runs last: it kills B.)"""
    a, b = servers
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("clip,prompt,seed,steps\n"
                    f"{clips / 'walk.mp4'},a tiger,1,\n"
                    f"{clips / 'run.mp4'},a bear,2,\n"
                    "walk.mp4,a fox,3,1\n"  # relative to the job file's folder: copied there below
                    f"{clips / 'run.mp4'},a wolf,4,\n")
    (tmp_path / "walk.mp4").write_bytes((clips / "walk.mp4").read_bytes())
    out = tmp_path / "out"
    command = runner_command("--server", a.url, "--server", b.url, "--self-check", "--jobs", str(jobs),
                             "--output-dir", str(out))
    b_before = got_prompts(b)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                               cwd=str(tmp_path))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while got_prompts(b) == b_before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got_prompts(b) > b_before, "B never got a job:\n" + "".join(lines)
    b.process.kill()  # mid-job: B has just queued its first prompt
    b.process.wait(timeout=30)
    process.wait(timeout=600)
    reader.join(timeout=10)
    report = f"\nexit {process.returncode}\n" + "".join(lines)[-6000:]
    assert process.returncode == 0, report
    names = ["walk", "run", "walk_2", "run_2"]
    markers = {name: json.loads((out / name / MARKER).read_text()) for name in names}
    for name, record in markers.items():
        assert record["outputs"] and all((out / p).is_file() for p in record["outputs"]), (name, record)
        assert {os.path.basename(p).split("_0")[0] for p in record["outputs"]} == {"myv_rerender", "myv_depth"}
    assert {record["server"] for record in markers.values()} == {a.url}, markers  # B finished nothing
    redone = [line for line in lines if line.startswith("redone on another server")]
    assert redone and any(name in redone[0] for name in names), report
    assert "4 done, 0 skipped (already done), 0 failed, of 4 jobs" in report, report

    a_before = got_prompts(a)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV, cwd=str(tmp_path))
    report = f"\nexit {again.returncode}\n{again.stdout}\n{again.stderr}"
    assert again.returncode == 0, report
    assert "0 done, 4 skipped (already done), 0 failed, of 4 jobs" in again.stdout, report
    assert got_prompts(a) == a_before, report
