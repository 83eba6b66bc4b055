"""`jobs/` entrypoints through the Ray Jobs SDK against a real local cluster that this test starts with
`ray start --head --block` on free ports (its own temp dir) and stops by ending the processes it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_helpers import REPO, free_port, run_env, stop_head, video_frames

# Ray Data warns about its own deprecated DataContext fields whenever a context is copied to workers
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    from ray.job_submission import JobSubmissionClient

    temp = tmp_path_factory.mktemp("ray-head")
    dashboard = free_port()
    env = run_env()
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster; jobs inherit the head's env
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={free_port()}",
           f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--metrics-export-port={free_port()}", "--num-cpus=8", "--num-gpus=2", f"--temp-dir={temp}",
           "--disable-usage-stats"]
    log = open(temp / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        client = None
        deadline = time.monotonic() + 180
        while client is None:
            assert proc.poll() is None, (temp / "head.log").read_text()[-3000:]
            try:
                client = JobSubmissionClient(f"http://127.0.0.1:{dashboard}")
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield client
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        stop_head(proc)
        log.close()


def _wait(client, job_id: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {status} after {timeout}s")


STAGE_FLAGS = "--chunk-frames 16 --read-cpus 0.5 --detector-cpus 0.5 --swapper-cpus 0.5 --writer-cpus 0.5"


def test_swap_video_and_swap_batch_jobs(head, tmp_path):
    from ray.job_submission import JobStatus

    from ffray.cli.swap import make_demo_inputs

    clip, face = make_demo_inputs(tmp_path / "inputs")
    work = tmp_path / "work"
    runtime_env = {"working_dir": str(REPO), "excludes": [".venv", ".git", "*.onnx", "*.mp4"]}

    one = tmp_path / "one.mp4"
    job = head.submit_job(
        entrypoint=f"{sys.executable} jobs/swap_video.py --source {face} --target {clip} --output {one} "
                   f"--work-dir {work} {STAGE_FLAGS}",
        runtime_env=runtime_env, submission_id="ffray-test-video")
    status = _wait(head, job)
    logs = head.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert len(video_frames(one)[0]) == len(video_frames(clip)[0])
    # the job ran on this cluster's fake GPUs: the auto shares were taken
    report = json.loads(next(work.glob("jobs/*/report.json")).read_text())
    assert report["config"]["swapper"]["num_gpus"] == 0.5

    manifest = tmp_path / "batch.jsonl"
    manifest.write_text(
        json.dumps({"source": face, "target": clip, "output": str(tmp_path / "two.mp4"),
                    "options": {"face_selector_mode": "one"}}) + "\n"
        + json.dumps({"source": [face], "target": str(tmp_path / "nope.mp4"), "output": str(tmp_path / "x.mp4")})
        + "\n")
    job = head.submit_job(entrypoint=f"{sys.executable} jobs/swap_batch.py {manifest} --work-dir {work} "
                                     f"{STAGE_FLAGS} --quiet",
                          runtime_env=runtime_env, submission_id="ffray-test-batch")
    status = _wait(head, job)
    logs = head.get_job_logs(job)
    assert status == JobStatus.FAILED  # exit code 1: one row failed ...
    assert "FAILED line 2: " in logs and "nope.mp4" in logs
    assert (tmp_path / "two.mp4").is_file()  # ... and the other one completed
    assert not (tmp_path / "x.mp4").exists()
