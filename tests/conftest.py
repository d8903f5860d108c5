"""Shared test set-up: import path, fixtures, and the switch for the ComfyUI tier.

Tests under tests/comfyui/ need a real ComfyUI (COMFYUI_PATH, or this pack inside
ComfyUI/custom_nodes/). Without one the whole tier is left out and the run prints one SKIPPED line.
"""

import os
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
        return None, f"COMFYUI_PATH={os.environ['COMFYUI_PATH']} has no ComfyUI checkout (main.py, comfy/)"
    return None, "ComfyUI not found: set COMFYUI_PATH or put this pack in ComfyUI/custom_nodes/"


COMFYUI, COMFYUI_MISSING = find_comfyui()
collect_ignore = [] if COMFYUI else ["comfyui"]


def pytest_report_header(config):
    return f"ComfyUI tier: {COMFYUI}" if COMFYUI else f"ComfyUI tier: SKIPPED ({COMFYUI_MISSING})"


def pytest_terminal_summary(terminalreporter):
    if not COMFYUI:
        terminalreporter.write_line(f"SKIPPED ComfyUI tier (tests/comfyui): {COMFYUI_MISSING}")


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES
