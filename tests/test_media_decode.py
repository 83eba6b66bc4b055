"""probe, plan_chunks and decode_chunk: exact frame lists, keyframe-aligned plans, frame-exact chunks."""

from __future__ import annotations

import types
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import fsspec
import numpy as np
import pytest
from conftest import MEDIA_VIDEOS, asset
from media_clips import CLIP_CASES, make_case, make_clip

from ffray.errors import InputError
from ffray.media import decode_all, decode_chunk, plan_chunks, probe


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {name: make_case(name, folder) for name in CLIP_CASES}


def reference(path) -> list[tuple[int, np.ndarray]]:
    return list(decode_all(path))


def assert_chunks_equal_sequential(path, chunk_frames, backend="pyav"):
    info = probe(path)
    ref = reference(path)
    assert info.frames == len(ref)
    assert list(info.frame_pts) == [pts for pts, _ in ref]
    chunks = plan_chunks(info, chunk_frames)
    got = [frame for chunk in chunks for frame in decode_chunk(path, chunk, backend=backend)]
    assert [f.index for f in got] == list(range(len(ref)))
    assert [f.pts for f in got] == [pts for pts, _ in ref]
    for frame, (_, image) in zip(got, ref, strict=True):
        assert frame.image.dtype == np.uint8 and frame.image.shape == image.shape
        assert np.array_equal(frame.image, image), f"frame {frame.index} differs"
        assert frame.time == pytest.approx(float(frame.pts * info.time_base))
    return info, chunks


# ---------------------------------------------------------------- probe

@pytest.mark.parametrize("name", MEDIA_VIDEOS)
def test_probe_asset_facts(name):
    path = asset(f"media/{name}")
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (640, 480, 0)
    if name == "xvid_aac.avi":  # 31 frames over 32 frame slots: the real average is lower
        assert info.fps == pytest.approx(30 / (31 * 1001 / 30000))
    else:
        assert info.fps == Fraction(30000, 1001)
    assert info.bit_depth == 8 and info.pix_fmt == "yuv420p"
    assert info.frames == (90 if name == "video_01.mp4" else 31)
    assert info.keyframes[0] == 0 and len(info.audio) == 1
    assert info.duration == pytest.approx(info.frames * 1001 / 30000, abs=0.05)
    json = info.to_json()
    assert Fraction(json["fps"]) == info.fps and json["keyframes"] == len(info.keyframes)
    expected_audio = {"mp3": "xvid", "opus": "webm"}
    codec = info.audio[0].codec
    assert codec in ("aac", "mp3", "opus") and (codec == "aac" or expected_audio[codec] in name)


def test_probe_counts_frames_not_the_container_claim():
    # the AVI header says 32 frames; 31 of them exist (one was dropped when it was made)
    info = probe(asset("media/xvid_aac.avi"))
    assert info.frames == len(reference(asset("media/xvid_aac.avi"))) == 31
    assert info.vfr  # pts 0, 2, 3, ...: a one-frame gap in a frame-rate clock


def test_probe_clip_properties(clips):
    vfr = probe(clips["vfr"])
    assert vfr.vfr and vfr.time_base == Fraction(1, 90000)
    assert list(vfr.frame_pts) == CLIP_CASES["vfr"]["pts"]
    assert not probe(clips["bframes"]).vfr
    odd = probe(clips["odd_size"])
    assert (odd.width, odd.height, odd.coded_width, odd.coded_height) == (65, 49, 65, 49)
    rotated = probe(clips["rotated"])
    # set_display_rotation(90) is 90 deg counter-clockwise, i.e. a player turns the frame 270 clockwise
    assert rotated.rotation == 270
    assert (rotated.coded_width, rotated.coded_height, rotated.width, rotated.height) == (64, 48, 48, 64)
    assert rotated.display_matrix is not None
    ten = probe(clips["ten_bit"])
    assert ten.bit_depth == 10 and ten.codec == "hevc" and ten.pix_fmt.startswith("yuv420p10")
    ntsc = probe(clips["ntsc_offset"])
    assert ntsc.frame_pts[0] == 1001 and ntsc.fps == Fraction(30000, 1001)


def test_content_hash_is_stable_and_changes_with_content(tmp_path):
    a = make_clip(tmp_path / "a.mp4", frames=12)
    b = make_clip(tmp_path / "b.mp4", frames=12)  # same bytes, another name
    c = make_clip(tmp_path / "c.mp4", frames=13)
    assert probe(a).content_hash == probe(a).content_hash == probe(b).content_hash
    assert probe(c).content_hash != probe(a).content_hash


# ---------------------------------------------------------------- plan_chunks

def check_plan(info, chunks, chunk_frames):
    assert chunks[0].start == 0 and chunks[-1].end == info.frames and chunks[-1].end_pts is None
    for a, b in pairwise(chunks):
        assert a.end == b.start and a.end_pts == b.start_pts
    keyframes = set(info.keyframes)
    for chunk in chunks:
        assert chunk.seek_frame in keyframes or chunk.seek_frame == 0
        assert chunk.seek_frame <= chunk.start
        assert chunk.end - chunk.start <= chunk_frames * 3 // 2 + 1
        assert chunk.frame_pts == info.frame_pts[chunk.start:chunk.end]
    assert len({c.id for c in chunks}) == len(chunks)


def test_plan_prefers_keyframes_and_is_stable():
    info = probe(asset("media/video_01.mp4"))  # keyframes at 0, 30, 60
    chunks = plan_chunks(info, 25)
    assert [(c.start, c.end) for c in chunks] == [(0, 30), (30, 60), (60, 90)]
    assert all(c.seek_frame == c.start for c in chunks)
    check_plan(info, chunks, 25)
    assert plan_chunks(probe(asset("media/video_01.mp4")), 25) == chunks


def test_plan_splits_a_long_gop(clips):
    info = probe(clips["long_gop"])
    chunks = plan_chunks(info, 10)
    check_plan(info, chunks, 10)
    assert len(chunks) >= 4
    inside = [c for c in chunks if c.start not in info.keyframes]
    assert inside and all(c.seek_frame < c.start for c in inside)


def test_plan_edge_cases(clips):
    info = probe(clips["bframes"])
    whole = plan_chunks(info, 10_000)
    assert [(c.start, c.end) for c in whole] == [(0, info.frames)]
    singles = plan_chunks(info, 1)
    assert [c.end - c.start for c in singles] == [1] * info.frames
    for bad in (0, -3, 2.5):
        with pytest.raises(InputError):
            plan_chunks(info, bad)


# ---------------------------------------------------------------- decode_chunk

@pytest.mark.parametrize("name", MEDIA_VIDEOS)
def test_chunks_equal_sequential_decode_assets(name):
    path = asset(f"media/{name}")
    for chunk_frames in (7, 30):
        assert_chunks_equal_sequential(path, chunk_frames)


@pytest.mark.parametrize("name", sorted(CLIP_CASES))
def test_chunks_equal_sequential_decode_clips(clips, name):
    for chunk_frames in (4, 9):
        assert_chunks_equal_sequential(clips[name], chunk_frames)


def test_rotated_frames_come_in_coded_orientation(clips):
    info = probe(clips["rotated"])
    frame = next(iter(decode_chunk(clips["rotated"], plan_chunks(info, 8)[1])))
    assert frame.image.shape == (48, 64, 3)


def test_decode_is_lazy_and_reads_from_fsspec_urls(clips):
    data = Path(clips["bframes"]).read_bytes()
    fs = fsspec.filesystem("memory")
    fs.pipe("/media-tests/bframes.mp4", data)
    url = "memory://media-tests/bframes.mp4"
    try:
        info = probe(url)
        assert info.content_hash == probe(clips["bframes"]).content_hash
        chunks = plan_chunks(info, 9)
        generator = decode_chunk(url, chunks[2])
        assert isinstance(generator, types.GeneratorType)
        from_url = [f.image for c in chunks for f in decode_chunk(url, c)]
        local = [image for _, image in reference(clips["bframes"])]
        assert all(np.array_equal(a, b) for a, b in zip(from_url, local, strict=True)) and len(from_url) == len(local)
    finally:
        fs.rm("/media-tests", recursive=True)
