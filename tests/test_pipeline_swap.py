"""The whole pipeline on a local Ray with 4 fake GPUs (fractional shares really scheduled): real YuNet +
contract swapper/enhancer, the builtin pack, a corrupt video in a batch, a stage worker killed mid-job,
rotation direction and reuse of finished videos across jobs (S3 work dirs: test_pipeline_s3.py)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import asset
from pipeline_helpers import (
    VIDEO,
    YUNET,
    astronaut_clip,
    audio_packets,
    contract_face_options,
    face_boxes,
    finished_chunk_records,
    outside_boxes_mask,
    small_config,
    start_local_ray,
    video_frames,
    wait_for_finished_chunks,
)

from ffray.faces.options import FaceOptions
from ffray.pipeline.driver import VideoRequest, run_swap

# Ray Data warns about its own deprecated DataContext fields whenever a context is copied to workers
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray

    start_local_ray(tmp_path_factory.mktemp("ray"), num_cpus=4, num_gpus=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _check_same_timing_and_audio(source: Path, output: Path):
    src_frames, src_pts = video_frames(source)
    out_frames, out_pts = video_frames(output)
    assert len(out_frames) == len(src_frames)
    assert out_pts == src_pts
    assert audio_packets(output) == audio_packets(source)
    return src_frames, out_frames


class _GpuWatch:
    """Lowest GPU availability seen while the job runs: proof the fractional shares were reserved."""

    def __init__(self):
        import ray

        self.lowest = float(ray.available_resources().get("GPU", 0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import ray

        while not self.stop.is_set():
            self.lowest = min(self.lowest, float(ray.available_resources().get("GPU", 0)))
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("tracking", ["off", "on"])
def test_swap_three_stages_on_fractional_gpus(ray_cluster, models, tmp_path, tracking):
    video = asset(VIDEO)
    yunet = asset(YUNET)
    source = asset("media/meds-aa-S001-01.jpg")
    options = contract_face_options(models, yunet, face_tracking=tracking)
    config = small_config(tmp_path / "work", gpus=(0.25, 0.5, 0.25))
    output = tmp_path / "out.mp4"
    with _GpuWatch() as watch:
        result = run_swap([VideoRequest(str(video), str(output), (str(source),))], options, config)
    (res,) = result.videos
    assert res.status == "done", res.error
    if tracking == "off":  # one actor per face stage at least: 0.25 + 0.5 + 0.25 of the 4 fake GPUs at once
        assert watch.lowest <= 3.0
    else:  # the tracking pass ran the detector; in the swap pass it only cuts patches and holds no GPU
        assert 3.0 < watch.lowest <= 3.25

    src_frames, out_frames = _check_same_timing_and_audio(video, output)
    checked = 0
    for k in (0, 45, 89):
        boxes = face_boxes(src_frames[k], options)
        assert boxes, "YuNet finds the faces of video_01"
        away = outside_boxes_mask(src_frames[k].shape, boxes)
        diff = np.abs(out_frames[k].astype(np.int16) - src_frames[k].astype(np.int16))
        assert diff[away].mean() < 2.5  # re-encoding only
        for x1, y1, x2, y2 in boxes:
            inner = diff[int(y1 + (y2 - y1) * 0.3):int(y2 - (y2 - y1) * 0.3), int(x1 + (x2 - x1) * 0.3):int(x2 - (x2 - x1) * 0.3)]
            if inner.size and inner.mean() > 6:
                checked += 1
    assert checked >= 6  # most faces of the three frames visibly changed

    report = result.report
    stages = report["stages"]
    # face tracking (the default): a detector-only pass ("analysis") over the video, then the swap pass
    # whose detector reads the faces to swap and cuts their patches; off: the detector finds and cuts
    assert set(stages) == {"read", "detector", "swapper", "enhancer", "writer"} | ({"analysis"} if tracking == "on"
                                                                                   else set())
    frame_bytes = 640 * 480 * 3
    for name in ("detector", "swapper", "enhancer", "writer"):
        assert stages[name]["frames"] == 90
        assert stages[name]["batches"] == res.chunks
        assert stages[name]["busy_s"] > 0
    # no frames cross a pool boundary: the chunk's name into the detector, then the five faces' patches
    assert stages["detector"]["bytes_in_per_frame"] < 200
    for name in ("swapper", "enhancer", "writer"):
        assert 0.02 * frame_bytes < stages[name]["bytes_in_per_frame"] < 0.15 * frame_bytes
    if tracking == "on":
        assert stages["analysis"]["model_s"] > 0 and stages["detector"]["model_s"] == 0
        assert stages["detector"]["decode_s"] > 0 and stages["detector"]["cache_hits"] == res.chunks
    else:
        assert stages["detector"]["model_s"] > 0 and stages["detector"]["cache_hits"] == 0
    assert stages["writer"]["bytes_out_per_frame"] < 1000  # only metadata leaves the writer
    assert stages["swapper"]["models"]["inswapper_128"] == report["models"]["inswapper_128"]
    assert report["config"]["swapper"]["num_gpus"] == 0.5
    assert report["totals"]["frames"] == 90 and report["videos"][0]["faces"] == res.faces > 90
    assert report["versions"]["ray"] == "2.60.0"
    assert Path(result.report_path).is_file()


def test_swap_builtin_pack(ray_cluster, tmp_path):
    video = asset("media/h264_aac.mp4")
    source = asset("media/meds-aa-S001-01.jpg")
    options = FaceOptions(pack="builtin", face_selector_mode="many")
    config = small_config(tmp_path / "work", chunk_frames=16, gpus=(0.25, 0.5, 0.25))
    output = tmp_path / "builtin.mp4"
    result = run_swap([VideoRequest(str(video), str(output), (str(source),))], options, config)
    (res,) = result.videos
    assert res.status == "done", res.error
    assert res.faces > 0
    src_frames, out_frames = _check_same_timing_and_audio(video, output)
    k = 15
    diff = np.abs(out_frames[k].astype(np.int16) - src_frames[k].astype(np.int16)).max(axis=2)
    changed = diff > 40
    assert changed.sum() > 200  # a face was pasted
    ys, xs = np.nonzero(changed)
    boxes = face_boxes(src_frames[k], options)
    assert boxes
    away = outside_boxes_mask(src_frames[k].shape, boxes, margin=0.6)
    assert np.abs(out_frames[k].astype(np.int16) - src_frames[k].astype(np.int16))[away].mean() < 2.5

    # reference mode (the default): only the person of frame 0's first face is swapped, in every frame
    reference = run_swap([VideoRequest(str(video), str(tmp_path / "reference.mp4"), (str(source),))],
                         FaceOptions(pack="builtin"), config)
    (ref,) = reference.videos
    assert ref.status == "done", ref.error
    assert 0.7 * len(src_frames) <= ref.faces <= len(src_frames) < res.faces


def test_corrupt_video_fails_alone_in_a_batch(ray_cluster, models, tmp_path):
    from media_clips import make_clip

    yunet = asset(YUNET)
    source = asset("media/meds-aa-S001-01.jpg")
    good = make_clip(tmp_path / "good.mp4", frames=64, width=160, height=120, gop=16, audio="aac")
    bad = tmp_path / "bad.mp4"
    data = bytearray(good.read_bytes())
    import av

    with av.open(str(good)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    for pos, size in packets[32:40]:  # zero the middle of the video data; the index stays intact
        data[pos:pos + size] = bytes(size)
    bad.write_bytes(bytes(data))
    options = contract_face_options(models, yunet, enhancer=False)
    config = small_config(tmp_path / "work", chunk_frames=16)
    outs = [tmp_path / "good-out.mp4", tmp_path / "bad-out.mp4"]
    result = run_swap([VideoRequest(str(good), str(outs[0]), (str(source),)),
                       VideoRequest(str(bad), str(outs[1]), (str(source),))], options, config)
    ok, failed = result.videos
    assert ok.status == "done" and len(video_frames(outs[0])[0]) == 64
    assert failed.status == "failed" and failed.error_kind == "input"
    assert str(bad) in failed.error and "corrupt" in failed.error and "chunk" in failed.error
    assert not outs[1].exists()  # nothing half-written at the destination
    assert result.report["totals"]["failed"] == 1 and result.report["videos"][1]["error"] == failed.error


def test_an_actor_that_cannot_start_fails_its_chunks_not_the_dataset(ray_cluster, models, tmp_path):
    """A model that the driver checked but a worker cannot load (a path on the driver's node only): every
    chunk comes back as an error row naming the stage and the reason; the dataset itself finishes."""
    import dataclasses

    from media_clips import make_clip

    from ffray.pipeline.driver import build_dataset, prepare_job

    clip = make_clip(tmp_path / "clip.mp4", frames=32, width=160, height=120, gop=16)
    options = contract_face_options(models, asset(YUNET), enhancer=False)
    config = small_config(tmp_path / "work", chunk_frames=16)
    job = prepare_job([VideoRequest(str(clip), str(tmp_path / "out.mp4"), (str(asset("media/meds-aa-S001-01.jpg")),))],
                      options, config)
    elsewhere = tmp_path / "on-the-driver-only.onnx"
    table = dataclasses.replace(job.table, face_options={**job.table.face_options,
                                                         "face_swapper_model": f"inswapper_128={elsewhere}"})
    rows = list(build_dataset(job.tasks, table, config, with_enhancer=False).iter_rows())
    assert len(rows) == len(job.tasks) == 2
    for row in rows:
        assert row["error"].startswith("swapper could not start on ") and str(elsewhere) in row["error"]
        assert row["error_kind"] == "model" and row["segment"] == ""


def _stage_worker_pids(name: str) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if name in cmd and "ray::" in cmd:
            pids.append(proc.info["pid"])
    return pids


def test_stage_worker_killed_mid_job_gives_identical_output(ray_cluster, models, tmp_path, fault_reference):
    video, source, options, reference = fault_reference
    config = small_config(tmp_path / "work", chunk_frames=16)
    output = tmp_path / "killed.mp4"
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault(
        "result", run_swap([VideoRequest(str(video), str(output), (str(source),))], options, config)))
    runner.start()
    try:
        wait_for_finished_chunks(tmp_path / "work", 1)
        victims = _stage_worker_pids("FaceSwapperStage")
        assert victims, "the swapper actor process is running"
        for pid in victims:
            psutil.Process(pid).send_signal(signal.SIGKILL)
    finally:
        runner.join(timeout=600)
    (res,) = outcome["result"].videos
    assert res.status == "done", res.error
    assert len(finished_chunk_records(tmp_path / "work")) == res.chunks
    assert outcome["result"].report["totals"]["chunks_processed_this_run"] == res.chunks  # none twice
    assert output.read_bytes() == reference.read_bytes()
    assert not any(p in _stage_worker_pids("FaceSwapperStage") for p in victims)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_rotated_video_is_swapped_the_right_way_up(ray_cluster, tmp_path):
    """A clip coded sideways with display rotation must come out as the upright clip does, once shown
    the way a player shows it; a stage that turned frames the wrong way (a 180 degree mistake) would
    find no face or swap it upside down."""
    from ffray.media import probe

    source = asset("media/meds-aa-S001-01.jpg")
    upright = astronaut_clip(tmp_path / "upright.mp4", 10)
    turned = astronaut_clip(tmp_path / "turned.mp4", 10, turned=True)
    assert probe(str(turned)).rotation == 90  # clockwise degrees to display, as ffray.media reports it
    # dlib's HOG: it finds the face upright only (YuNet finds it sideways too, which proves nothing here)
    options = FaceOptions(pack="builtin", face_selector_mode="one", face_detector_model="hog")
    config = small_config(tmp_path / "work", chunk_frames=10)
    outs = [tmp_path / "upright-out.mp4", tmp_path / "turned-out.mp4"]
    result = run_swap([VideoRequest(str(upright), str(outs[0]), (str(source),)),
                       VideoRequest(str(turned), str(outs[1]), (str(source),))], options, config)
    a, b = result.videos
    assert a.status == b.status == "done", (a.error, b.error)
    assert a.faces == b.faces == 10
    info = probe(str(outs[1]))
    assert info.rotation == 90 and info.frames == 10  # the rotation is left to the player, as in the source

    src_up, _ = video_frames(upright)
    src_turned, _ = video_frames(turned)
    out_up, _ = video_frames(outs[0])
    out_turned, _ = video_frames(outs[1])
    assert out_turned[0].shape == src_turned[0].shape == (320, 256, 3)  # still coded sideways
    (box,) = face_boxes(src_up[5], options)
    assert face_boxes(src_turned[5], options) == []  # as coded the face is sideways: the stages had to turn it
    x1, y1, x2, y2 = (int(v) for v in box)
    for k in (0, 5, 9):
        shown = np.rot90(out_turned[k], -1)  # what a player shows: 90 degrees clockwise
        swapped = np.abs(out_up[k].astype(np.int16) - src_up[k].astype(np.int16))[y1:y2, x1:x2].mean()
        assert swapped > 10  # the swap changed the face
        assert _psnr(shown[y1:y2, x1:x2], out_up[k][y1:y2, x1:x2]) > 30  # the same face, the same way up
        assert _psnr(shown, out_up[k]) > 30


def test_later_batch_reuses_finished_videos(ray_cluster, models, tmp_path):
    """Finished chunks are kept per video (content + settings), not per job: a bigger batch that
    contains videos already done processes only the new one."""
    from media_clips import make_clip

    yunet = asset(YUNET)
    source = asset("media/meds-aa-S001-01.jpg")
    clips = [make_clip(tmp_path / f"clip{i}.mp4", frames=32, width=160 - 16 * i, height=120, gop=16, audio="aac")
             for i in range(3)]
    options = contract_face_options(models, yunet, enhancer=False)
    config = small_config(tmp_path / "work", chunk_frames=16)

    def requests(n, tag):
        return [VideoRequest(str(c), str(tmp_path / f"{tag}-{c.stem}.mp4"), (str(source),)) for c in clips[:n]]

    first = run_swap(requests(2, "first"), options, config)
    assert [v.status for v in first.videos] == ["done"] * 2
    assert first.report["totals"]["chunks_processed_this_run"] == 4
    segments = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "work").glob("videos/*/segments/*")}
    assert len(segments) == 4

    second = run_swap(requests(3, "second"), options, config)
    assert [v.status for v in second.videos] == ["done"] * 3
    assert second.job_id != first.job_id
    assert [v.resumed_chunks for v in second.videos] == [2, 2, 0]
    assert second.report["totals"]["chunks_processed_this_run"] == 2  # only the new video's chunks
    assert [v.video_key for v in second.videos[:2]] == [v.video_key for v in first.videos]
    for path, stamp in segments.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp  # not re-encoded
    for clip in clips[:2]:
        assert (tmp_path / f"second-{clip.stem}.mp4").read_bytes() == (tmp_path / f"first-{clip.stem}.mp4").read_bytes()
    assert len(video_frames(tmp_path / f"second-{clips[2].stem}.mp4")[0]) == 32
    assert len(finished_chunk_records(tmp_path / "work")) == 6
    # both jobs keep their own report
    assert len(list((tmp_path / "work").glob("jobs/*/report.json"))) == 2


def test_source_yuv_outside_faces_is_the_decoded_source(ray_cluster, models, tmp_path):
    """Frames are composed in the source's decoded YUV: at lossless quality every sample away from the
    faces is the source's own, bit for bit, and the output keeps the source's colour tags. With
    --convert-whole-frames (FaceFusion's way: BGR and back, written BT.709) those samples move."""
    import av

    from ffray.media import probe

    video = asset(VIDEO)
    source = asset("media/meds-aa-S001-01.jpg")
    options = contract_face_options(models, asset(YUNET), enhancer=False)

    def yuv_frames(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray() for f in c.decode(video=0)]

    src = yuv_frames(video)
    outputs = {}
    for source_yuv in (True, False):
        output = tmp_path / f"out-{source_yuv}.mp4"
        config = small_config(tmp_path / f"work-{source_yuv}", chunk_frames=32, quality=100, source_yuv=source_yuv)
        (res,) = run_swap([VideoRequest(str(video), str(output), (str(source),))], options, config).videos
        assert res.status == "done", res.error
        outputs[source_yuv] = yuv_frames(output)
    bgr_frames, _ = video_frames(video)
    for k in (0, 45, 89):
        boxes = face_boxes(bgr_frames[k], options)
        away = outside_boxes_mask(bgr_frames[k].shape, boxes, margin=1.0)
        luma_src, luma_yuv, luma_bgr = (f[k][:480] for f in (src, outputs[True], outputs[False]))
        assert np.array_equal(luma_yuv[away], luma_src[away])
        assert not np.array_equal(luma_bgr[away], luma_src[away])  # the colour round trip moves them
        assert not np.array_equal(luma_yuv, luma_src)  # the faces were swapped
    same = np.mean([np.mean(a == b) for a, b in zip(outputs[True], src, strict=True)])
    assert same > 0.7
    src_colour, out_colour = probe(str(video)).color, probe(str(tmp_path / "out-True.mp4")).color
    assert {k: out_colour[k] for k in ("space", "primaries", "trc")} == {k: src_colour[k] for k in ("space", "primaries", "trc")}
    assert probe(str(tmp_path / "out-False.mp4")).color["space"] == "bt709"
