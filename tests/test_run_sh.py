"""tests/run.sh leaves ComfyUI's Python exactly as it found it: the test-only packages go into a venv
of the pack's own that sees that Python's packages."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32" or not shutil.which("bash"), reason="needs bash")


def write_probe_wheel(folder):
    """A tiny pure-Python wheel, installable offline: a package ComfyUI's Python does not have."""
    path = folder / "myv_run_probe-1.0-py3-none-any.whl"
    info = "myv_run_probe-1.0.dist-info"
    files = {"myv_run_probe/__init__.py": "",
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: myv-run-probe\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def package_folders():
    return [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]


def freeze(python):
    return subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                          check=True).stdout


def test_comfyuis_python_is_left_as_it_was(tmp_path):
    # "ComfyUI's Python": a venv that has torch (it sees this test run's packages) and nothing of
    # the fake ComfyUI's requirements.
    comfy_python = tmp_path / "comfyui-venv"
    subprocess.run([sys.executable, "-m", "venv", str(comfy_python)], check=True)
    purelib = subprocess.run([str(comfy_python / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "test-packages.pth").write_text("\n".join(package_folders()) + "\n")
    comfyui = tmp_path / "ComfyUI"
    comfyui.mkdir()
    (comfyui / "comfyui_version.py").write_text('__version__ = "0.3.64"\n')
    (comfyui / "requirements.txt").write_text(f"torch\ntorchvision\n{write_probe_wheel(tmp_path)}\n")
    # The pack's test command in a copy of the pack, so its venv (.venv-tests) is made there.
    pack = tmp_path / "pack"
    (pack / "tests").mkdir(parents=True)
    for name in ("tests/run.sh", "tests/requirements.txt", "requirements.txt"):
        shutil.copy(ROOT / name, pack / name)

    before = freeze(comfy_python / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("MYV_TEST_VENV", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{comfy_python / 'bin'}{os.pathsep}{env['PATH']}", COMFYUI_PATH=str(comfyui))
    run = subprocess.run(["bash", str(pack / "tests" / "run.sh"), "--version"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert freeze(comfy_python / "bin" / "python") == before
    assert f"packages of {comfy_python / 'bin' / 'python'}" in run.stdout
    venv_python = pack / ".venv-tests" / "bin" / "python"
    for python, has_probe in ((venv_python, True), (comfy_python / "bin" / "python", False)):
        probe = subprocess.run([str(python), "-c", "import myv_run_probe, torch"], capture_output=True)
        assert (probe.returncode == 0) == has_probe, (python, probe.stderr)
