"""--trim-frame-start / --trim-frame-end (ffray.media.trim): only frames [start, end) are processed and
written, the output starts at 0 with the source's frame `start`, and the audio is cut to the same time
range, sample-exact and deterministically."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from media_clips import make_clip
from pipeline_helpers import ffray_cmd, job_report, run_env, video_frames

from ffray.errors import InputError
from ffray.media import EncodeOptions, SegmentWriter, decode_chunk, plan_chunks, probe, remux
from ffray.media.trim import Trim, check_trim, plan_trim, pop_manifest_trim, resolve_trim, row_trim, trim_plan

FPS = 25


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trim-clips")
    return {
        "aac": make_clip(folder / "aac.mp4", frames=60, gop=12, audio="aac"),
        "opus": make_clip(folder / "opus.mkv", frames=60, gop=12, audio="libopus"),
        "long_gop": make_clip(folder / "long_gop.mp4", frames=60, gop=300, audio="aac"),
    }


# --- options ----------------------------------------------------------------------------------------


def test_check_trim_takes_frame_numbers_and_refuses_empty_or_negative_ranges():
    assert check_trim(None, None) == (None, None)
    assert check_trim("5", " 9 ") == (5, 9)
    assert check_trim(0, None) == (0, None)
    assert check_trim(None, 3) == (None, 3)
    for start, end, words in [(5, 5, "before the end"), (9, 5, "before the end"), (-1, None, "start at 0"),
                              (None, -3, "start at 0"), ("x", None, "frame number"), ("1.5", None, "frame number"),
                              (None, 0, "no frame")]:
        with pytest.raises(InputError, match=words):
            check_trim(start, end)


def test_resolve_trim_checks_the_range_against_the_video(clips):
    info = probe(clips["aac"])
    assert info.frames == 60
    assert resolve_trim(info, None, None, "v") is None
    assert resolve_trim(info, 0, 60, "v") is None  # the whole video: the untrimmed output and key
    assert resolve_trim(info, 10, None, "v") == Trim(10, 60)
    assert resolve_trim(info, None, 7, "v") == Trim(0, 7)
    with pytest.raises(InputError, match="has 60 frames"):
        resolve_trim(info, None, 61, "v")
    with pytest.raises(InputError, match="has 60 frames"):
        resolve_trim(info, 60, None, "v")


def test_manifest_trim_columns_are_taken_out_of_the_face_options():
    opts = {"face_selector_mode": "many", "trim-frame-start": "4", "trim_frame_end": "20"}
    assert pop_manifest_trim(opts) == (4, 20)
    assert opts == {"face_selector_mode": "many"}
    with pytest.raises(InputError, match="trim_frame_start 8 trim_frame_end 3"):
        pop_manifest_trim({"trim_frame_start": "8", "trim_frame_end": "3"})


def test_manifest_rows_carry_their_trim_and_a_bad_one_fails_its_row_alone(tmp_path):
    from ffray.cli.swap import manifest_rows

    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(
        '{"source": "s.jpg", "target": "t.mp4", "output": "a.mp4", '
        '"options": {"trim_frame_start": 5, "trim-frame-end": 9, "face_selector_mode": "many"}}\n'
        '{"source": "s.jpg", "target": "t.mp4", "output": "b.mp4", "options": {"trim_frame_start": -2}}\n'
        '{"source": "s.jpg", "target": "t.mp4", "output": "c.mp4"}\n')
    first, bad, plain = manifest_rows(str(manifest))
    assert (first.request.trim_start, first.request.trim_end) == (5, 9)
    assert first.options == {"face_selector_mode": "many"}
    assert bad.request is None and bad.error == "trim_frame_start -2: frame numbers start at 0"
    assert (plain.request.trim_start, plain.request.trim_end) == (None, None)


def test_a_rows_own_trim_wins_over_the_command_line_per_end():
    from ffray.pipeline.driver import VideoRequest

    row = VideoRequest("t.mp4", "o.mp4", ("s.jpg",), trim_end=30)
    merged = row_trim(row, 10, 50)
    assert (merged.trim_start, merged.trim_end) == (10, 30)
    assert row_trim(VideoRequest("t.mp4", "o.mp4", ("s.jpg",)), None, None).trim_start is None
    with pytest.raises(InputError, match="before the end"):
        row_trim(row, 40, None)


def test_the_video_key_includes_the_trim():
    from ffray.faces.options import FaceOptions
    from ffray.pipeline.config import PipelineConfig
    from ffray.pipeline.driver import video_key

    encode = EncodeOptions.for_output("o.mp4")
    args = ("content", ["source"], FaceOptions(), PipelineConfig(), encode, {})
    keys = {video_key(*args), video_key(*args, trim=Trim(0, 10)), video_key(*args, trim=Trim(0, 11)),
            video_key(*args, trim=Trim(1, 11))}
    assert len(keys) == 4
    assert video_key(*args, trim=None) == video_key(*args)  # untrimmed keys (and work dirs) unchanged


# --- chunk plan -------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["aac", "long_gop"])
@pytest.mark.parametrize("start,end", [(13, 41), (0, 9), (47, 60), (30, 31), (5, 56)])
def test_the_trimmed_plan_covers_exactly_the_range_and_decodes_its_frames(clips, clip, start, end):
    info = probe(clips[clip])
    trim = Trim(start, end)
    plan = trim_plan(plan_chunks(info, 16), info, trim, 16)
    assert [c.index for c in plan] == list(range(len(plan)))
    assert plan[0].start == start and plan[-1].end == end
    assert all(a.end == b.start for a, b in zip(plan, plan[1:], strict=False))
    assert plan_trim(plan, info) == trim
    assert len(plan) == 1 or min(c.frames for c in plan) >= 16 // 4  # no slivers at the cut ends
    for chunk in plan:
        assert chunk.seek_frame <= chunk.start and (chunk.seek_frame == 0 or chunk.seek_frame in info.keyframes)
        assert chunk.frame_pts == info.frame_pts[chunk.start:chunk.end]
        got = [(f.index, f.pts) for f in decode_chunk(str(clips[clip]), chunk)]
        assert got == [(i, info.frame_pts[i]) for i in range(chunk.start, chunk.end)]
    untrimmed = plan_chunks(info, 16)
    assert trim_plan(untrimmed, info, None, 16) == untrimmed
    assert plan_trim(untrimmed, info) is None


# --- remux: timestamps and audio --------------------------------------------------------------------


def _segments(clip: Path, info, plan, folder: Path, output: str) -> list[str]:
    """Segments of the source's own decoded YUV, lossless (quality 100), as the writer makes them."""
    from ffray.media.decode import raw_frame

    opts = EncodeOptions.for_output(output, quality=100)
    paths = []
    for chunk in plan:
        dest = folder / f"seg{chunk.index}.mp4"
        with SegmentWriter(dest, info, opts, source_yuv=True) as writer:
            for frame in decode_chunk(str(clip), chunk, convert=raw_frame):
                writer.write_frame(frame.image, frame.pts)
        paths.append(str(dest))
    return paths


def _audio_seconds(path) -> tuple[float, float, int]:
    """(start, duration by the container, decoded samples / rate) of the first audio stream."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        start = float((stream.start_time or 0) * stream.time_base)
        duration = float(stream.duration * stream.time_base) if stream.duration else float("nan")
        samples = sum(f.samples for f in c.decode(stream))
        return start, duration, samples / stream.rate


@pytest.mark.parametrize("clip,suffix", [("aac", ".mp4"), ("opus", ".mkv"), ("aac", ".mkv"), ("long_gop", ".mov"),
                                         ("aac", ".avi"), ("opus", ".webm")])
def test_trimmed_remux_starts_at_zero_with_frame_start_and_cuts_the_audio_to_match(clips, tmp_path, clip, suffix):
    source = clips[clip]
    info = probe(source)
    trim = Trim(13, 41)
    plan = trim_plan(plan_chunks(info, 16), info, trim, 16)
    output = tmp_path / f"out{suffix}"
    segments = _segments(source, info, plan, tmp_path, str(output))
    result = remux(source, segments, output, info=info, trim=trim)
    out = probe(output)
    assert out.frames == result.frames == trim.frames
    step = info.frame_pts[1] - info.frame_pts[0]
    assert out.frame_time(0) == 0.0
    assert out.frame_time(1) == pytest.approx(float(step * info.time_base), abs=1e-3)
    video_seconds = trim.frames / FPS
    assert out.duration == pytest.approx(video_seconds, abs=1e-3)
    (entry,) = result.audio
    assert entry["action"] == "re-encoded" and entry["cut"] == [13 / FPS, 41 / FPS]
    assert entry["samples"] == 28 * 48000 // FPS
    start, duration, decoded = _audio_seconds(output)
    assert start == pytest.approx(0.0, abs=1e-3)
    if suffix in (".mp4", ".mov"):  # the edit list says where the audio ends, to the sample
        assert duration == pytest.approx(video_seconds, abs=1 / 48000 + 1e-6)
    if clip == "opus":  # pre-skip and end padding are signalled: the decoded samples are exact
        assert decoded == pytest.approx(video_seconds, abs=1 / 48000 + 1e-6)
    # FFmpeg decodes a whole last AAC frame (1024 samples, 21 ms) whatever the container says
    assert abs(decoded - video_seconds) < 1 / FPS
    frames, _ = video_frames(output)
    source_frames, _ = video_frames(source)
    lossless = EncodeOptions.for_output(str(output)).encoder == "libx264"  # at quality 100; mpeg4, vp9: not
    for i in range(trim.frames):
        if lossless:  # from the decoded source's own YUV: the same pixels
            assert np.array_equal(frames[i], source_frames[trim.start + i]), i
            continue
        near = range(trim.start + i - 1, trim.start + i + 2)  # the closest source frame is the right one
        diffs = {j: np.abs(frames[i].astype(int) - source_frames[j]).mean() for j in near}
        assert min(diffs, key=diffs.get) == trim.start + i, (i, diffs)
    again = tmp_path / f"again{suffix}"
    remux(source, segments, again, info=info, trim=trim)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(output.read_bytes()).digest()


@pytest.mark.parametrize("clip,suffix", [("aac", ".mp4"), ("opus", ".mkv")])
def test_trimmed_audio_is_the_sources_samples_of_the_range(clips, tmp_path, clip, suffix):
    """Sample-exact and aligned: the cut's samples match the source's over [start, end) (re-encoded
    with the same lossy codec: close, not equal), with no lead-in or lag, even when decoding starts
    with a seek."""
    source = clips[clip]
    info = probe(source)

    def pcm(path):
        with av.open(str(path)) as c:
            return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1).astype(np.float64)

    whole = pcm(source)
    for trim in (Trim(40, 55), Trim(0, 12)):  # 1.6 s: seeks before decoding; 0: from the stream start
        output = tmp_path / f"cut{trim.start}{suffix}"
        plan = trim_plan(plan_chunks(info, 16), info, trim, 16)
        remux(source, _segments(source, info, plan, tmp_path, str(output)), output, info=info, trim=trim)
        cut = pcm(output)
        n = round(trim.frames / FPS * 48000)
        a = round(trim.start / FPS * 48000)
        assert n <= cut.shape[1] < n + 1024
        errors = {lag: np.mean((whole[:, a + lag:a + lag + n] - cut[:, :n]) ** 2) for lag in range(0, 50)}
        assert min(errors, key=errors.get) == 0
        snr = 10 * np.log10(np.mean(whole[:, a:a + n] ** 2) / errors[0])
        assert snr > 30, snr


def test_a_range_after_the_audio_ends_gives_an_output_without_audio(clips, tmp_path):
    from media_clips import _write_tone

    source = tmp_path / "short_audio.mp4"  # the aac clip's 60 frames (2.4 s) with 0.5 s of audio
    with av.open(str(clips["aac"])) as src, av.open(str(source), "w", options={"movie_timescale": "12800"}) as out:
        video = out.add_stream_from_template(src.streams.video[0])
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = video
                out.mux(packet)
        _write_tone(out, audio, 0.5)
    info = probe(source)
    trim = Trim(40, 60)
    plan = trim_plan(plan_chunks(info, 16), info, trim, 16)
    output = tmp_path / "out.mp4"
    result = remux(source, _segments(source, info, plan, tmp_path, str(output)), output, info=info, trim=trim)
    assert result.frames == 20 and result.audio[0]["samples"] == 0
    assert probe(output).audio == ()


# --- the command line --------------------------------------------------------------------------------


def _source_face() -> str:
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


CPU_FLAGS = ["--read-cpus", "0.5", "--detector-cpus", "0.25", "--swapper-cpus", "0.25", "--writer-cpus", "0.5",
             "--num-gpus", "0", "--chunk-frames", "16", "--quality", "100", "--quiet"]


@pytest.mark.parametrize("flags,words", [
    (["--trim-frame-start", "20", "--trim-frame-end", "20"], "before the end"),
    (["--trim-frame-start", "-1"], "start at 0"),
    (["--trim-frame-end", "61"], "has 60 frames"),
    (["--trim-frame-start", "60"], "has 60 frames"),
])
def test_bad_trims_exit_2_with_one_line_before_any_work(clips, tmp_path, flags, words):
    work = tmp_path / "work"
    done = subprocess.run(ffray_cmd("swap", "-s", _source_face(), "-t", str(clips["aac"]), "-o",
                                    str(tmp_path / "out.mp4"), "--work-dir", str(work), *flags),
                          env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ffray: error: ") and words in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.mp4").exists() and not (work / "videos").exists()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_swap_and_batch_write_only_the_trimmed_frames_with_their_audio(clips, tmp_path):
    source = clips["aac"]
    src_frames, _ = video_frames(source)
    out = tmp_path / "swap.mp4"
    done = subprocess.run(ffray_cmd("swap", "-s", _source_face(), "-t", str(source), "-o", str(out),
                                    "--work-dir", str(tmp_path / "work"), "--trim-frame-start", "13",
                                    "--trim-frame-end", "41", *CPU_FLAGS),
                          env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    frames, pts = video_frames(out)
    assert len(frames) == 28 and pts[0] == 0
    # no face in the pattern clip: the frames are the source's, losslessly re-encoded in its own YUV
    for i in range(len(frames)):
        assert np.array_equal(frames[i], src_frames[13 + i]), i
    start, duration, _ = _audio_seconds(out)
    assert start == 0 and duration == pytest.approx(28 / FPS, abs=1e-4)
    report = job_report(tmp_path / "work")
    video = report["videos"][0]
    assert video["trim"] == [13, 41] and video["frames"] == 28 and video["chunks"] == 2
    from ffray.pipeline.qc_page import collect_thumbnails

    (thumbs,) = collect_thumbnails(report).values()  # the QC page pairs output frame k with source 13 + k
    assert thumbs["frames"] and all(13 <= f["index"] < 41 for f in thumbs["frames"])
    assert all(f["source"] == f["output"] for f in thumbs["frames"])  # no face: the same pixels

    # a batch: a trim column per row (one row untrimmed), and the command line's trim for rows without one
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("source,target,output,trim_frame_start,trim_frame_end\n"
                        f"{_source_face()},{source},out/a.mp4,13,41\n"
                        f"{_source_face()},{clips['opus']},out/b.mkv,47,60\n"
                        f"{_source_face()},{source},out/c.mp4,0,60\n"
                        f"{_source_face()},{source},out/d.mp4,,\n")
    done = subprocess.run(ffray_cmd("batch", str(manifest), "--work-dir", str(tmp_path / "work"),
                                    "--report", str(tmp_path / "batch.json"), "--trim-frame-end", "30", *CPU_FLAGS),
                          env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # the same video, range and settings as the swap above: its chunks are reused, the output is the same
    assert (tmp_path / "out/a.mp4").read_bytes() == out.read_bytes()
    b_frames, b_pts = video_frames(tmp_path / "out/b.mkv")
    assert len(b_frames) == 13 and b_pts[0] == 0  # 47..59: to the end
    assert _audio_seconds(tmp_path / "out/b.mkv")[2] == pytest.approx(13 / FPS, abs=1e-4)  # Opus: exact
    assert len(video_frames(tmp_path / "out/c.mp4")[0]) == 60  # 0..60 is the whole video: untrimmed
    assert len(video_frames(tmp_path / "out/d.mp4")[0]) == 30  # the command line's --trim-frame-end 30
    report = json.loads((tmp_path / "batch.json").read_text())
    trims = {Path(v["output"]).name: v["trim"] for v in report["videos"]}
    assert trims == {"a.mp4": [13, 41], "b.mkv": [47, 60], "c.mp4": None, "d.mp4": [0, 30]}
    assert report["totals"]["chunks_resumed"] == 2  # a.mp4's, from the swap
