"""Shared fixtures. Real assets come from FFRAY_TEST_ASSETS (default ../shared/assets); tests that
need them skip with a clear message when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# fixtures shared by the pipeline, CLI and jobs tests (fault_reference); registered here, once, so that
# pytest rewrites its asserts (a test module naming it in pytest_plugins imports it too late for that)
pytest_plugins = ["pipeline_helpers"]

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("FFRAY_TEST_ASSETS", REPO.parent / "shared" / "assets")).resolve()


def asset(relative: str) -> Path:
    """Path of a shared test asset, or skip the test if it is not there."""
    path = ASSETS / relative
    if not path.exists():
        pytest.skip(f"test asset {path} not found (set FFRAY_TEST_ASSETS to the shared assets folder)")
    return path


@pytest.fixture
def assets() -> Path:
    if not ASSETS.exists():
        pytest.skip(f"test assets folder {ASSETS} not found (set FFRAY_TEST_ASSETS)")
    return ASSETS


MEDIA_VIDEOS = ["video_01.mp4", "h264_aac.mp4", "h265_aac.mp4", "mp4v_aac.mp4", "xvid_aac.avi", "vp8_opus.webm"]
