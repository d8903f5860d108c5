"""Batches: the job list (a CSV or JSON file, or a folder of clips with one prompt), the done-marker
that makes a rerun skip finished jobs, and the scheduler that keeps every server busy with one job at a
time and hands a job to another server when its server dies. ComfyUI does the work; this only
schedules."""

import collections
import csv
import json
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RunError, ServerGone

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".gif"}
MARKER = "myv_job.json"  # written in a job's output folder once all its outputs are there
KNOWN_FIELDS = {"clip", "prompt", "seed", "name", "options"}


@dataclass
class Job:
    clip: Path
    prompt: str = None
    seed: int = None
    options: dict = field(default_factory=dict)
    name: str = ""
    tries: list = field(default_factory=list)  # servers it was started on
    node_types: dict = field(default_factory=dict)  # node id -> class_type of its graph, for progress

    def spec(self):
        return {"name": self.name, "clip": str(self.clip), "prompt": self.prompt, "seed": self.seed,
                "options": self.options}


def scalar(text):
    """A CSV cell as int, float or text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def job_from(row, base, where):
    """One Job from a dict of a CSV row or a JSON object; clips relative to `base`."""
    if not row.get("clip"):
        raise RunError(f"{where}: no clip")
    options = row.get("options") or {}
    if isinstance(options, str):  # a CSV cell holding JSON
        try:
            options = json.loads(options)
        except ValueError as e:
            raise RunError(f"{where}: options is not JSON: {e}")
    if not isinstance(options, dict):
        raise RunError(f"{where}: options must be an object ({{\"steps\": 30, ...}})")
    options = dict(options)
    options.update({k: scalar(v) if isinstance(v, str) else v for k, v in row.items()
                    if k not in KNOWN_FIELDS and v not in (None, "")})
    seed = row.get("seed")
    if seed not in (None, ""):
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise RunError(f"{where}: seed {seed!r} is not a whole number")
        if seed < 0:
            raise RunError(f"{where}: seed must be 0 or more")
    else:
        seed = None
    clip = Path(row["clip"]).expanduser()
    return Job(clip=clip if clip.is_absolute() else base / clip, prompt=row.get("prompt") or None, seed=seed,
               options=options, name=row.get("name") or "")


def read_job_file(path):
    """Jobs from a CSV (a header row: clip, prompt, seed, name, options as JSON, or any other column
    as an option) or a JSON list of objects with the same fields."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise RunError(f"--jobs {path}: {e}")
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise RunError(f"--jobs {path}: not JSON: {e}")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise RunError(f"--jobs {path}: a JSON job list is a list of objects ({{\"clip\": ..., \"prompt\": ...}})")
        where = [f"{path} job {i + 1}" for i in range(len(rows))]
    else:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "clip" not in reader.fieldnames:
            raise RunError(f"--jobs {path}: a CSV job list needs a header row with a clip column")
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
        where = [f"{path} line {i + 2}" for i in range(len(rows))]
    return [job_from(row, path.parent, w) for row, w in zip(rows, where)]


def folder_jobs(folder, prompt, seed):
    clips = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise RunError(f"--video {folder}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in it")
    return [Job(clip=clip, prompt=prompt, seed=seed) for clip in clips]


def name_jobs(jobs):
    """Every job a distinct folder name: its own name, else the clip's stem; repeats get _2, _3, ...
    Deterministic, so a rerun of the same list finds the same folders."""
    seen = collections.Counter()
    for job in jobs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", job.name or job.clip.stem).strip("._") or "job"
        seen[base] += 1
        job.name = base if seen[base] == 1 else f"{base}_{seen[base]}"
    missing = [str(job.clip) for job in jobs if not job.clip.is_file()]
    if missing:
        raise RunError("no such clip: " + ", ".join(missing))
    return jobs


def finished(job, output_dir):
    """The job's outputs from its marker, if the marker and every file it lists are there; else None."""
    marker = Path(output_dir) / job.name / MARKER
    try:
        outputs = [Path(output_dir) / p for p in json.loads(marker.read_text())["outputs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return outputs if outputs and all(p.is_file() for p in outputs) else None


def mark_finished(job, output_dir, outputs, server):
    marker = Path(output_dir) / job.name / MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    record = {**job.spec(), "server": server, "outputs": [str(Path(p).relative_to(output_dir)) for p in outputs]}
    partial = marker.with_name(MARKER + ".part")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    partial.replace(marker)


# ---------------------------------------------------------------- scheduling

class Pool:
    """Jobs waiting and jobs on a server. take() blocks while the queue is empty but a job is still on a
    server (it may come back), and gives None once nothing is left."""

    def __init__(self, jobs):
        self.pending = collections.deque(jobs)
        self.running = 0
        self.lock = threading.Condition()

    def take(self):
        with self.lock:
            while not self.pending and self.running:
                self.lock.wait()
            if not self.pending:
                return None
            self.running += 1
            return self.pending.popleft()

    def finish(self, job, back=False):
        with self.lock:
            self.running -= 1
            if back:
                self.pending.appendleft(job)
            self.lock.notify_all()

    def left(self):
        with self.lock:
            return list(self.pending)


class Bar:
    """One overall progress line: jobs done of all, failures, and what each server is doing. On a
    terminal it redraws in place; elsewhere it prints a line when a job starts or ends."""

    def __init__(self, total, done=0, stream=None):
        self.total, self.done, self.failed = total, done, 0
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.activity = {}
        self.lock = threading.Lock()

    def line(self):
        width = 24
        filled = int(width * (self.done + self.failed) / max(self.total, 1))
        busy = "; ".join(f"{where}: {what}" for where, what in sorted(self.activity.items()))
        failed = f", {self.failed} failed" if self.failed else ""
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.done + self.failed}/{self.total} jobs{failed}" \
               + (f" | {busy}" if busy else "")

    def show(self, force=False):
        if self.tty:
            columns = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r" + self.line()[:columns - 1].ljust(columns - 1))
            self.stream.flush()
        elif force:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def note(self, message):
        """A line of its own above the bar."""
        with self.lock:
            if self.tty:
                self.stream.write("\r" + " " * (shutil.get_terminal_size((120, 20)).columns - 1) + "\r")
            self.stream.write(message + "\n")
            self.show()

    def busy(self, where, what, force=False):
        with self.lock:
            if what is None:
                self.activity.pop(where, None)
            else:
                self.activity[where] = what
            self.show(force)

    def count(self, ok):
        with self.lock:
            if ok:
                self.done += 1
            else:
                self.failed += 1
            self.show(force=True)

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def step_text(event, node_types):
    """Short text for a websocket event (a node starting, a sampler step), or None."""
    kind, data = event.get("type"), event.get("data") or {}
    if kind == "executing" and data.get("node") is not None:
        return f"node {data['node']} {node_types.get(str(data['node']), '')}".rstrip()
    if kind == "progress" and data.get("max"):
        return f"{node_types.get(str(data.get('node')), 'step')} {data.get('value', 0)}/{data['max']}"
    return None


def run_batch(jobs, targets, run_job, output_dir, bar):
    """Runs the jobs over the targets (objects with .name: one worker thread each, one job at a time).
    run_job(target, job, on_event) -> output paths; it raises ServerGone when the target died (the job
    goes back to the queue and the target is dropped) or RunError when the job failed (not retried).
    Returns ({job name: outputs}, {job name: reason}) of this run."""
    pool = Pool(jobs)
    done, failed = {}, {}

    def worker(target):
        while True:
            job = pool.take()
            if job is None:
                return
            job.tries.append(target.name)
            bar.busy(target.name, f"{job.name} starting", force=True)

            def on_event(event, job=job):
                text = step_text(event, job.node_types)
                if text:
                    bar.busy(target.name, f"{job.name} {text}")
            try:
                outputs = run_job(target, job, on_event)
            except ServerGone as e:
                bar.busy(target.name, None)
                bar.note(f"{e}: {job.name} goes back to the queue")
                pool.finish(job, back=True)
                return
            except RunError as e:
                failed[job.name] = str(e)
                bar.busy(target.name, None)
                bar.note(f"FAILED {job.name} on {target.name}: {e}")
                bar.count(False)
                pool.finish(job)
                continue
            mark_finished(job, output_dir, outputs, target.name)
            done[job.name] = outputs
            bar.busy(target.name, None)
            bar.note(f"done {job.name} on {target.name}: " + ", ".join(str(p) for p in outputs))
            bar.count(True)
            pool.finish(job)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for job in pool.left():  # every server died with jobs left
        failed[job.name] = "no server left to run it (" + ", ".join(t.name for t in targets) + " gone)"
        bar.count(False)
    return done, failed


def summary(jobs, skipped, done, failed):
    """The final report: one line per job that did not succeed, then the counts."""
    lines = [f"FAILED {name}: {reason}" for name, reason in failed.items()]
    retried = [job.name for job in jobs if len(job.tries) > 1 and job.name in done]
    if retried:
        lines.append("redone on another server after a server died: " + ", ".join(retried))
    lines.append(f"{len(done)} done, {len(skipped)} skipped (already done), {len(failed)} failed, of {len(jobs)} jobs")
    return "\n".join(lines)
