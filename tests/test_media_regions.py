"""Converting only face regions to BGR gives exactly the pixels of the whole-frame conversion: the
detector stage relies on it when the faces to cut are known before decoding (a tracked selection, a
cached template analysis)."""

from __future__ import annotations

import random

import av
import numpy as np
import pytest
from conftest import MEDIA_VIDEOS, asset
from media_clips import make_clip

from ffray.media import convert
from ffray.media.convert import converts_by_region, frame_to_bgr, regions_to_bgr


def _boxes(width: int, height: int, count: int, rng: random.Random) -> list[tuple[int, int, int, int]]:
    """Random boxes, odd and even corners, many touching the frame's edges, from 1 pixel to whole."""
    boxes = [(0, 0, width, height), (width - 1, height - 1, width, height), (1, 1, 2, 2)]
    while len(boxes) < count:
        x1 = rng.choice([0, 1, rng.randrange(width - 1)])
        y1 = rng.choice([0, 1, rng.randrange(height - 1)])
        x2 = rng.choice([width, width - 1, rng.randrange(x1 + 1, width + 1)])
        y2 = rng.choice([height, height - 1, rng.randrange(y1 + 1, height + 1)])
        if x2 > x1 and y2 > y1:
            boxes.append((x1, y1, x2, y2))
    return boxes


def _mismatches(path, frames: int = 4, count: int = 40) -> tuple[int, int]:
    rng = random.Random(7)
    bad = total = 0
    with av.open(str(path)) as container:
        for _, frame in zip(range(frames), container.decode(video=0), strict=False):
            whole = frame_to_bgr(frame)
            boxes = _boxes(frame.width, frame.height, count, rng)
            for (x1, y1, x2, y2), region in zip(boxes, regions_to_bgr(frame, boxes), strict=True):
                total += 1
                bad += not np.array_equal(region, whole[y1:y2, x1:x2])
    return bad, total


@pytest.mark.parametrize("name", MEDIA_VIDEOS)
def test_regions_equal_the_whole_frame_conversion_on_real_media(name):
    path = asset(f"media/{name}")
    with av.open(str(path)) as container:
        assert converts_by_region(next(container.decode(video=0)))  # all of them take the region path
    assert _mismatches(path) == (0, _mismatches(path)[1])


@pytest.mark.parametrize("case", ["full range bt709", "odd size", "10-bit"])
def test_tagged_and_other_formats(tmp_path, case):
    """Full-range BT.709 (tags the region path must carry over), and the formats it leaves to the
    whole-frame conversion (odd sizes, 10-bit)."""
    kwargs = {"full range bt709": dict(width=96, height=64, options={"x264-params": "fullrange=on:colormatrix=bt709"}),
              "odd size": dict(width=95, height=63, pix_fmt="yuv444p"),
              "10-bit": dict(width=96, height=64, pix_fmt="yuv420p10le", codec="libx265")}[case]
    path = make_clip(tmp_path / "clip.mp4", frames=4, **kwargs)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    if case == "full range bt709":
        assert int(frame.color_range) == 2 and int(frame.colorspace) == 1  # JPEG range, BT.709 matrix
        assert converts_by_region(frame)
    else:
        assert not converts_by_region(frame)
    bad, total = _mismatches(path)
    assert total > 100 and bad == 0


def test_without_margin_regions_differ(monkeypatch):
    """The margin is what makes it exact: with none, the chroma filter sees the region's edge."""
    monkeypatch.setattr(convert, "REGION_MARGIN", 0)
    bad, total = _mismatches(asset("media/video_01.mp4"), frames=2)
    assert bad > total // 2
