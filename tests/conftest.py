"""Shared test set-up: import path, fixtures, and the switch for the ComfyUI tier.

Tests under tests/comfyui/ need a real ComfyUI (COMFYUI_PATH, or this pack inside
ComfyUI/custom_nodes/). Without one the whole tier is left out and the run prints one SKIPPED line;
a COMFYUI_PATH that holds no ComfyUI is an error, not a skip (CI sets it and must not skip).

The AnimateDiff-Evolved tests (tests/comfyui/test_ade.py) load ComfyUI-AnimateDiff-Evolved from
MYV_ADE_PATH, else from the ComfyUI's custom_nodes; without it they skip, and the header says why.
A MYV_ADE_PATH that holds no AnimateDiff-Evolved is an error, like COMFYUI_PATH.
"""

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]


def find_comfyui():
    """(path, None) of a usable ComfyUI checkout, or (None, why not)."""
    candidates = [os.environ.get("COMFYUI_PATH"), str(ROOT.parents[1])]
    for candidate in candidates:
        if candidate and (Path(candidate) / "main.py").is_file() and (Path(candidate) / "comfy").is_dir():
            return Path(candidate).resolve(), None
    if os.environ.get("COMFYUI_PATH"):
        raise pytest.UsageError(f"COMFYUI_PATH={os.environ['COMFYUI_PATH']} has no ComfyUI checkout "
                                "(main.py, comfy/): point it at the ComfyUI folder, or unset it.")
    return None, "ComfyUI not found: set COMFYUI_PATH or put this pack in ComfyUI/custom_nodes/"


COMFYUI, COMFYUI_MISSING = find_comfyui()
collect_ignore = [] if COMFYUI else ["comfyui"]

ADE_FOLDERS = ("ComfyUI-AnimateDiff-Evolved", "comfyui-animatediff-evolved")  # git clone, registry install


def is_ade(folder):
    return (folder / "__init__.py").is_file() and (folder / "animatediff" / "sampling.py").is_file()


def find_ade():
    """(path, None) of a ComfyUI-AnimateDiff-Evolved folder for tests/comfyui/test_ade.py, or (None, why not)."""
    given = os.environ.get("MYV_ADE_PATH")
    if given:
        if not is_ade(Path(given)):
            raise pytest.UsageError(f"MYV_ADE_PATH={given} holds no ComfyUI-AnimateDiff-Evolved (__init__.py, "
                                    "animatediff/sampling.py): point it at that folder, or unset it.")
    if not COMFYUI:
        return None, "the ADE tests need the ComfyUI tier"
    if given:
        return Path(given).resolve(), None
    for name in ADE_FOLDERS:
        if is_ade(COMFYUI / "custom_nodes" / name):
            return (COMFYUI / "custom_nodes" / name).resolve(), None
    return None, f"not found: set MYV_ADE_PATH or put it in {COMFYUI / 'custom_nodes'}"


ADE, ADE_MISSING = find_ade()


def ade_version():
    found = re.search(r'^version = "([^"]+)"', (ADE / "pyproject.toml").read_text(), re.M) \
        if (ADE / "pyproject.toml").is_file() else None
    return found.group(1) if found else "unknown version"


def comfyui_version():
    text = (COMFYUI / "comfyui_version.py").read_text() if (COMFYUI / "comfyui_version.py").is_file() else ""
    found = re.search(r'__version__ = "([^"]+)"', text)
    return found.group(1) if found else "unknown version"


def pytest_report_header(config):
    ade = f"AnimateDiff-Evolved: {ADE} ({ade_version()})" if ADE else f"AnimateDiff-Evolved: SKIPPED ({ADE_MISSING})"
    if not COMFYUI:
        return [f"ComfyUI tier: SKIPPED ({COMFYUI_MISSING})", ade]
    return [f"ComfyUI tier: {COMFYUI} (ComfyUI {comfyui_version()})", ade]


def pytest_terminal_summary(terminalreporter):
    if not COMFYUI:
        terminalreporter.write_line(f"SKIPPED ComfyUI tier (tests/comfyui): {COMFYUI_MISSING}")
    elif not ADE:
        terminalreporter.write_line(f"SKIPPED AnimateDiff-Evolved tests (tests/comfyui/test_ade.py): {ADE_MISSING}")


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES
