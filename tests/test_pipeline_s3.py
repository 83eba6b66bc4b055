"""Target, work dir and output on S3 (moto's server on 127.0.0.1), and no credential anywhere Ray or
ffray writes text.

This module's Ray is started after the storage environment is set, as on a real cluster where the
environment (or an instance role) is set where `ray start` runs: ffray forwards no variable to its
workers, so an S3 job's workers are the same processes as a local job's (the same environment, the
same bytes out), and nothing secret reaches Ray's runtime_env, its logs or its state API."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from conftest import asset
from pipeline_helpers import YUNET, contract_face_options, free_port, moto_s3, small_config

from ffray.pipeline.driver import VideoRequest, run_swap

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]

SECRET = "ffraySecret-7Q2xWv9PLANTED"  # the planted AWS secret key: moto accepts any credentials
URL_TOKEN = "ffrayUrlToken-3kD8PLANTED"  # a password inside a model-source URL


@pytest.fixture(scope="module")
def s3_ray(tmp_path_factory):
    """(s3fs filesystem, Ray temp dir, dashboard URL for the state API): moto on 127.0.0.1 and a local
    Ray (with its dashboard) started with the storage environment already set."""
    import ray

    temp = tmp_path_factory.mktemp("ray")
    with moto_s3("ffray", secret=SECRET) as fs:
        context = ray.init(address="local", num_cpus=4, num_gpus=4, include_dashboard=True,
                           dashboard_port=free_port(), _temp_dir=str(temp), log_to_driver=False)
        try:
            yield fs, temp, f"http://{context.dashboard_url}"
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _packets(data: bytes, folder: Path) -> dict[str, list[tuple]]:
    path = folder / f"probe-{len(data)}.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        return {s.type + str(s.index): [(p.pts, p.size, bytes(p)[:16].hex()) for p in c.demux(s) if p.size]
                for s in c.streams}


def _difference(a: bytes, b: bytes, folder: Path) -> str:
    """Where two outputs of the same job differ, by stream and packet (for the assertion message)."""
    if a == b:
        return "same"
    pa, pb = _packets(a, folder), _packets(b, folder)
    for stream in sorted(set(pa) | set(pb)):
        x, y = pa.get(stream, []), pb.get(stream, [])
        for i, (p, q) in enumerate(zip(x, y, strict=False)):
            if p != q:
                return f"{stream}: packet {i} differs ({p[:2]} vs {q[:2]}); packets {len(x)} vs {len(y)}"
        if len(x) != len(y):
            return f"{stream}: {len(x)} vs {len(y)} packets"
    return f"same packets, container bytes differ ({len(a)} vs {len(b)} bytes)"


def test_work_dir_target_and_output_on_s3(s3_ray, models, tmp_path):
    from media_clips import make_clip

    s3, _, _ = s3_ray
    yunet = asset(YUNET)
    source = asset("media/meds-aa-S001-01.jpg")
    clip = make_clip(tmp_path / "clip.mp4", frames=48, width=160, height=120, gop=16, audio="aac")
    s3.put_file(str(clip), "ffray/in/clip.mp4")
    assert s3.cat_file("ffray/in/clip.mp4") == clip.read_bytes()
    options = contract_face_options(models, yunet, enhancer=False)
    local = run_swap([VideoRequest(str(clip), str(tmp_path / "local.mp4"), (str(source),))], options,
                     small_config(tmp_path / "work", chunk_frames=16))
    assert local.videos[0].status == "done", local.videos[0].error
    expected = (tmp_path / "local.mp4").read_bytes()

    request = VideoRequest("s3://ffray/in/clip.mp4", "s3://ffray/out/clip.mp4", (str(source),))
    config = small_config("s3://ffray/work", chunk_frames=16)
    first = run_swap([request], options, config)
    (res,) = first.videos
    assert res.status == "done", res.error
    assert res.video_key == local.videos[0].video_key  # same content, sources and settings: same identity
    got = s3.cat_file("ffray/out/clip.mp4")
    assert got == expected, _difference(got, expected, tmp_path)  # the storage backend changes no byte
    assert first.report["totals"]["chunks_processed_this_run"] == 3
    assert len(s3.ls(f"ffray/work/videos/{res.video_key}/done")) == 3

    rerun = run_swap([request], options, config)  # resumes: every chunk is there and verifies
    assert rerun.videos[0].status == "done" and rerun.videos[0].resumed_chunks == 3
    assert rerun.report["totals"]["chunks_processed_this_run"] == 0

    (lost,) = [p for p in s3.ls(f"ffray/work/videos/{res.video_key}/segments") if "000001-" in p]
    s3.rm(lost)  # a segment gone (lifecycle rule, manual clean-up): only that chunk is done again
    s3.rm("ffray/out/clip.mp4")
    again = run_swap([request], options, config)
    assert again.videos[0].status == "done" and again.videos[0].resumed_chunks == 2
    assert again.report["totals"]["chunks_processed_this_run"] == 1
    got = s3.cat_file("ffray/out/clip.mp4")
    assert got == expected, _difference(got, expected, tmp_path)


def _texts_with(needles: tuple[str, ...], named_texts) -> list[str]:
    return [f"{name}: {needle}" for name, text in named_texts for needle in needles if needle in text]


def test_no_secret_in_ray_logs_state_api_work_dir_or_report(s3_ray, models, tmp_path):
    """A planted AWS secret key (in the environment of the driver and of Ray) and a password in the
    model-source URL: after an S3 job, neither is in any file of Ray's session folder, in the state
    API's actor and task details, in any object of the work dir, or in the report."""
    from media_clips import make_clip
    from ray.util.state import list_actors, list_tasks

    s3, ray_temp, dashboard = s3_ray
    yunet = asset(YUNET)
    source = asset("media/meds-aa-S001-01.jpg")
    clip = make_clip(tmp_path / "clip.mp4", frames=32, width=160, height=120, gop=16, audio="aac")
    s3.put_file(str(clip), "ffray/secret/in.mp4")
    options = contract_face_options(models, yunet, enhancer=False)
    config = small_config("s3://ffray/secret-work", chunk_frames=16,
                          model_source=f"https://ffray-user:{URL_TOKEN}@127.0.0.1:9/models")
    result = run_swap([VideoRequest("s3://ffray/secret/in.mp4", "s3://ffray/secret/out.mp4", (str(source),))],
                      options, config)
    assert result.videos[0].status == "done", result.videos[0].error
    needles = (SECRET, URL_TOKEN)

    texts = []
    for path in Path(ray_temp).rglob("*"):
        if path.is_file() and not path.is_symlink():
            texts.append((str(path), path.read_bytes().decode("latin-1")))
    assert sum(name.endswith((".log", ".out", ".err")) for name, _ in texts) > 10  # Ray's logs were read
    actors = list_actors(address=dashboard, detail=True, limit=10000, raise_on_missing_output=False)
    tasks = list_tasks(address=dashboard, detail=True, limit=10000, raise_on_missing_output=False)
    assert actors and tasks
    texts.append(("state API actors", json.dumps([dict(a.__dict__) for a in actors], default=str)))
    texts.append(("state API tasks", json.dumps([dict(t.__dict__) for t in tasks], default=str)))
    for key in s3.find("ffray/secret-work"):
        texts.append((key, s3.cat_file(key).decode("latin-1")))
    texts.append(("report", json.dumps(result.report, default=str)))
    assert any(name.endswith("report.json") for name, _ in texts)
    assert _texts_with(needles, texts) == []
    assert "https://***@127.0.0.1:9/models" in json.dumps(result.report)  # redacted, not dropped
