"""`ffray swap`, `ffray batch` and `ffray demo` as a user runs them (subprocesses, each with its own local Ray)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import asset
from pipeline_helpers import (
    audio_packets,
    face_boxes,
    fault_cli_args,
    ffray_cmd,
    finished_chunk_records,
    job_report,
    kill_process_group,
    outside_boxes_mask,
    run_env,
    video_frames,
    wait_for_finished_chunks,
)

# Ray Data warns about its own deprecated DataContext fields whenever a context is copied to workers
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]


def test_driver_killed_and_rerun_resumes_without_redoing_chunks(tmp_path, fault_reference):
    video, source, options, reference = fault_reference
    work = tmp_path / "work"
    output = tmp_path / "out.mp4"
    args = ffray_cmd(*fault_cli_args(video, source, options, output, work))
    proc = subprocess.Popen(args, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for_finished_chunks(work, 2, proc=proc)
    finally:
        kill_process_group(proc)  # the driver and the local Ray it started
    assert proc.returncode == -9
    assert not output.exists()
    finished = finished_chunk_records(work)
    assert 2 <= len(finished) < 6
    segments = {r["chunk_id"]: next(work.glob(f"videos/{r['video_key']}/segments/{r['segment']}")) for r in finished}
    stats = {chunk_id: os.stat(path) for chunk_id, path in segments.items()}

    rerun = subprocess.run(args, env=run_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert output.read_bytes() == reference.read_bytes()
    assert len(finished_chunk_records(work)) == 6
    for chunk_id, before in stats.items():
        after = os.stat(segments[chunk_id])
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not done again
    report = job_report(work)
    assert report["totals"]["chunks_resumed"] == len(finished)
    assert report["totals"]["chunks_processed_this_run"] == 6 - len(finished)
    assert "wrote" in rerun.stderr and str(output) in rerun.stderr


def test_swap_bad_input_exits_2_with_one_line(tmp_path):
    done = subprocess.run(ffray_cmd("swap", "--source", str(tmp_path / "a.jpg"), "--target",
                                    str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "o.mp4"),
                                    "--work-dir", str(tmp_path / "w")),
                          env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("ffray: error: ") and "missing.mp4" in lines[-1]
    assert "Traceback" not in done.stderr


def test_commercial_only_refuses_a_non_commercial_model_before_any_work(tmp_path):
    """The store flags of `ffray models` reach the pipeline: reference mode needs ArcFace (InsightFace,
    non-commercial), so --commercial-only refuses the job with exit 3 and nothing is written."""
    done = subprocess.run(ffray_cmd(
        "swap", "--pack", "facefusion", "--commercial-only", "--model-cache", str(tmp_path / "cache"),
        "--face-detector-model", f"yunet={asset('models/yunet_s_640_640.onnx')}", "--face-landmarker-score", "0",
        "--source", str(asset("media/meds-aa-S001-01.jpg")), "--target", str(asset("media/h264_aac.mp4")),
        "--output", str(tmp_path / "o.mp4"), "--work-dir", str(tmp_path / "w"), "--quiet"),
        env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "arcface_w600k_r50" in done.stderr and "refused by --commercial-only" in done.stderr
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "w" / "videos").exists()


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    from ffray.cli.swap import make_demo_inputs

    return make_demo_inputs(tmp_path_factory.mktemp("demo-inputs"))


def test_batch_lists_failed_rows_and_finishes_the_others(tmp_path, demo_inputs):
    import cv2
    from media_clips import make_clip

    clip, face = demo_inputs
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    turned = make_clip(tmp_path / "turned.mp4", frames=8, rotation=90)  # AVI has no rotation metadata
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(
        "source,target,output,face_selector_mode\n"
        f"{face},{clip},out/one.mp4,many\n"
        f"{face},missing.mp4,out/two.mp4,\n"
        f"{blank},{clip},out/three.mp4,\n"
        f"{face},{turned},out/four.avi,\n"
    )
    done = subprocess.run(ffray_cmd("batch", str(manifest), "--work-dir", str(tmp_path / "work"),
                                    "--chunk-frames", "16"),
                          env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert (tmp_path / "out/one.mp4").is_file()
    assert not (tmp_path / "out/two.mp4").exists() and not (tmp_path / "out/three.mp4").exists()
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 3
    assert failed[0].startswith("FAILED row 2") and "missing.mp4" in failed[0]
    assert failed[1].startswith("FAILED row 3") and "blank.png" in failed[1] and "no face" in failed[1]
    assert failed[2].startswith("FAILED row 4") and "four.avi" in failed[2]
    assert "AVI cannot carry the source's rotation" in failed[2]
    assert not (tmp_path / "out/four.avi").exists()
    # refused while preparing: only row 1's video has chunks in the work dir, nothing of the .avi row
    assert len(list((tmp_path / "work").glob("videos/*"))) == 1
    assert "1 of 4 succeeded" in done.stderr
    src, _ = video_frames(clip)
    out, _ = video_frames(tmp_path / "out/one.mp4")
    assert len(out) == len(src)


def test_demo_runs_offline_and_prints_the_output(tmp_path):
    done = subprocess.run(ffray_cmd("demo", "--work-dir", str(tmp_path / "work"), "--quiet"),
                          env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = Path(done.stdout.strip().splitlines()[-1])
    assert output.is_file() and output.suffix == ".mp4"
    target = tmp_path / "work" / "demo-inputs" / "astronaut-clip.mp4"
    src, src_pts = video_frames(target)
    out, out_pts = video_frames(output)
    assert len(out) == len(src) == 48 and out_pts == src_pts
    assert audio_packets(output) == audio_packets(target)
    # Grace Hopper's face is in the astronaut's place: the face changed, the rest did not
    from ffray.faces.options import FaceOptions

    (box,) = face_boxes(src[24], FaceOptions(pack="builtin"))
    x1, y1, x2, y2 = (int(v) for v in box)
    diff = np.abs(out[24].astype(np.int16) - src[24].astype(np.int16))
    assert diff[y1:y2, x1:x2].mean() > 6  # YuNet's box holds some hair and background the swap leaves
    assert diff[outside_boxes_mask(src[24].shape, [box], margin=0.6)].mean() < 2.5
    report = job_report(tmp_path / "work")
    assert report["videos"][0]["faces"] >= 40  # the astronaut's face is found in (nearly) every frame
    assert report["face_options"]["pack"] == "builtin"


def test_every_face_option_has_help_with_its_default():
    import argparse

    from ffray.faces.options import add_face_arguments

    parser = argparse.ArgumentParser()
    add_face_arguments(parser)
    face_flags = [a for a in parser._actions if a.dest != "help"]
    assert len(face_flags) >= 30
    for action in face_flags:
        assert action.help and "(default: " in action.help and "\n" not in action.help, action.option_strings


def test_progress_says_what_happens_from_the_start_and_counts_frames(tmp_path, fault_reference):
    """The progress lines (stderr, not a terminal): the preparation before any frame, starting Ray, the
    pools loading their models, then frames as the writer encodes them, not only whole chunks."""
    import re

    video, source, options, _ = fault_reference
    args = fault_cli_args(video, source, options, tmp_path / "out.mp4", tmp_path / "work", chunk_frames=90)
    done = subprocess.run(ffray_cmd(*args, "--progress-interval", "0.2"), env=run_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    # in a log the preparation is announced only when it takes over 2 s (a refused command prints its
    # error alone); then it comes first
    assert "preparing 1 video" in lines[0] or lines[0].startswith("[0/90 frames")
    order = [next(i for i, line in enumerate(lines) if text in line)
             for text in ("starting Ray (local)", "loading models, actors ready: detector 0")]
    assert order == sorted(order)
    counts = [int(m.group(1)) for m in map(re.compile(r"^\[(\d+)/90 frames").match, lines) if m]
    assert counts == sorted(counts) and counts[-1] == 90
    assert any(0 < c < 90 for c in counts), "frames counted inside the one 90-frame chunk"
