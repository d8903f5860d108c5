"""Comfy Registry readiness: pyproject.toml passes comfy-cli's own offline check, keeps the registry's
rules, and the ComfyUI versions it and the README name agree with the ComfyUI this tier runs on.

comfy-cli (tests/requirements.txt) runs `comfy --skip-prompt --no-enable-telemetry node validate`
in the pack folder: it parses the metadata as `comfy node publish` does and runs ruff's security
rules. It exits 0 even when it only warns (a malformed requires-comfyui is dropped with a warning),
so the test also fails on any warning; a broken copy of pyproject.toml shows that this is caught.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import COMFYUI, ROOT, comfyui_version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: comfy-cli brings tomlkit
    import tomlkit as tomllib

PYPROJECT = ROOT / "pyproject.toml"
README = ROOT / "README.md"
PLACEHOLDER_OWNER = "YOUR-NAME"
RAW_URL = re.compile(r"^https://raw\.githubusercontent\.com/([^/]+)/([^/]+)/([^/]+)/(.+)$")
GITHUB_URL = re.compile(r"^https://github\.com/([^/]+)/([^/#]+)$")
VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# The registry's node id: < 100 characters, letters, digits, - _ . only, no two special characters
# in a row, starting with a letter (docs.comfy.org/registry/specifications).
NODE_ID = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*$")
ICON_TYPES = {".png", ".jpg", ".jpeg", ".gif", ".svg"}
ICON_MAX = (800, 400)  # width x height, the registry's limit


def metadata():
    return tomllib.loads(PYPROJECT.read_text())


def comfy_cli():
    """comfy-cli's entry point beside this Python (the test venv), else on PATH."""
    beside = Path(sys.executable).parent / "comfy"
    found = str(beside) if beside.is_file() else shutil.which("comfy")
    if not found:
        pytest.fail("comfy-cli is not installed: pip install -r tests/requirements.txt (tests/run.sh does)")
    return found


def validate(folder, home):
    """(passed, output) of `comfy node validate` run in folder, with comfy-cli's config under home."""
    env = dict(os.environ, HOME=str(home), PYTHONIOENCODING="utf-8", NO_COLOR="1", COLUMNS="200")
    result = subprocess.run([comfy_cli(), "--skip-prompt", "--no-enable-telemetry", "node", "validate"],
                            cwd=str(folder), env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    complaints = [line for line in output.splitlines()
                  if re.match(r"\s*(warning|error|security warnings)", line, re.IGNORECASE)]
    passed = (result.returncode == 0 and "All validation checks passed successfully" in output
              and not complaints)
    return passed, f"exit code {result.returncode}\n{output}"


def test_comfy_cli_validate_passes(tmp_path):
    passed, output = validate(ROOT, tmp_path)
    assert passed, f"comfy node validate does not pass cleanly in {ROOT}:\n{output}"


def test_comfy_cli_validate_catches_broken_metadata(tmp_path):
    """The same check on a copy whose requires-comfyui is malformed must fail (comfy-cli only warns)."""
    broken = tmp_path / "pack"
    broken.mkdir()
    text = PYPROJECT.read_text()
    assert re.search(r'(?m)^requires-comfyui = ".*"$', text), "requires-comfyui line not found"
    (broken / "pyproject.toml").write_text(re.sub(r'(?m)^requires-comfyui = ".*"$',
                                                  'requires-comfyui = "0.3"', text))
    shutil.copy(ROOT / "LICENSE", broken / "LICENSE")
    passed, output = validate(broken, tmp_path)
    assert not passed, f"a malformed requires-comfyui went unnoticed:\n{output}"


def test_registry_rules():
    data = metadata()
    project, comfy = data["project"], data["tool"]["comfy"]
    name = project["name"]
    assert NODE_ID.match(name) and len(name) < 100, f"project.name {name!r} breaks the registry's node id rules"
    assert "comfyui" not in name.lower(), f"project.name {name!r}: the registry asks not to include ComfyUI"
    assert VERSION.match(project["version"]), f"project.version {project['version']!r} is not X.Y.Z"
    assert project.get("description"), "project.description is empty"
    assert (ROOT / project["license"]["file"]).is_file(), "project.license names a missing file"
    assert comfy.get("PublisherId"), "tool.comfy.PublisherId is empty"
    assert comfy.get("DisplayName"), "tool.comfy.DisplayName is empty"
    for dependency in project.get("dependencies", []):
        assert not re.match(r"(torch|torchvision|torchaudio|xformers)\b", dependency), \
            f"{dependency}: ComfyUI's install owns the torch family"


def test_repository_and_icon():
    """Repository is a GitHub URL (the placeholder until publishing, and then the README says so);
    Icon is the raw URL of a file in this repository, under the same GitHub repository, in a type and
    size the registry accepts."""
    data = metadata()
    repository = data["project"]["urls"]["Repository"]
    found = GITHUB_URL.match(repository)
    assert found, f"project.urls.Repository {repository!r} is not https://github.com/OWNER/NAME"
    owner, name = found.groups()
    if owner == PLACEHOLDER_OWNER:
        readme = README.read_text()
        assert repository in readme and f"replace `{PLACEHOLDER_OWNER}`" in readme, \
            "pyproject.toml's Repository is the placeholder: the README must tell publishers to replace it"
    icon = data["tool"]["comfy"]["Icon"]
    found = RAW_URL.match(icon)
    assert found, f"tool.comfy.Icon {icon!r} is not a raw.githubusercontent.com URL"
    icon_owner, icon_repo, _branch, path = found.groups()
    assert (icon_owner, icon_repo) == (owner, name), f"Icon {icon} is not under Repository {repository}"
    local = ROOT / path
    assert local.is_file(), f"Icon points at {path}, which is not in this repository"
    assert local.suffix.lower() in ICON_TYPES, f"{path}: the registry takes {sorted(ICON_TYPES)}"
    if local.suffix.lower() != ".svg":
        with Image.open(local) as image:
            assert image.width <= ICON_MAX[0] and image.height <= ICON_MAX[1], \
                f"{path} is {image.size}; the registry allows at most {ICON_MAX[0]}x{ICON_MAX[1]}"


def lower_bound(spec):
    """The version of a '>=X.Y.Z' part of requires-comfyui."""
    bounds = [part.strip()[2:].strip() for part in spec.split(",") if part.strip().startswith(">=")]
    assert len(bounds) == 1 and VERSION.match(bounds[0]), f"requires-comfyui {spec!r} has no single >=X.Y.Z"
    return bounds[0]


def as_tuple(version):
    return tuple(int(v) for v in version.split("."))


def readme_versions():
    """(oldest supported, tested versions) as the README's quick start states them."""
    text = README.read_text()
    oldest = re.search(r"ComfyUI (\d+\.\d+\.\d+) or newer", text)
    tested = re.search(r"tested on ComfyUI (\d+\.\d+\.\d+) and (\d+\.\d+\.\d+)", text)
    assert oldest and tested, "README no longer says 'ComfyUI X or newer; tested on ComfyUI A and B'"
    return oldest.group(1), set(tested.groups())


def test_readme_and_pyproject_agree_on_versions():
    oldest, tested = readme_versions()
    required = lower_bound(metadata()["tool"]["comfy"]["requires-comfyui"])
    assert oldest == required, f"README says ComfyUI {oldest} or newer, pyproject requires >={required}"
    assert required in tested, f"the oldest supported ComfyUI ({required}) is not among those the README says are tested"
    assert all(as_tuple(v) >= as_tuple(required) for v in tested), f"README tests {tested}, below {required}"


@pytest.mark.skipif(COMFYUI is None, reason="no ComfyUI to compare with (COMFYUI_PATH)")
def test_running_comfyui_is_supported_and_named():
    """The ComfyUI this tier runs on (CI: every archive it tests) satisfies requires-comfyui and is one
    of the versions the README says are tested."""
    running = comfyui_version()
    assert VERSION.match(running), f"cannot read the version of {COMFYUI}: {running!r}"
    required = lower_bound(metadata()["tool"]["comfy"]["requires-comfyui"])
    assert as_tuple(required) <= as_tuple(running), \
        f"tests run on ComfyUI {running}, but requires-comfyui says >={required}"
    _, tested = readme_versions()
    assert running in tested, f"tests run on ComfyUI {running}; the README names only {sorted(tested)} as tested"
