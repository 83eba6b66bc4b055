"""Bad input: a clear MediaError naming the file (exit 2 and one line from `ffray probe`), never a hang,
never a partial output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import REPO, asset
from media_clips import _write_tone, make_clip

from ffray.errors import MediaError
from ffray.media import decode_chunk, plan_chunks, probe


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the error must contain)"""
    cases = {}
    cases["missing"] = (folder / "missing.mp4", "file not found")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    cases["empty"] = (empty, "empty file")
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    cases["not_media"] = (text, "not a readable media file")
    clip = make_clip(folder / "clip.mp4", frames=40, width=96, height=64)
    data = clip.read_bytes()
    cut = folder / "cut.mp4"  # moov at the end: the cut removes the index
    cut.write_bytes(data[: len(data) * 2 // 3])
    cases["truncated"] = (cut, "truncated")
    faststart = folder / "faststart.mp4"
    out = av.open(str(faststart), "w", options={"movflags": "+faststart"})
    stream = out.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
    for i in range(40):
        frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), i * 5, np.uint8), format="bgr24")
        frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    data = faststart.read_bytes()
    cut_index_first = folder / "cut-faststart.mp4"  # moov first: the index survives, the frames do not
    cut_index_first.write_bytes(data[: len(data) // 2])
    cases["truncated_faststart"] = (cut_index_first, "truncated")
    audio_only = folder / "audio.m4a"
    out = av.open(str(audio_only), "w")
    astream = out.add_stream("aac", rate=44100)
    astream.layout = "stereo"
    _write_tone(out, astream, 0.3)
    out.close()
    cases["no_video"] = (audio_only, "no video stream")
    source = clip.read_bytes()
    at = source.index(b"avc1", source.index(b"stsd"))
    unknown = folder / "unknown-codec.mp4"
    unknown.write_bytes(source[:at] + b"zzzz" + source[at + 4:])
    cases["unsupported_codec"] = (unknown, "unsupported video codec")
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name", ["missing", "empty", "not_media", "truncated", "truncated_faststart",
                                  "no_video", "unsupported_codec"])
def test_probe_rejects_bad_input(cases, name):
    path, words = cases[name]
    with pytest.raises(MediaError) as info:
        probe(path)
    assert info.value.path == str(path) and words in info.value.problem
    assert "\n" not in str(info.value)


def test_corrupt_packets_mid_file_raise_and_do_not_hang(tmp_path):
    data = bytearray(asset("media/video_01.mp4").read_bytes())
    rng = np.random.default_rng(0)
    for k in range(5):  # garbage over frame data in the middle; the index stays intact
        offset = 100_000 + k * 30_000
        data[offset:offset + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    info = probe(corrupt)
    chunks = plan_chunks(info, 30)
    assert len(list(decode_chunk(corrupt, chunks[0]))) == 30  # the clean part still decodes
    with pytest.raises(MediaError, match="corrupt video data in chunk 1") as err:
        list(decode_chunk(corrupt, chunks[1]))
    assert err.value.path == str(corrupt)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ffray", "probe", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("name", ["missing", "not_media", "truncated", "no_video"])
def test_cli_bad_input_exits_2_with_one_line(cases, name):
    path, words = cases[name]
    result = run_cli(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ffray: error: ") and str(path) in lines[0] and words in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_json_and_chunks():
    path = asset("media/video_01.mp4")
    result = run_cli(path, "--json", "--chunk-frames", "25")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["frames"] == 90 and data["fps"] == "30000/1001" and data["keyframes"] == 3
    assert (data["width"], data["height"], data["rotation"], data["vfr"]) == (640, 480, 0, False)
    assert data["duration"] == pytest.approx(3.003)
    assert data["audio"][0]["codec"] == "aac"
    assert [(c["start"], c["end"]) for c in data["chunks"]] == [(0, 30), (30, 60), (60, 90)]
    assert all(len(c["id"]) == 16 for c in data["chunks"])
    text = run_cli(path)
    assert text.returncode == 0 and "90" in text.stdout and "30000/1001" in text.stdout
    bad = run_cli(path, "--chunk-frames", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
