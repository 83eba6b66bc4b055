"""Failure sweep: every bad input or fault a user can meet, through the real `ffray` CLI (a subprocess
with its own local Ray), against the promises of README.md ("Exit codes", "Outputs are never
overwritten by surprise"):

- the documented exit code (0 ok, 1 processing failed / some batch rows failed, 2 bad input, 3 model,
  130 interrupted);
- no traceback on stderr;
- exactly one `ffray: error: ` line (for a batch: one `FAILED ...` line per bad row) naming the
  offending file (or option);
- every input and every other file that was there before (another output, a filler file) is byte for
  byte what it was;
- nothing at the destination unless it is a complete file (probed with PyAV: the target's frame count),
  and no temporary left beside it.

Failures that must come before Ray starts run with RAY_TMPDIR pointing into the test folder and check
that it was never made (each takes a few seconds). Cases that need a Ray run are few and combined: one
batch carries many bad rows; the output-folder and report-folder disk-full cases reuse finished chunks
(no Ray).

Covered elsewhere, not repeated here:

| fault                                            | test                                                    |
|--------------------------------------------------|---------------------------------------------------------|
| a stage worker killed (kill -9) mid-job          | test_pipeline_swap.py::test_stage_worker_killed_mid_job_gives_identical_output |
| the driver killed (kill -9), then rerun          | test_cli_swap.py::test_driver_killed_and_rerun_resumes_without_redoing_chunks |
| a worker node lost mid-job                       | test_pipeline_node_loss.py::test_worker_node_removed_mid_job |
| a corrupt video beside a good one (library API)  | test_pipeline_swap.py::test_corrupt_video_fails_alone_in_a_batch |
| outputs that are inputs, folders, someone else's | test_output_safety.py                                   |
| registry model failing its hash, unknown provider in a config file, work dir under a file | test_preflight.py |
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import onnx
import pytest
from conftest import asset
from contract_models import build
from onnx import TensorProto, helper
from pipeline_helpers import (
    YUNET,
    astronaut_clip,
    ffray_cmd,
    job_report,
    kill_process_group,
    run_env,
)

# Ray Data warns about its own deprecated DataContext fields whenever a context is copied to workers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

SOURCE = "media/meds-aa-S001-01.jpg"
REAL_MP4 = "media/h264_aac.mp4"  # 31 frames, 640x480, AAC, moov after mdat

# small CPU shares so that every pool fits a 2-core box; no GPU; the builtin pack unless a case says so
RUN_ARGS = ["--chunk-frames", "16", "--providers", "cpu", "--intra-op-threads", "1", "--read-cpus", "0.5",
            "--detector-cpus", "0.25", "--swapper-cpus", "0.25", "--writer-cpus", "0.5", "--num-gpus", "0",
            "--face-selector-mode", "many", "--quiet"]
NO_SPACE = r"no space left|disk (is )?full|ENOSPC"


def swap_args(source, target, output, work, *extra: str) -> list[str]:
    return ["swap", "--source", str(source), "--target", str(target), "--output", str(output),
            "--work-dir", str(work), *RUN_ARGS, *extra]


def run(args: list[str], timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(ffray_cmd(*args), env=env or run_env(), capture_output=True, text=True,
                          timeout=timeout)


# --- checks -----------------------------------------------------------------------------------------


def snapshot(*roots: Path, skip: tuple[Path, ...] = ()) -> dict[Path, str]:
    """sha256 of every plain file below `roots`, except below `skip`."""
    files = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if any(path == s or s in path.parents for s in skip):
                continue
            if path.is_file() and not path.is_symlink():
                files[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def tail(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}; stderr:\n{done.stderr[-3000:]}"


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def one_error_line(done: subprocess.CompletedProcess, code: int, names: str, words: str = "") -> str:
    """The run exited `code` with no traceback and exactly one `ffray: error:` line, the last one on
    stderr, naming `names` (and matching `words`, a case-insensitive regex)."""
    assert "Traceback" not in done.stderr, tail(done)
    assert done.returncode == code, tail(done)
    lines = lines_of(done.stderr)
    errors = [line for line in lines if line.startswith("ffray: error: ")]
    assert len(errors) == 1, tail(done)
    (line,) = errors
    assert lines[-1] == line, tail(done)
    assert names in line, f"{names!r} not named in: {line}"
    if words:
        assert re.search(words, line, re.IGNORECASE), f"{words!r} not in: {line}"
    return line


def check_destination(output: Path, frames: int | None) -> None:
    """Nothing at `output` (frames None), or a complete video of `frames` frames."""
    if frames is None:
        assert not output.exists(), f"{output} was left at the destination"
    else:
        assert output.is_file(), f"{output} missing"
        assert frame_count(output) == frames, f"{output} is not complete"


def check_unchanged(before: dict[Path, str], after: dict[Path, str], new_ok: tuple[Path, ...] = ()) -> None:
    changed = sorted(str(p) for p in before if after.get(p) != before[p])
    assert not changed, f"changed or removed: {changed}"
    added = sorted(str(p) for p in after if p not in before and p not in new_ok)
    assert not added, f"left behind: {added}"


# --- inputs -----------------------------------------------------------------------------------------


def pattern_clip(path: Path, frames: int = 48) -> Path:
    """A face-free clip whose output and segments are well over 256 KiB (noisy 480x360 frames)."""
    from media_clips import make_clip

    return make_clip(path, frames=frames, width=480, height=360, gop=16, audio="aac")


def corrupt_mid_stream(clip: Path, out: Path) -> Path:
    """A copy of `clip` with 16000 seeded random bytes over the middle of its mdat (index intact): for
    pattern_clip, one chunk of 16 fails to decode (fewer bytes are concealed by the decoder)."""
    data = bytearray(clip.read_bytes())
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"mdat":
            break
        pos += size
    else:
        raise AssertionError(f"{clip}: no mdat")
    middle = pos + size // 2
    data[middle:middle + 16000] = np.random.default_rng(0).integers(0, 256, 16000, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


def audio_only(path: Path) -> Path:
    from media_clips import _write_tone

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "stereo"
        _write_tone(out, stream, 0.5)
    return path


def blank_image(path: Path) -> Path:
    import cv2

    cv2.imwrite(str(path), np.full((240, 240, 3), 128, np.uint8))
    return path


def wrong_contract_swapper(path: Path) -> Path:
    """A valid ONNX graph that is no inswapper_128: other input names, 64x64 images, no embedding input."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["result"])], "not-inswapper",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("result", TensorProto.FLOAT, [1, 3, 64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def facefusion_args(models: Path, swapper: str) -> list[str]:
    """The facefusion pack with the real YuNet and contract ArcFace, and `swapper`."""
    return ["--pack", "facefusion", "--face-detector-model", f"yunet={asset(YUNET)}", "--face-landmarker-score", "0",
            "--face-recognizer-model", build("arcface_w600k_r50", models), "--face-swapper-model", swapper]


# --- bad input refused before Ray starts ------------------------------------------------------------


def cheap_case(name: str, tmp: Path) -> tuple[list[str], int, str, str]:
    """`ffray swap` arguments for case `name`, the exit code, what the error line names, and a regex of
    the problem. Inputs go in tmp/in, the output in tmp/out beside another output that must survive."""
    from media_clips import make_clip

    inp, out = tmp / "in", tmp / "out"
    inp.mkdir()
    out.mkdir()
    (out / "other.mp4").write_bytes(b"another video's output\n")
    source = inp / "face.jpg"
    source.write_bytes(asset(SOURCE).read_bytes())
    target = make_clip(inp / "clip.mp4", frames=16, width=96, height=64, gop=8)
    output, work = out / "result.mp4", tmp / "work"
    base = dict(source=source, target=target, extra=[])
    if name == "target missing":
        bad = inp / "missing.mp4"
        spec = dict(target=bad, code=2, names=str(bad), words="not found")
    elif name == "target zero bytes":
        bad = inp / "empty.mp4"
        bad.write_bytes(b"")
        spec = dict(target=bad, code=2, names=str(bad), words="empty")
    elif name == "target truncated":
        bad = inp / "truncated.mp4"
        data = asset(REAL_MP4).read_bytes()
        bad.write_bytes(data[: len(data) * 40 // 100])
        spec = dict(target=bad, code=2, names=str(bad), words="truncated")
    elif name == "target not media":
        bad = inp / "notes.mp4"
        bad.write_text("these are my notes, not a video\n" * 40)
        spec = dict(target=bad, code=2, names=str(bad), words="not a readable media file")
    elif name == "target audio only":
        bad = audio_only(inp / "tone.m4a")
        spec = dict(target=bad, code=2, names=str(bad), words="no video stream")
    elif name == "target is a folder":
        bad = inp / "folder.mp4"
        bad.mkdir()
        spec = dict(target=bad, code=2, names=str(bad), words="")
    elif name == "target unknown codec":
        data = target.read_bytes()
        at = data.index(b"avc1", data.index(b"stsd"))
        bad = inp / "unknown-codec.mp4"
        bad.write_bytes(data[:at] + b"zzzz" + data[at + 4:])
        spec = dict(target=bad, code=2, names=str(bad), words="unsupported video codec")
    elif name == "source missing":
        bad = inp / "nosuch.jpg"
        spec = dict(source=bad, code=2, names=str(bad), words="source image not found")
    elif name == "source without a face":
        bad = blank_image(inp / "blank.png")
        spec = dict(source=bad, code=2, names=str(bad), words="no face")
    elif name == "source zero bytes":
        bad = inp / "empty.jpg"
        bad.write_bytes(b"")
        spec = dict(source=bad, code=2, names=str(bad), words="empty")
    elif name == "source not an image":
        bad = inp / "notes.jpg"
        bad.write_text("not a picture\n" * 40)
        spec = dict(source=bad, code=2, names=str(bad), words="")
    elif name == "reference face image missing":
        bad = inp / "nosuch-reference.jpg"
        spec = dict(extra=["--face-selector-mode", "reference", "--reference-face-image", str(bad)], code=2,
                    names=str(bad), words="not found")
    elif name == "reference frame out of range":
        spec = dict(extra=["--face-selector-mode", "reference", "--reference-frame-number", "999"], code=2,
                    names="--reference-frame-number 999", words="frames 0-15")
    elif name == "batch manifest missing":
        bad = inp / "nosuch.csv"
        spec = dict(args=["batch", str(bad), "--work-dir", str(work), *RUN_ARGS], code=2, names=str(bad),
                    words="cannot read manifest")
    elif name == "batch manifest not utf-8":
        bad = inp / "jobs.csv"
        bad.write_bytes(f"source,target,output\n{source},{target},../out/a.mp4\n".encode()
                        + f"{source},{inp}/caf\xe9.mp4,../out/b.mp4\n".encode("latin-1"))
        spec = dict(args=["batch", str(bad), "--work-dir", str(work), *RUN_ARGS], code=2, names=str(bad),
                    words="not UTF-8 text: byte 0xe9")
    elif name.startswith("swap-image"):
        image = inp / "target.jpg"
        image.write_bytes(asset("media/meds-aa-S029-01.jpg").read_bytes())
        picture, face, extra = image, source, []
        if name == "swap-image target missing":
            picture = bad = inp / "nosuch.jpg"
            words = "not found"
        elif name == "swap-image target not an image":
            picture = bad = inp / "notes.png"
            bad.write_text("not a picture\n" * 40)
            words = ""
        elif name == "swap-image source without a face":
            face = bad = blank_image(inp / "blank.png")
            words = "no face"
        else:  # unknown model
            bad, extra, words = "--face-swapper-model nosuch", ["--face-swapper-model", "nosuch"], "not a known"
        spec = dict(args=["swap-image", "--source", str(face), "--target", str(picture), "--output",
                          str(out / "result.png"), *extra], code=2, names=str(bad), words=words)
    elif name == "unknown model, facefusion pack":
        spec = dict(extra=facefusion_args(inp / "models", "nosuch"), code=2, names="--face-swapper-model nosuch",
                    words="not a known swapper model")
    elif name == "unknown model, builtin pack":
        spec = dict(extra=["--pack", "builtin", "--face-swapper-model", "nosuch"], code=2,
                    names="--face-swapper-model nosuch", words="not a known swapper model")
    elif name == "custom model not onnx":
        bad = inp / "swapper.onnx"
        bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        spec = dict(extra=facefusion_args(inp / "models", f"inswapper_128={bad}"), code=3, names=str(bad),
                    words="cannot load")
    elif name == "custom model wrong contract":
        bad = wrong_contract_swapper(inp / "wrong.onnx")
        spec = dict(extra=facefusion_args(inp / "models", f"inswapper_128={bad}"), code=3, names=str(bad),
                    words="contract")
    elif name == "chunk frames 0":
        spec = dict(extra=["--chunk-frames", "0"], code=2, names="--chunk-frames", words=r"\b0\b")
    elif name == "chunk frames -5":
        spec = dict(extra=["--chunk-frames", "-5"], code=2, names="--chunk-frames", words="-5")
    else:
        raise AssertionError(name)
    base.update(spec)
    args = base.get("args") or swap_args(base["source"], base["target"], output, work, *base["extra"])
    return args, base["code"], base["names"], base["words"]


CHEAP_CASES = ["target missing", "target zero bytes", "target truncated", "target not media", "target audio only",
               "target is a folder", "target unknown codec",
               "source missing", "source without a face", "source zero bytes", "source not an image",
               "reference face image missing", "reference frame out of range",
               "batch manifest missing", "batch manifest not utf-8", "unknown model, facefusion pack",
               "unknown model, builtin pack", "custom model not onnx", "custom model wrong contract",
               "chunk frames 0", "chunk frames -5",
               "swap-image target missing", "swap-image target not an image", "swap-image source without a face",
               "swap-image unknown model"]


@pytest.mark.parametrize("case", CHEAP_CASES, ids=[re.sub(r"[^\w-]+", "-", c) for c in CHEAP_CASES])
def test_bad_input_is_one_line_before_ray(tmp_path, case):
    args, code, names, words = cheap_case(case, tmp_path)
    work, ray_dir = tmp_path / "work", tmp_path / "ray"
    output = tmp_path / "out" / ("result.png" if case.startswith("swap-image") else "result.mp4")
    before = snapshot(tmp_path, skip=(work,))
    env = {**run_env(), "RAY_TMPDIR": str(ray_dir)}  # a Ray started by this run would make this folder
    started = time.monotonic()
    done = run(args, timeout=300, env=env)
    seconds = time.monotonic() - started
    line = one_error_line(done, code, names, words)
    assert lines_of(done.stderr) == [line], tail(done)  # --quiet: the error is all there is
    assert not ray_dir.exists(), f"Ray was started for a job refused up front ({seconds:.1f}s)"
    assert not (work / "videos").exists(), "a refused job decoded or encoded something"
    check_destination(output, None)
    check_unchanged(before, snapshot(tmp_path, skip=(work,)))


# --- runs on a local Ray ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_face_run(tmp_path_factory):
    """A face-free 48-frame clip swapped with the builtin pack: (folder, clip, source, work dir, output,
    completed process, snapshot of the folder before)."""
    folder = tmp_path_factory.mktemp("no-face")
    clip = pattern_clip(folder / "pattern.mp4")
    source = folder / "face.jpg"
    source.write_bytes(asset(SOURCE).read_bytes())
    (folder / "out").mkdir()
    (folder / "out" / "other.mp4").write_bytes(b"another video's output\n")
    work, output = folder / "work", folder / "out" / "result.mp4"
    before = snapshot(folder, skip=(work,))
    done = run(swap_args(source, clip, output, work))
    return folder, clip, source, work, output, done, before


@pytest.mark.ray
@pytest.mark.slow
def test_target_without_a_face_succeeds_with_zero_faces(no_face_run):
    folder, clip, _, work, output, done, before = no_face_run
    assert done.returncode == 0, tail(done)
    assert "Traceback" not in done.stderr and "ffray: error" not in done.stderr, tail(done)
    check_destination(output, frame_count(clip))
    check_unchanged(before, snapshot(folder, skip=(work,)), new_ok=(output,))
    (video,) = job_report(work)["videos"]
    assert video["status"] == "done" and video["faces"] == 0 and video["frames"] == 48


@pytest.mark.ray
@pytest.mark.slow
def test_corrupt_mid_stream_fails_naming_the_target(tmp_path, no_face_run):
    from ffray.media import decode_chunk, plan_chunks, probe

    _, clip, source, _, _, _, _ = no_face_run
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    bad = corrupt_mid_stream(clip, tmp_path / "in" / "corrupt.mp4")
    chunks = plan_chunks(probe(bad), 16)
    failing = []
    for chunk in chunks:  # precondition: the file is broken in exactly one chunk, the rest decodes
        try:
            list(decode_chunk(bad, chunk))
        except Exception:  # noqa: BLE001 - what kind is the CLI's business, checked below
            failing.append(chunk.index)
    assert len(failing) == 1 and len(chunks) > 1, f"test clip broken in chunks {failing} of {len(chunks)}"
    shutil.copy(source, tmp_path / "in" / "face.jpg")
    (tmp_path / "out" / "other.mp4").write_bytes(b"another video's output\n")
    work, output = tmp_path / "work", tmp_path / "out" / "result.mp4"
    before = snapshot(tmp_path, skip=(work,))
    done = run(swap_args(tmp_path / "in" / "face.jpg", bad, output, work))
    one_error_line(done, 2, str(bad), "corrupt")
    check_destination(output, None)
    check_unchanged(before, snapshot(tmp_path, skip=(work,)))


# --- disk full --------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs at tmp_path/full (skips where mounting is not allowed); unmounted afterwards."""
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip() or made.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path) -> None:
    """Write zeros to `path` until its file system is full."""
    with contextlib.suppress(OSError), open(path, "wb") as f:
        while True:
            f.write(bytes(4096))
            f.flush()
            os.fsync(f.fileno())


DISK_CASES = ["work dir", "output folder", "report folder"]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("where", DISK_CASES, ids=[c.replace(" ", "-") for c in DISK_CASES])
def test_disk_full(tmp_path, small_disk, no_face_run, where):
    """(a) the work dir and (b) the output's folder on a full disk: one line, nothing half-written;
    (c) the --report folder full: a warning, exit 0 (the output is the deliverable)."""
    _, clip, source, done_work, _, _, _ = no_face_run
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    shutil.copy(clip, tmp_path / "in" / "clip.mp4")
    shutil.copy(source, tmp_path / "in" / "face.jpg")
    clip, source = tmp_path / "in" / "clip.mp4", tmp_path / "in" / "face.jpg"
    (tmp_path / "out" / "other.mp4").write_bytes(b"another video's output\n")
    (small_disk / "keep.txt").write_bytes(b"someone's file on the small disk\n")
    extra: list[str] = []
    if where == "work dir":  # a fresh run whose segments do not fit
        work, output = small_disk / "work", tmp_path / "out" / "result.mp4"
    else:  # every chunk is already done: no Ray, only the remux and the report are written
        work = tmp_path / "work"
        shutil.copytree(done_work, work)
        output = (small_disk if where == "output folder" else tmp_path / "out") / "result.mp4"
        if where == "report folder":
            extra = ["--report", str(small_disk / "report.json")]
            fill(small_disk / "filler.bin")
    skip = (work, tmp_path / "ray")
    before = snapshot(tmp_path, skip=skip)
    done = run(swap_args(source, clip, output, work, *extra))
    after = snapshot(tmp_path, skip=skip)
    if where == "report folder":
        assert done.returncode == 0, tail(done)
        assert "Traceback" not in done.stderr and "ffray: error" not in done.stderr, tail(done)
        warnings = [line for line in lines_of(done.stderr) if line.startswith("ffray: warning: ")]
        assert len(warnings) == 1, tail(done)
        assert str(small_disk / "report.json") in warnings[0] and "cannot write" in warnings[0], warnings[0]
        check_destination(output, frame_count(clip))
        check_unchanged(before, after, new_ok=(output,))
        return
    if where == "work dir":
        line = one_error_line(done, 1, str(small_disk), NO_SPACE)
    else:
        line = one_error_line(done, 1, str(output), NO_SPACE)
    # a full disk is the user's to fix, not a bug: say so, without "internal error ... at file.py:N"
    assert "internal error" not in line and not re.search(r"\w\.py:\d+", line), line
    check_destination(output, None)
    check_unchanged(before, after)


# --- batch ------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_batch_bad_rows_fail_alone(tmp_path):
    """One good row and one bad row of each kind: exit 1, the good output complete, one FAILED line per
    bad row naming what is wrong, inputs and another output untouched, nothing for a failed row."""
    folder = tmp_path
    (folder / "out").mkdir()
    (folder / "out" / "other.mp4").write_bytes(b"another video's output\n")
    astronaut_clip(folder / "clip.mp4", frames=16)
    (folder / "face.jpg").write_bytes(asset(SOURCE).read_bytes())
    blank_image(folder / "blank.png")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are my notes, not a video\n" * 40)
    data = asset(REAL_MP4).read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) * 40 // 100])
    corrupt_mid_stream(pattern_clip(folder / "pattern.mp4"), folder / "corrupt.mp4")
    (folder / "plain-file").write_text("a file, not a folder\n")
    # (row's target, source, output, face_swapper_model, what its FAILED line must name, problem regex)
    rows = [
        ("clip.mp4", "face.jpg", "out/good.mp4", "", None, None),
        ("missing.mp4", "face.jpg", "out/missing.mp4", "", str(folder / "missing.mp4"), "not found"),
        ("empty.mp4", "face.jpg", "out/empty.mp4", "", str(folder / "empty.mp4"), "empty"),
        ("notes.mp4", "face.jpg", "out/notes.mp4", "", str(folder / "notes.mp4"), "not a readable media file"),
        ("truncated.mp4", "face.jpg", "out/truncated.mp4", "", str(folder / "truncated.mp4"), "truncated"),
        ("corrupt.mp4", "face.jpg", "out/corrupt.mp4", "", str(folder / "corrupt.mp4"), "corrupt"),
        ("clip.mp4", "nosuch.jpg", "out/nosource.mp4", "", str(folder / "nosuch.jpg"), "source image not found"),
        ("clip.mp4", "blank.png", "out/noface.mp4", "", str(folder / "blank.png"), "no face"),
        ("clip.mp4", "face.jpg", "plain-file/x.mp4", "", str(folder / "plain-file" / "x.mp4"),
         "cannot write to the output folder"),
        ("clip.mp4", "face.jpg", "out/badmodel.mp4", "nosuch", "--face-swapper-model nosuch", "not a known swapper"),
    ]
    manifest = folder / "jobs.csv"
    manifest.write_text("source,target,output,face_swapper_model\n"
                        + "".join(f"{s},{t},{o},{m}\n" for t, s, o, m, _, _ in rows))
    work = folder / "work"
    before = snapshot(folder, skip=(work,))
    done = run(["batch", str(manifest), "--work-dir", str(work), *RUN_ARGS])
    assert "Traceback" not in done.stderr, tail(done)
    assert done.returncode == 1, tail(done)
    lines = lines_of(done.stderr)
    assert not [line for line in lines if line.startswith("ffray: error")], tail(done)
    failed = [line for line in lines if line.startswith("FAILED ")]
    bad_rows = [(n, r) for n, r in enumerate(rows, 1) if r[4] is not None]
    problems = []
    for n, (_, _, _, _, names, words) in bad_rows:
        mine = [line for line in failed if line.startswith(f"FAILED row {n} (line {n + 1}): ")]
        if len(mine) != 1 or names not in mine[0] or not re.search(words, mine[0], re.IGNORECASE):
            problems.append(f"row {n}: expected one FAILED line naming {names!r} with {words!r}, got {mine}")
    assert not problems and len(failed) == len(bad_rows), "\n".join(problems) + "\n" + tail(done)
    assert f"1 of {len(rows)} succeeded" in done.stderr, tail(done)
    good = folder / "out" / "good.mp4"
    check_destination(good, 16)
    for _, _, out, _, _, _ in rows[1:]:
        check_destination(folder / out, None)
    check_unchanged(before, snapshot(folder, skip=(work,)), new_ok=(good,))


# --- interrupted ------------------------------------------------------------------------------------

INTERRUPT_FRAMES = 112  # 7 chunks of 16


def done_records(work: Path) -> list[Path]:
    """Chunk records in place. Not pipeline_helpers.finished_chunk_records: pathlib's glob matches the
    hidden `.NAME.json.<uuid>.part.json` temporaries of records still being written."""
    return [p for p in work.glob("videos/*/done/*.json") if not p.name.startswith(".")]


@pytest.fixture(scope="module")
def interrupt_reference(tmp_path_factory):
    """(clip, source, output of an uninterrupted run) for the interrupt test."""
    folder = tmp_path_factory.mktemp("interrupt-reference")
    clip = astronaut_clip(folder / "astronaut.mp4", frames=INTERRUPT_FRAMES)
    source = folder / "face.jpg"
    source.write_bytes(asset(SOURCE).read_bytes())
    output = folder / "reference.mp4"
    done = run(swap_args(source, clip, output, folder / "work"))
    assert done.returncode == 0, tail(done)
    assert frame_count(output) == INTERRUPT_FRAMES
    return clip, source, output


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill-int-driver"])
def test_interrupted_run_exits_130_and_a_rerun_resumes_to_identical_output(tmp_path, interrupt_reference, how):
    """SIGINT once a first chunk is recorded: `ctrl-c` to the whole process group (the driver and the
    local Ray it started), as a terminal sends it; `kill-int-driver` to the driver alone (kill -INT PID)."""
    ref_clip, ref_source, reference = interrupt_reference
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    clip, source = tmp_path / "in" / "astronaut.mp4", tmp_path / "in" / "face.jpg"
    shutil.copy(ref_clip, clip)
    shutil.copy(ref_source, source)
    (tmp_path / "out" / "other.mp4").write_bytes(b"another video's output\n")
    work, output = tmp_path / "work", tmp_path / "out" / "result.mp4"
    args = ffray_cmd(*swap_args(source, clip, output, work))
    before = snapshot(tmp_path, skip=(work,))
    proc = subprocess.Popen(args, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not done_records(work):
            assert proc.poll() is None, f"ended early with {proc.returncode}: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no chunk finished in 300 s"
            time.sleep(0.05)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            kill_process_group(proc)
            raise AssertionError("ffray swap did not stop within 180 s of SIGINT") from None
    finally:
        if proc.poll() is None:
            kill_process_group(proc)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its local Ray is left
    interrupted = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    finished = len(done_records(work))
    line = one_error_line(interrupted, 130, "rerun", "resume")
    assert 1 <= finished < INTERRUPT_FRAMES // 16, f"{finished} chunks finished: not interrupted mid-job"
    check_destination(output, None)
    check_unchanged(before, snapshot(tmp_path, skip=(work,)))

    rerun = subprocess.run(args, env=run_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, tail(rerun)
    assert "Traceback" not in rerun.stderr and "ffray: error" not in rerun.stderr, tail(rerun)
    assert output.read_bytes() == reference.read_bytes(), "resumed output differs from an uninterrupted run's"
    check_unchanged(before, snapshot(tmp_path, skip=(work,)), new_ok=(output,))
    assert job_report(work)["totals"]["chunks_resumed"] >= 1, line
