"""Fixtures and helpers shared by the pipeline, jobs and swap-CLI tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from ffray.faces.options import FaceOptions
from ffray.pipeline.config import PipelineConfig, StageConfig

REPO = Path(__file__).resolve().parent.parent
YUNET = "models/yunet_s_640_640.onnx"
VIDEO = "media/video_01.mp4"


def contract_face_options(models_dir: Path, yunet: Path, enhancer: bool = True, **overrides) -> FaceOptions:
    """FaceFusion pack with the real YuNet detector and contract ArcFace / inswapper / GFPGAN models."""
    from contract_models import build

    values = dict(
        pack="facefusion",
        face_detector_model=f"yunet={yunet}",
        face_landmarker_score=0.0,
        face_recognizer_model=build("arcface_w600k_r50", models_dir),
        face_swapper_model=build("inswapper_128", models_dir),
        face_enhancer_model=build("gfpgan_1.4", models_dir) if enhancer else None,
        face_selector_mode="many",
    )
    values.update(overrides)
    return FaceOptions(**values)


def small_config(work_dir: Path, chunk_frames: int = 16, gpus=(0.25, 0.5, 0.25), **overrides) -> PipelineConfig:
    """Small CPU shares so that every pool fits a 2-core box (logical CPUs are counters)."""
    det, swp, enh = gpus
    values = dict(
        chunk_frames=chunk_frames,
        work_dir=str(work_dir),
        read_num_cpus=0.5,
        detector=StageConfig(max_actors=1, num_gpus=det, num_cpus=0.25, model_batch_size=8),
        swapper=StageConfig(max_actors=1, num_gpus=swp, num_cpus=0.25, model_batch_size=8),
        enhancer=StageConfig(max_actors=1, num_gpus=enh, num_cpus=0.25, model_batch_size=8),
        writer=StageConfig(max_actors=2, num_gpus=0.0, num_cpus=0.5),
        providers=("cpu",),
        intra_op_threads=1,
    )
    values.update(overrides)
    return PipelineConfig(**values)


def start_local_ray(tmp: Path, num_cpus: int = 4, num_gpus: int = 4) -> None:
    import ray

    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             _temp_dir=str(tmp), log_to_driver=False)


def video_frames(path) -> tuple[list[np.ndarray], list[int]]:
    """Every frame (BGR) and its pts, decoded sequentially."""
    frames, pts = [], []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            frames.append(frame.to_ndarray(format="bgr24"))
            pts.append(frame.pts)
    order = np.argsort(pts, kind="stable")
    return [frames[i] for i in order], sorted(pts)


def audio_packets(path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


def face_boxes(frame: np.ndarray, options: FaceOptions) -> list[np.ndarray]:
    from ffray.faces.packs import load_analyser

    analyser = load_analyser(options)
    return [f.box for f in analyser.analyse([frame])[0]]


def outside_boxes_mask(shape, boxes, margin: float = 0.35) -> np.ndarray:
    """True where a pixel is well away from every face box (box grown by `margin` of its size)."""
    mask = np.ones(shape[:2], bool)
    h, w = shape[:2]
    for x1, y1, x2, y2 in boxes:
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        mask[max(0, int(y1 - my)):min(h, int(y2 + my) + 1), max(0, int(x1 - mx)):min(w, int(x2 + mx) + 1)] = False
    return mask


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffray_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffray", *args]


def finished_chunk_records(work_dir: Path) -> list[dict]:
    """The chunk records (ffray.pipeline.ledger) of every video in a local work dir."""
    records = []
    for path in sorted(p for p in Path(work_dir).glob("videos/*/done/*.json") if not p.name.startswith(".")):
        try:
            records.append(json.loads(path.read_text()))
        except (ValueError, FileNotFoundError):
            pass
    return records


def wait_for_finished_chunks(work_dir: Path, count: int, timeout: float = 300, proc=None) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # not the hidden temporaries of records still being written (pathlib's glob matches dotfiles)
        found = sum(not p.name.startswith(".") for p in Path(work_dir).glob("videos/*/done/*.json"))
        if found >= count:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early with {proc.returncode}")
        time.sleep(0.1)
    raise AssertionError(f"{work_dir} did not reach {count} finished chunks in {timeout}s")


def job_report(work_dir: Path) -> dict:
    """The run report of the only job in a local work dir."""
    (path,) = Path(work_dir).glob("jobs/*/report.json")
    return json.loads(path.read_text())


def astronaut_clip(path: Path, frames: int, width: int = 320, height: int = 256, turned: bool = False) -> Path:
    """A clip of skimage's astronaut, upright; or (`turned`) coded a quarter turn counter-clockwise with
    display metadata that makes a player turn it back 90 degrees clockwise, so it plays upright.
    Written with numpy and PyAV only (never ffray's own rotation code), so it can check that code."""
    import cv2
    from skimage import data

    upright = cv2.resize(np.ascontiguousarray(data.astronaut()[:, :, ::-1]), (width, height),
                         interpolation=cv2.INTER_AREA)
    coded = np.ascontiguousarray(np.rot90(upright, 1)) if turned else upright  # np.rot90 k=1: counter-clockwise
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = coded.shape[1], coded.shape[0], "yuv420p"
        if turned:
            # FFmpeg's rule (fftools get_rotation): shown turned by -(matrix angle); the matrix angle is
            # counter-clockwise, so -90 here = turn 90 degrees clockwise to display
            stream.set_display_rotation(-90)
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(coded, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL a subprocess started with start_new_session=True and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@contextlib.contextmanager
def moto_s3(bucket: str, secret: str = "testing"):
    """An s3fs filesystem on moto's S3 server (127.0.0.1) with `bucket` made, and this process's
    environment pointing botocore at it (AWS_ENDPOINT_URL, credentials) until the block ends."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "AKIAFFRAYTEST", "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        fs = s3fs.S3FileSystem()
        fs.mkdir(bucket)
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def stop_head(proc: subprocess.Popen) -> None:
    """End a `ray start --head --block` started with start_new_session=True: SIGTERM makes it stop the
    processes it started; SIGKILL the group if it does not within 15 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    env.pop("RAY_ADDRESS", None)
    return env


def fault_cli_args(video, source, options: FaceOptions, output, work_dir, chunk_frames: int = 16) -> list[str]:
    """`ffray swap` arguments for the same job that `small_config(chunk_frames=16)` + `options` describe."""
    return [
        "swap", "--source", str(source), "--target", str(video), "--output", str(output),
        "--work-dir", str(work_dir), "--chunk-frames", str(chunk_frames), "--providers", "cpu",
        "--intra-op-threads", "1", "--read-cpus", "0.5", "--detector-cpus", "0.25", "--swapper-cpus", "0.25",
        "--writer-cpus", "0.5", "--num-gpus", "0",
        "--pack", options.pack, "--face-detector-model", options.face_detector_model,
        "--face-landmarker-score", str(options.face_landmarker_score),
        "--face-recognizer-model", options.face_recognizer_model,
        "--face-swapper-model", options.face_swapper_model,
        "--face-selector-mode", options.face_selector_mode,
    ]


@pytest.fixture(scope="session")
def fault_reference(tmp_path_factory):
    """(video, source, options, output of an uninterrupted `ffray swap` run) for the kill/resume tests."""
    from conftest import asset

    video = asset(VIDEO)
    yunet = asset(YUNET)
    source = asset("media/meds-aa-S001-01.jpg")
    folder = tmp_path_factory.mktemp("fault-reference")
    options = contract_face_options(folder, yunet, enhancer=False)
    output = folder / "reference.mp4"
    args = fault_cli_args(video, source, options, output, folder / "work")
    done = subprocess.run(ffray_cmd(*args, "--quiet"), env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return video, source, options, output
