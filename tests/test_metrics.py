"""Prometheus metrics (ffray.pipeline.metrics): record_stage's arithmetic on synthetic batches outside
Ray, and a real job on a local Ray whose node metrics endpoint is scraped for the stage metrics."""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict

import numpy as np
import pytest
from conftest import asset
from pipeline_helpers import VIDEO, YUNET, contract_face_options, free_port, small_config

from ffray.pipeline import metrics


def _batch(n: int = 3, stage: str = "detector") -> dict:
    return {
        "chunk_id": np.array([f"c{i}" for i in range(n)], dtype=object),
        "start": np.array([0, 16, 32][:n], dtype=np.int64),
        "end": np.array([16, 32, 40][:n], dtype=np.int64),
        "error": np.array([""] * n, dtype=object),
        "error_kind": np.array([""] * n, dtype=object),
        "faces": np.array([5, 6, 7][:n], dtype=np.int64),
        f"{stage}_s": np.full(n, 0.5),
        f"{stage}_model_s": np.full(n, 0.25),
        f"{stage}_decode_s": np.array([0.1, 0.1, 0.0][:n]),
        f"{stage}_in": np.array([100, 200, 300][:n], dtype=np.int64),
        f"{stage}_out": np.array([1000, 2000, 3000][:n], dtype=np.int64),
    }


class _Fake:
    def __init__(self):
        self.points: list[tuple[float, dict]] = []

    def inc(self, value=1.0, tags=None):
        assert isinstance(value, float) and value > 0  # what ray.util.metrics.Counter accepts
        self.points.append((value, dict(tags)))

    observe = inc

    def total(self, **labels) -> float:
        return sum(v for v, t in self.points if all(t.get(k) == w for k, w in labels.items()))


@pytest.fixture
def fakes(monkeypatch):
    names = ("frames", "faces", "chunks", "errors", "busy_s", "model_s", "decode_s", "bytes_in", "bytes_out",
             "chunk_s", "cache_hits")
    made = {name: _Fake() for name in names}
    monkeypatch.setattr(metrics, "_metrics", made)
    return made


def test_record_stage_without_ray_is_a_no_op(monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray session is open in this process")
    monkeypatch.setattr(metrics, "_metrics", None)
    metrics.record_stage("detector", _batch(), "job1")
    metrics.record_cache_hit("job1")
    assert metrics._metrics is None  # nothing created: no Ray to export to


def test_record_stage_counts_a_batch(fakes):
    out = _batch()
    out["error"][2], out["error_kind"][2] = "corrupt chunk", "input"
    before = np.array(["", "", ""], dtype=object)
    metrics.record_stage("detector", out, "job1", failed_before=before)
    tags = {"stage": "detector", "job": "job1"}
    assert fakes["chunks"].total(**tags) == 2
    assert fakes["frames"].total(**tags) == 32  # the failed chunk's 8 frames are not counted
    assert fakes["faces"].total(**tags) == 11
    assert fakes["errors"].points == [(1.0, {**tags, "kind": "input"})]
    assert fakes["busy_s"].total(**tags) == pytest.approx(1.5)
    assert fakes["model_s"].total(**tags) == pytest.approx(0.75)
    assert fakes["decode_s"].total(**tags) == pytest.approx(0.2)
    assert fakes["bytes_in"].total(**tags) == 600 and fakes["bytes_out"].total(**tags) == 6000
    assert [v for v, _ in fakes["chunk_s"].points] == [0.5, 0.5, 0.5]
    assert fakes["cache_hits"].points == []

    out["detector_cache_hits"] = np.array([1, 0, 1], dtype=np.int64)
    metrics.record_stage("detector", out, "job1", failed_before=before)
    assert fakes["cache_hits"].points == [(2.0, {"job": "job1"})]


def test_rows_failed_upstream_are_not_counted_again(fakes):
    out = _batch(stage="swapper")
    del out["swapper_decode_s"]  # a stage that does not decode
    out["error"][0], out["error_kind"][0] = "bad model", "model"
    before = np.array(["bad model", "", ""], dtype=object)
    metrics.record_stage("swapper", out, "j", failed_before=before)
    assert fakes["errors"].points == []  # the detector counted it
    assert fakes["chunks"].total() == 2 and len(fakes["chunk_s"].points) == 2
    assert fakes["decode_s"].points == []  # zero is never sent (Counter.inc refuses it)


def test_writer_out_bytes_are_those_of_the_rows_it_returns(fakes):
    from ffray.faces.patches import Patches

    out = _batch(2, stage="writer")
    out["segment"] = np.array(["/a.mp4", "/b.mp4"], dtype=object)
    out["face_box"] = np.zeros((2, 50, 4), dtype=np.float32)
    for name in Patches.COLUMNS:
        out[name] = np.zeros((2, 1000), dtype=np.uint8)
    metrics.record_stage("writer", out, "j")
    kept = sum(v.nbytes for k, v in out.items() if v.dtype != object and k not in Patches.COLUMNS
               and k != "face_box")
    strings = sum(np.asarray(s).nbytes for k in ("chunk_id", "error", "error_kind", "segment") for s in out[k])
    assert fakes["bytes_out"].total() == kept + strings + 2 * 8  # + the `frames` column write_rows adds


def test_bad_input_never_raises(fakes):
    metrics.record_stage("detector", {"chunk_id": np.array(["a"])}, "j")  # no error column
    metrics.record_stage("detector", {}, "j")
    fakes["frames"] = None  # a broken metric object
    metrics.record_stage("detector", _batch(), "j")
    metrics.record_cache_hit("j", hits=0)
    metrics.record_cache_hit("j", hits=2)
    assert fakes["cache_hits"].points == [(2.0, {"job": "j"})]


# --- a real job, scraped ---------------------------------------------------------------------------


def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    """name -> {sorted labels without Ray's own (worker, node, session): value summed over workers}."""
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if "ffray" not in sample.name:
                continue
            labels = tuple(sorted((k, v) for k, v in sample.labels.items()
                                  if k in ("stage", "job", "kind", "le")))
            found[sample.name][labels] += sample.value
    return found


def _value(found, name: str, **labels) -> float:
    return sum(v for key, v in found.get(name, {}).items() if all((k, w) in key for k, w in labels.items()))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_a_job_exports_stage_metrics(tmp_path, tmp_path_factory):
    import ray

    from ffray.pipeline.driver import VideoRequest, run_swap

    video = asset(VIDEO)
    yunet = asset(YUNET)
    source = asset("media/meds-aa-S001-01.jpg")
    port = free_port()
    # a short report interval: workers send their points to the node's agent every second, not every 10
    ray.init(address="local", num_cpus=4, num_gpus=4, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")),
             log_to_driver=False, _metrics_export_port=port, _system_config={"metrics_report_interval_ms": 1000})
    try:
        assert ray.nodes()[0]["MetricsExportPort"] == port
        # per-frame selection: one detector pass, so each stage sees the video once (with tracking the
        # detector-only pass reports as stage "analysis")
        options = contract_face_options(tmp_path / "models", yunet, face_tracking="off")
        config = small_config(tmp_path / "work")
        result = run_swap([VideoRequest(str(video), str(tmp_path / "out.mp4"), (str(source),))], options, config)
        (res,) = result.videos
        assert res.status == "done", res.error
        job = result.job_id

        deadline = time.monotonic() + 30
        while True:
            found = _scrape(port)
            if all(_value(found, "ray_ffray_frames_total", stage=s, job=job) == 90
                   for s in ("detector", "swapper", "enhancer", "writer")) or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        ray.shutdown()

    stages = result.report["stages"]
    for stage in ("detector", "swapper", "enhancer", "writer"):
        assert _value(found, "ray_ffray_frames_total", stage=stage, job=job) == 90, stage
        assert _value(found, "ray_ffray_chunks_total", stage=stage, job=job) == res.chunks
        assert _value(found, "ray_ffray_chunk_seconds_count", stage=stage, job=job) == res.chunks
        assert _value(found, "ray_ffray_bytes_in_total", stage=stage, job=job) > 0
        assert _value(found, "ray_ffray_bytes_out_total", stage=stage, job=job) > 0
        # the same numbers as the run report, which sums the rows' columns on the driver
        assert _value(found, "ray_ffray_busy_seconds_total", stage=stage, job=job) == pytest.approx(
            stages[stage]["busy_s"], rel=1e-3, abs=1e-3)
        assert _value(found, "ray_ffray_faces_total", stage=stage, job=job) == res.faces
    assert res.faces > 90
    assert _value(found, "ray_ffray_model_seconds_total", stage="detector", job=job) == pytest.approx(
        stages["detector"]["model_s"], rel=1e-3, abs=1e-3) and stages["detector"]["model_s"] > 0
    assert _value(found, "ray_ffray_decode_seconds_total", stage="writer", job=job) > 0
    assert _value(found, "ray_ffray_bytes_out_total", stage="writer", job=job) == pytest.approx(
        stages["writer"]["bytes_out_per_frame"] * 90, abs=10)
    assert _value(found, "ray_ffray_errors_total", job=job) == 0
