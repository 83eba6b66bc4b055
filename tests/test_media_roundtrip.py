"""probe -> plan -> decode -> encode -> remux: the output is the input, frame for frame and second for
second, with the audio packets untouched; and the same inputs always give the same bytes."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import fsspec
import numpy as np
import pytest
from conftest import MEDIA_VIDEOS, asset
from media_clips import make_case, make_clip

from ffray.errors import InputError, MediaError, ProcessingError
from ffray.media import (
    EncodeOptions,
    SegmentWriter,
    decode_all,
    decode_chunk,
    encode_segment,
    plan_chunks,
    probe,
    remux,
)
from ffray.media.encode import even_size, quality_to_crf, quality_to_qscale


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def audio_packets(path) -> list[list[tuple[bytes, Fraction]]]:
    streams = []
    with av.open(str(path)) as container:
        indices = [s.index for s in container.streams.audio]
    for index in indices:
        with av.open(str(path)) as container:
            stream = container.streams[index]
            streams.append([(bytes(p), Fraction(p.pts) * p.time_base) for p in container.demux(stream) if p.size])
    return streams


def frame_times(path) -> list[Fraction]:
    info = probe(path)
    return [p * info.time_base for p in info.frame_pts]


def round_trip(source, folder: Path, output_name: str, chunk_frames: int, opts=None):
    info = probe(source)
    output = folder / output_name
    opts = opts or EncodeOptions.for_output(output)
    segments = []
    for chunk in plan_chunks(info, chunk_frames):
        seg = encode_segment(decode_chunk(source, chunk), folder / f"seg-{chunk.index:04d}.mp4", info, opts)
        assert seg.frames == chunk.end - chunk.start
        assert (seg.first_pts, seg.last_pts) == (chunk.frame_pts[0], chunk.frame_pts[-1])
        segments.append(seg.path)
    return info, segments, remux(source, segments, output, info)


@pytest.mark.parametrize("name", MEDIA_VIDEOS)
def test_round_trip_assets(name, tmp_path):
    source = asset(f"media/{name}")
    output_name = "out.webm" if name.endswith(".webm") else "out.mp4"
    info, _, result = round_trip(source, tmp_path, output_name, 30 if name == "video_01.mp4" else 12)
    output = tmp_path / output_name
    assert result.frames == info.frames and output.exists()
    assert frame_times(output) == frame_times(source)
    assert result.duration == pytest.approx(info.duration, abs=1e-6)
    assert [a["action"] for a in result.audio] == ["copied"]
    assert audio_packets(output) == audio_packets(source)
    worst = min(psnr(a, b) for (_, a), (_, b) in zip(decode_all(source), decode_all(output), strict=True))
    assert worst >= 40.0, f"PSNR {worst:.2f} dB"
    assert probe(output).rotation == 0


def test_same_frames_give_identical_segments_and_outputs(tmp_path):
    source = asset("media/h264_aac.mp4")
    info = probe(source)
    chunks = plan_chunks(info, 12)
    runs = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        segments = [encode_segment(decode_chunk(source, c), folder / f"{c.id}.mp4", info) for c in chunks]
        result = remux(source, [s.path for s in segments], folder / "out.mp4", info)
        runs.append(([s.sha256 for s in segments], result.sha256, (folder / "out.mp4").read_bytes()))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]


@pytest.mark.parametrize("encoder", ["libx265", "libvpx-vp9"])
def test_other_encoders_round_trip(encoder, tmp_path):
    source = make_case("bframes", tmp_path, audio="aac")
    suffix = ".webm" if encoder == "libvpx-vp9" else ".mp4"
    opts = EncodeOptions.for_output(tmp_path / f"out{suffix}", encoder=encoder)
    assert opts.encoder == encoder
    info, _, result = round_trip(source, tmp_path, f"out{suffix}", 15, opts)
    assert result.video_codec == {"libx265": "hevc", "libvpx-vp9": "vp9"}[encoder]
    assert frame_times(tmp_path / f"out{suffix}") == frame_times(source)
    # AAC cannot go into WebM: that stream is re-encoded, and the result says so
    expected = "re-encoded" if suffix == ".webm" else "copied"
    assert [a["action"] for a in result.audio] == [expected] and result.audio_reencoded == (suffix == ".webm")


def test_vfr_rotation_and_offset_timestamps_survive(tmp_path):
    for case in ("vfr", "rotated", "ntsc_offset", "ten_bit"):
        folder = tmp_path / case
        folder.mkdir()
        source = make_case(case, folder, **({"audio": "aac"} if case == "vfr" else {}))
        info, _, result = round_trip(source, folder, "out.mp4", 8)
        out = probe(folder / "out.mp4")
        assert frame_times(folder / "out.mp4") == frame_times(source), case
        assert out.rotation == info.rotation and out.display_matrix == info.display_matrix
        assert (out.width, out.height) == (info.width, info.height)


def test_odd_size_source_comes_out_at_facefusions_even_size(tmp_path, caplog):
    # 161x121 -> 160x120 (Python's round is half-to-even, as in FaceFusion's normalize_resolution)
    source = make_case("odd_size", tmp_path, audio="aac", smooth=True, width=161, height=121)
    with caplog.at_level(logging.WARNING, logger="ffray.media"):
        info, _, result = round_trip(source, tmp_path, "out.mp4", 9)
    output = tmp_path / "out.mp4"
    out = probe(output)
    assert (info.coded_width, info.coded_height) == (161, 121) and len(plan_chunks(info, 9)) > 1
    assert (out.width, out.height) == (160, 120) == (result.width, result.height)
    assert result.resized_from == (161, 121)
    assert [r.levelname for r in caplog.records if "odd frame size" in r.getMessage()] == ["WARNING"]
    assert out.frames == info.frames and frame_times(output) == frame_times(source)
    assert [a["action"] for a in result.audio] == ["copied"] and audio_packets(output) == audio_packets(source)
    pairs = zip(decode_all(source), decode_all(output), strict=True)
    worst = min(psnr(cv2.resize(a, (160, 120), interpolation=cv2.INTER_LINEAR), b) for (_, a), (_, b) in pairs)
    assert worst >= 40.0, f"PSNR {worst:.2f} dB"
    # the writer also takes frames the caller already resized, and even sources are left alone
    with SegmentWriter(tmp_path / "pre.mp4", info) as writer:
        writer.write(np.zeros((120, 160, 3), np.uint8), 0)
    assert (writer.result.width, writer.result.height) == (160, 120)
    assert even_size(67, 51) == (68, 52) and even_size(64, 48) == (64, 48) and even_size(1, 1) == (2, 2)


def test_avi_round_trip_keeps_frame_slots_and_audio_and_is_deterministic(tmp_path):
    # xvid_aac.avi: 31 frames in 32 slots (slot 1 is an empty, skipped chunk), mp3 audio
    source = asset("media/xvid_aac.avi")
    outputs = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        info, _, result = round_trip(source, folder, "out.avi", 12)
        output = folder / "out.avi"
        assert result.video_codec == "mpeg4" and result.frames == info.frames == 31
        assert frame_times(output) == frame_times(source)
        assert [a["action"] for a in result.audio] == ["copied"] and audio_packets(output) == audio_packets(source)
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1]
    worst = min(psnr(a, b) for (_, a), (_, b) in zip(decode_all(source), decode_all(output), strict=True))
    assert worst >= 40.0, f"PSNR {worst:.2f} dB"


def test_avi_output_from_mp4_and_what_avi_cannot_hold(tmp_path):
    assert EncodeOptions.for_output("x.avi").encoder == "mpeg4"
    assert EncodeOptions.for_output("x.avi", encoder="libx264").encoder == "mpeg4"  # see encode.py: H.264 in AVI
    assert (quality_to_qscale(0), quality_to_qscale(80), quality_to_qscale(100)) == (31, 2, 1)
    # a CFR mp4 whose first frame is one frame in: AVI starts with an empty slot; AAC packets copied as they are
    folder = tmp_path / "cfr"
    folder.mkdir()
    source = make_case("ntsc_offset", folder, audio="aac")
    info, segments, result = round_trip(source, folder, "out.avi", 10)
    assert frame_times(folder / "out.avi") == frame_times(source) and frame_times(source)[0] > 0
    assert [a["action"] for a in result.audio] == ["copied"]
    assert [data for data, _ in audio_packets(folder / "out.avi")[0]] == [data for data, _ in audio_packets(source)[0]]
    # H.264 segments (read back one slot late from AVI) are refused rather than published shifted
    h264 = encode_segment(decode_chunk(source, plan_chunks(info, 100)[0]), folder / "h264.mp4", info)
    with pytest.raises(InputError, match="mpeg4"):
        remux(source, [h264.path], folder / "h264.avi", info)
    # VFR and rotation: a clear error naming the output, from the first segment and from remux
    for case, match in (("vfr", "variable frame rate.*mp4 or .mkv"), ("rotated", "rotation")):
        folder = tmp_path / case
        folder.mkdir()
        source = make_case(case, folder)
        info = probe(source)
        opts = EncodeOptions.for_output(folder / "out.avi")
        with pytest.raises(InputError, match=match):
            encode_segment(decode_chunk(source, plan_chunks(info, 100)[0]), folder / "s.mp4", info, opts)
        segment = encode_segment(decode_chunk(source, plan_chunks(info, 100)[0]), folder / "s.mp4", info)
        with pytest.raises(InputError, match=f"out.avi.*{match}"):
            remux(source, [segment.path], folder / "out.avi", info)
        assert not (folder / "out.avi").exists()


def test_for_output_applies_facefusion_fixups():
    assert EncodeOptions.for_output("x.webm").encoder == "libvpx-vp9"
    assert EncodeOptions.for_output("x.webm", encoder="libx264").encoder == "libvpx-vp9"
    assert EncodeOptions.for_output("x.mp4").encoder == "libx264"
    assert EncodeOptions.for_output("x.mkv", encoder="libx265").encoder == "libx265"
    assert quality_to_crf("libx264", 80) == 10 and quality_to_crf("libx264", 0) == 51
    assert quality_to_crf("libvpx-vp9", 100) == 0 and quality_to_crf("libvpx-vp9", 0) == 63
    assert EncodeOptions().codec_options() == {"crf": "10", "preset": "veryfast"}
    with pytest.raises(InputError):
        EncodeOptions.for_output("x.gif")
    with pytest.raises(InputError):
        EncodeOptions(quality=101)
    with pytest.raises(InputError):
        EncodeOptions(preset="warp")


def test_failed_segment_leaves_nothing(tmp_path):
    source = make_clip(tmp_path / "src.mp4", frames=10)
    info = probe(source)
    dest = tmp_path / "segs" / "s.mp4"
    with pytest.raises(RuntimeError), SegmentWriter(dest, info) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8), 0)
        raise RuntimeError("worker died")
    with pytest.raises(ValueError), SegmentWriter(dest, info) as writer:
        writer.write(np.zeros((10, 10, 3), np.uint8), 0)  # wrong size
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_remux_checks_before_it_publishes(tmp_path):
    source = make_clip(tmp_path / "src.mp4", frames=24, gop=8)
    info = probe(source)
    chunks = plan_chunks(info, 8)
    segs = [encode_segment(decode_chunk(source, c), tmp_path / f"{c.index}.mp4", info).path for c in chunks]
    out = tmp_path / "out" / "final.mp4"
    with pytest.raises(MediaError, match="frames"):
        remux(source, segs[:-1], out, info)  # a missing chunk
    with pytest.raises(ProcessingError):
        remux(source, [segs[1], segs[0], segs[2]], out, info)  # out of order
    assert not out.exists() and list(out.parent.iterdir()) == []
    remux(source, segs, out, info)
    assert probe(out).frames == info.frames


def test_segments_and_output_on_fsspec_urls(tmp_path):
    source = make_case("bframes", tmp_path, audio="aac")
    info = probe(source)
    fs = fsspec.filesystem("memory")
    try:
        segs = [encode_segment(decode_chunk(source, c), f"memory://rt/segs/{c.id}.mp4", info).path
                for c in plan_chunks(info, 15)]
        assert all(fs.exists(s) for s in segs)
        result = remux(source, segs, "memory://rt/out/final.mp4", info)
        assert result.frames == info.frames
        local = tmp_path / "fetched.mp4"
        local.write_bytes(fs.cat("memory://rt/out/final.mp4"))
        assert frame_times(local) == frame_times(source)
        assert audio_packets(local) == audio_packets(source)
    finally:
        fs.rm("/rt", recursive=True)
