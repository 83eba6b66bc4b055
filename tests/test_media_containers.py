"""Every container x codec PyAV's FFmpeg writes here: probe counts the frames written, chunked decode
equals a sequential decode bit for bit (pts too), and what ffray cannot handle fails with a clear
MediaError, never with wrong frames. Plus Theora as FFmpeg writes it by default (zero-byte packets for
dropped frames) and the 8-bit note for 10-bit sources."""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_clips import (
    MATRIX_CODECS,
    MATRIX_CONTAINERS,
    NotEncodable,
    make_case,
    make_clip,
    matrix_clip,
    theora_encoder,
    theora_ogg_clip,
)

from ffray.errors import MediaError
from ffray.media import (
    EncodeOptions,
    bit_depth_note,
    decode_all,
    decode_chunk,
    encode_segment,
    plan_chunks,
    probe,
    remux,
)

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per encoder at its default level

FRAMES = 24
# (container, codec) -> the MediaError ffray gives, for combinations FFmpeg writes but ffray cannot use:
# MPEG-TS has stream types for MPEG video, H.264 and HEVC only, so FFmpeg's demuxer reads the others
# back as data; AVI keeps decode order only, so a B-frame H.264 stream has no presentation times
FAILS_CLEARLY = {
    **{("ts", codec): "no video stream" for codec in ("vp8", "vp9", "av1", "theora", "mjpeg")},
    ("avi", "h264"): "B-frames in AVI has no presentation timestamps",
}


def assert_chunks_equal_sequential(path: Path, chunk_frames: int, frames: int | None = None):
    info = probe(path)
    ref = list(decode_all(path))
    if frames is not None:
        assert info.frames == frames
    assert info.frames == len(ref)
    assert list(info.frame_pts) == [pts for pts, _ in ref]
    got = [frame for chunk in plan_chunks(info, chunk_frames) for frame in decode_chunk(path, chunk)]
    assert [f.index for f in got] == list(range(len(ref)))
    assert [f.pts for f in got] == [pts for pts, _ in ref]
    for frame, (_, image) in zip(got, ref, strict=True):
        assert np.array_equal(frame.image, image), f"frame {frame.index} differs"
    return info


def clip_or_skip(folder, container, codec, audio) -> Path:
    try:
        return matrix_clip(folder, container, codec, audio, frames=FRAMES)
    except NotEncodable as exc:
        pytest.skip(str(exc).replace(str(folder), "").split(": '")[0])


@pytest.mark.parametrize("audio", [False, True], ids=["video", "audio"])
@pytest.mark.parametrize("codec", list(MATRIX_CODECS))
@pytest.mark.parametrize("container", list(MATRIX_CONTAINERS))
def test_container_codec_matrix(container, codec, audio, tmp_path, caplog):
    path = clip_or_skip(tmp_path, container, codec, audio)
    expected_error = FAILS_CLEARLY.get((container, codec))
    with caplog.at_level(logging.WARNING, logger="ffray.media"):
        try:
            # 5: chunks cut inside GOPs (seek + lead-in); 8: on the keyframes (GOP 8)
            for chunk_frames in (5, 8):
                info = assert_chunks_equal_sequential(path, chunk_frames, FRAMES)
        except MediaError as exc:
            if expected_error is None:
                raise
            assert exc.path == str(path) and expected_error in exc.problem and "\n" not in str(exc)
            return
    # seeks land where planned (no fallback to decoding from the stream start)
    assert not [r for r in caplog.records if "landed late" in r.getMessage()]
    assert len(info.audio) == int(audio)
    assert len(info.keyframes) >= 2 and info.keyframes[0] == 0


def test_h264_without_bframes_in_avi_is_fine(tmp_path):
    path = make_clip(tmp_path / "h264.avi", frames=FRAMES, width=96, height=64, gop=8, bframes=0,
                     time_base=Fraction(1, 25), container_format="avi", audio="libmp3lame")
    assert_chunks_equal_sequential(path, 5, FRAMES)


# ---------------------------------------------------------------- Theora as FFmpeg writes it by default

needs_theora = pytest.mark.skipif(theora_encoder() is None,
                                  reason="no Theora encoder: PyAV's FFmpeg lacks libtheora and the system "
                                         "has no libtheoraenc/libogg (e.g. apt-get install libtheora0)")


def packet_sizes(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [p.size for p in container.demux(stream) if p.pts is not None]


@needs_theora
@pytest.mark.parametrize("audio", [None, "libopus", "vorbis"])
def test_theora_default_settings_with_dropped_frames(audio, tmp_path):
    # FFmpeg's defaults: 200 kb/s, and PyAV's 1/12800 clock as the Theora frame rate, so libtheora's
    # rate control drops most frames as zero-byte packets, which the decoder refuses (EINVAL); each
    # means "show the previous frame again", so the video has only the coded frames, lasting longer
    path = theora_ogg_clip(tmp_path / "default.ogg", frames=FRAMES, audio=audio)
    sizes = packet_sizes(path)
    coded = sum(1 for s in sizes if s)
    assert len(sizes) == FRAMES and 0 < coded < FRAMES  # the clip has what this test is about
    for chunk_frames in (1, 2):
        info = assert_chunks_equal_sequential(path, chunk_frames, coded)
    assert info.duration == pytest.approx(FRAMES / 25, abs=2 / 25)  # the dropped tail still shows
    assert len(info.audio) == (1 if audio else 0)


@needs_theora
def test_theora_seeks_in_ogg_with_a_fine_clock(tmp_path, caplog):
    # frames 512 ticks apart: Ogg's demuxer times the first packet after a seek one tick before its
    # page's end, which decode_chunk corrects; nothing may fall back to decoding from the start
    path = theora_ogg_clip(tmp_path / "q.ogg", frames=40, quality=40, gop=6, audio="libopus")
    with caplog.at_level(logging.WARNING, logger="ffray.media"):
        for chunk_frames in (1, 3, 7):
            info = assert_chunks_equal_sequential(path, chunk_frames, 40)
    assert not [r for r in caplog.records if "landed late" in r.getMessage()]
    assert len(info.keyframes) >= 40 // 6 and len(plan_chunks(info, 2)) >= 15


# ---------------------------------------------------------------- round trips of representative inputs

def round_trip(source: Path, folder: Path, output_name: str, chunk_frames: int):
    info = probe(source)
    output = folder / output_name
    opts = EncodeOptions.for_output(output)
    segments = [encode_segment(decode_chunk(source, chunk), folder / f"seg-{chunk.index:04d}.mp4", info, opts).path
                for chunk in plan_chunks(info, chunk_frames)]
    return info, remux(source, segments, output, info)


def frame_seconds(path) -> list[float]:
    info = probe(path)
    return [float(p * info.time_base) for p in info.frame_pts]


@pytest.mark.parametrize(("container", "codec", "output_name", "audio_action"), [
    ("ogg", "theora", "out.mkv", "copied"),  # opus into Matroska
    ("ts", "h264", "out.mp4", "copied"),  # AAC from MPEG-TS into mp4
    ("webm", "av1", "out.webm", "copied"),
    ("avi", "mjpeg", "out.avi", "copied"),  # MP3 stays in AVI; video becomes MPEG-4 Part 2
    ("mkv", "vp8", "out.mov", "copied"),
])
def test_round_trip_other_containers(container, codec, output_name, audio_action, tmp_path):
    source = clip_or_skip(tmp_path, container, codec, True)
    info, result = round_trip(source, tmp_path, output_name, 5)
    output = tmp_path / output_name
    assert result.frames == info.frames == FRAMES
    assert frame_seconds(output) == pytest.approx(frame_seconds(source), abs=0.0006)
    assert [a["action"] for a in result.audio] == [audio_action]
    assert result.bit_depth_from is None


@needs_theora
def test_round_trip_theora_with_dropped_frames(tmp_path):
    source = theora_ogg_clip(tmp_path / "default.ogg", frames=FRAMES, audio="libopus")
    info, result = round_trip(source, tmp_path, "out.mp4", 1)
    assert result.frames == info.frames < FRAMES
    assert frame_seconds(tmp_path / "out.mp4") == pytest.approx(frame_seconds(source), abs=1e-9)


# ---------------------------------------------------------------- 10-bit sources

def test_ten_bit_source_is_written_as_8_bit_and_says_so(tmp_path, caplog):
    source = make_case("ten_bit", tmp_path, audio="aac")
    info = probe(source)
    assert info.bit_depth == 10 and bit_depth_note(info) == "10-bit source is processed and written as 8-bit"
    with caplog.at_level(logging.WARNING, logger="ffray.media"):
        _, result = round_trip(source, tmp_path, "out.mp4", 8)
    notes = [r.getMessage() for r in caplog.records if "written as 8-bit" in r.getMessage()]
    assert notes == [f"{source}: 10-bit source is processed and written as 8-bit"]  # once, naming the file
    assert result.bit_depth_from == 10
    out = probe(tmp_path / "out.mp4")
    assert out.bit_depth == 8 and bit_depth_note(out) is None
    assert frame_seconds(tmp_path / "out.mp4") == frame_seconds(source)
