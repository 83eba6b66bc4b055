"""The template cache: a second job on the same target with another source reuses the first job's face
analysis (no detector model time) and gives the very output a job without the cache gives; a damaged
entry is ignored and rebuilt; `ffray analyse` warms a target ahead of time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import asset
from pipeline_helpers import (
    VIDEO,
    YUNET,
    contract_face_options,
    ffray_cmd,
    run_env,
    small_config,
    start_local_ray,
)

from ffray.pipeline.driver import VideoRequest, run_swap

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray

    start_local_ray(tmp_path_factory.mktemp("ray"), num_cpus=4, num_gpus=4)
    yield
    ray.shutdown()


def _swap(tmp_path: Path, work: Path, source: str, name: str, options, **config):
    output = tmp_path / f"{name}.mp4"
    result = run_swap([VideoRequest(str(asset(VIDEO)), str(output), (str(asset(source)),))], options,
                      small_config(work, chunk_frames=30, **config))
    (res,) = result.videos
    assert res.status == "done", res.error
    return output, result.report["stages"]["detector"]


def test_second_source_reuses_the_template_analysis(ray_cluster, tmp_path):
    options = contract_face_options(tmp_path / "models", asset(YUNET), enhancer=False, face_selector_mode="reference",
                                    face_tracking="off")
    work = tmp_path / "work"
    _, first = _swap(tmp_path, work, "media/meds-aa-S001-01.jpg", "first", options)
    assert first["cache_hits"] == 0 and first["model_s"] > 0
    entries = sorted((work / "analysis").glob("*/*.npz"))
    assert len(entries) == 3  # one per chunk

    second, again = _swap(tmp_path, work, "media/meds-aa-S029-01.jpg", "second", options)
    assert again["cache_hits"] == 3 and again["model_s"] == 0  # reference mode: embeddings were cached too
    fresh, uncached = _swap(tmp_path, tmp_path / "work-fresh", "media/meds-aa-S029-01.jpg", "fresh", options,
                            template_cache=False)
    assert uncached["cache_hits"] == 0
    assert second.read_bytes() == fresh.read_bytes()

    # a damaged entry is not trusted: that chunk is analysed again and its entry rewritten
    entries[1].write_bytes(entries[1].read_bytes()[:-7])
    assert _swap(tmp_path, work, "media/meds-af-S419-01.jpg", "third", options)[1]["cache_hits"] == 2
    assert _swap(tmp_path, work, "media/meds-aa-S001-02.jpg", "fourth", options)[1]["cache_hits"] == 3


def test_analyse_warms_a_template(tmp_path):
    models = tmp_path / "models"
    options = contract_face_options(models, asset(YUNET), enhancer=False, face_selector_mode="one",
                                    face_tracking="off")
    work = tmp_path / "work"
    face_args = ["--pack", "facefusion", "--face-detector-model", options.face_detector_model,
                 "--face-landmarker-score", "0", "--face-recognizer-model", options.face_recognizer_model,
                 "--face-selector-mode", "one", "--face-tracking", "off"]
    common = ["--work-dir", str(work), "--chunk-frames", "30", "--providers", "cpu", "--num-gpus", "0",
              "--intra-op-threads", "1", "--read-cpus", "0.5", "--detector-cpus", "0.25", "--quiet"]
    done = subprocess.run(ffray_cmd("analyse", str(asset(VIDEO)), *common, *face_args), env=run_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((work / "analysis").glob("*/*.npz"))) == 3
    output = tmp_path / "out.mp4"
    done = subprocess.run(ffray_cmd("swap", "--source", str(asset("media/meds-aa-S001-01.jpg")), "--target",
                                    str(asset(VIDEO)), "--output", str(output), *common, *face_args,
                                    "--face-swapper-model", options.face_swapper_model, "--swapper-cpus", "0.25",
                                    "--writer-cpus", "0.5"),
                          env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    report = json.loads(next(work.glob("jobs/*/report.json")).read_text())
    assert report["stages"]["detector"]["cache_hits"] == 3
