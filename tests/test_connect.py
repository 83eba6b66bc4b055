"""Joining a Ray cluster: a dead address, a cluster that wants a token, and a wrong token each end in
one line and exit 2 within the connect timeout, instead of Ray's endless retries. The token cluster is
a real `ray start --head --block` with token authentication on free ports, stopped by ending the
processes this test started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import asset
from media_clips import make_clip
from pipeline_helpers import ffray_cmd, free_port, run_env, stop_head

from ffray.errors import InputError
from ffray.pipeline.connect import check_gcs, gcs_address

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("address, message", [
    ("http://head:8265", "job submission address"),
    ("head", "expected HOST:PORT"),
    ("head:port", "expected HOST:PORT"),
])
def test_malformed_addresses_are_refused(address, message):
    with pytest.raises(InputError, match=message):
        gcs_address(address)


def _swap(tmp_path: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    clip = tmp_path / "clip.mp4"
    if not clip.exists():
        make_clip(clip, frames=16, width=96, height=64, gop=8)
    source = asset("media/meds-aa-S001-01.jpg")
    cmd = ffray_cmd("swap", "-s", str(source), "-t", str(clip), "-o", str(tmp_path / "out.mp4"),
                    "--work-dir", str(tmp_path / "work"), "--chunk-frames", "8", "--face-selector-mode", "many",
                    "--quiet", *extra)
    return subprocess.run(cmd, env=env or run_env(), capture_output=True, text=True, timeout=300)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("ffray: error: "), done.stderr[-3000:]
    return lines[0]


def test_nothing_listening_is_one_line_and_exit_2(tmp_path):
    port = free_port()  # bound and released: nothing listens there
    done = _swap(tmp_path, "--address", f"127.0.0.1:{port}", "--connect-timeout", "3")
    assert done.returncode == 2
    line = _one_error_line(done)
    assert f"127.0.0.1:{port}" in line and "no Ray cluster answered" in line
    assert not (tmp_path / "out.mp4").exists()


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """GCS address of a real head node that requires token TOKEN."""
    temp = tmp_path_factory.mktemp("ray-token")
    port = free_port()
    env = run_env()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
           "--include-dashboard=false", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
           "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats"]
    log = open(temp / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # up when it answers the right token
            assert proc.poll() is None, (temp / "head.log").read_text()[-3000:]
            try:
                saved = os.environ.get("RAY_AUTH_TOKEN")
                os.environ["RAY_AUTH_TOKEN"] = TOKEN
                check_gcs(address, address, time.monotonic() + 5)
                break
            except InputError:
                if time.monotonic() > deadline:
                    raise
            finally:
                if saved is None:
                    os.environ.pop("RAY_AUTH_TOKEN", None)
                else:
                    os.environ["RAY_AUTH_TOKEN"] = saved
        yield address
    finally:
        stop_head(proc)
        log.close()


def _no_token_env(tmp_path: Path) -> dict[str, str]:
    env = run_env()
    env["HOME"] = str(tmp_path / "home")  # no ~/.ray/auth_token from a local cluster of this machine
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(key, None)
    return env


def test_token_cluster_without_token_says_how(token_head, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    with pytest.raises(InputError, match="requires token authentication; set RAY_AUTH_TOKEN"):
        check_gcs(token_head, token_head, time.monotonic() + 10)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "f" * 32)
    with pytest.raises(InputError, match="does not accept the token in RAY_AUTH_TOKEN"):
        check_gcs(token_head, token_head, time.monotonic() + 10)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert check_gcs(token_head, token_head, time.monotonic() + 10) is True  # accepted from the file

    done = _swap(tmp_path, "--address", token_head, env=_no_token_env(tmp_path))
    assert done.returncode == 2
    line = _one_error_line(done)
    assert token_head in line and "RAY_AUTH_TOKEN" in line


def test_runs_from_a_folder_that_holds_a_checkout_named_ffray(tmp_path):
    """Ray puts the driver's working directory first on every worker's sys.path: from the parent of a
    checkout called `ffray`, workers imported that folder (a namespace package) instead of the installed
    ffray and failed with `cannot import name '__version__'`."""
    checkout = tmp_path / "ffray"
    (checkout / "ffray").mkdir(parents=True)
    (checkout / "README.md").write_text("a checkout\n")
    clip = make_clip(tmp_path / "clip.mp4", frames=16, width=96, height=64, gop=8)
    env = run_env()
    env.pop("PYTHONPATH")  # the installed package only, as a user's shell has it
    script = Path(sys.executable).parent / "ffray"  # not `python -m`, which would put the cwd first here too
    done = subprocess.run([str(script), "swap", "-s", str(asset("media/meds-aa-S001-01.jpg")), "-t", clip.name,
                           "-o", "out.mp4", "--work-dir", "work", "--chunk-frames", "8", "--num-gpus", "0",
                           "--face-selector-mode", "many", "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and (tmp_path / "out.mp4").stat().st_size > 0
