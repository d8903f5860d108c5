"""Shared test set-up: import path, fixtures, and the switch for the ComfyUI tier.

Tests under tests/comfyui/ need a real ComfyUI (COMFYUI_PATH, or this pack inside
ComfyUI/custom_nodes/). Without one the whole tier is left out and the run prints one SKIPPED line;
a COMFYUI_PATH that holds no ComfyUI is an error, not a skip (CI sets it and must not skip).
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


def comfyui_version():
    text = (COMFYUI / "comfyui_version.py").read_text() if (COMFYUI / "comfyui_version.py").is_file() else ""
    found = re.search(r'__version__ = "([^"]+)"', text)
    return found.group(1) if found else "unknown version"


def pytest_report_header(config):
    if not COMFYUI:
        return f"ComfyUI tier: SKIPPED ({COMFYUI_MISSING})"
    return f"ComfyUI tier: {COMFYUI} (ComfyUI {comfyui_version()})"


def pytest_terminal_summary(terminalreporter):
    if not COMFYUI:
        terminalreporter.write_line(f"SKIPPED ComfyUI tier (tests/comfyui): {COMFYUI_MISSING}")


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES
