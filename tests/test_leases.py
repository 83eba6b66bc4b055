"""Chunk leases (ffray/pipeline/lease.py): on a local dir and on S3 (moto's server on 127.0.0.1), and two
real `ffray swap` jobs on one work dir that share the chunks instead of both doing all of them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import asset
from pipeline_helpers import (
    YUNET,
    contract_face_options,
    fault_cli_args,
    ffray_cmd,
    moto_s3,
    run_env,
    small_config,
)

from ffray.pipeline.lease import ChunkLeases, Lease

BUCKET = "ffray-leases"


@pytest.fixture(scope="module")
def lease_s3():
    """An s3fs filesystem on moto's server, with the environment that points fsspec at it."""
    with moto_s3(BUCKET, secret="lease-test") as fs:
        yield fs


@pytest.fixture(params=["local", "s3"])
def lease_at(request, tmp_path):
    """A factory of lease URIs on a local dir or on S3."""
    if request.param == "local":
        return lambda name: str(tmp_path / "leases" / f"{name}.json")
    request.getfixturevalue("lease_s3")
    prefix = f"s3://{BUCKET}/{tmp_path.name}/leases"
    return lambda name: f"{prefix}/{name}.json"


def test_acquire_refuse_renew_release(lease_at):
    uri = lease_at("000000-c0")
    a = Lease(uri, "run-a", ttl_s=30)
    assert a.acquire() and a.held
    state = a.holder()
    assert state["run_id"] == "run-a" and state["pid"] == os.getpid() and state["host"]
    assert time.time() + 25 < state["expires"] <= time.time() + 30

    b = Lease(uri, "run-b", ttl_s=30)
    assert not b.acquire() and not b.held  # a live holder's lease is not taken
    assert b.seen.state()["run_id"] == "run-a"

    time.sleep(0.05)
    assert a.renew()
    assert a.holder()["expires"] > state["expires"]
    assert not b.acquire()

    a.release()
    assert a.holder() is None and not a.held
    assert b.acquire() and b.holder()["run_id"] == "run-b"


def test_an_expired_lease_is_taken_over_and_its_old_holder_loses_it(lease_at):
    uri = lease_at("000001-c1")
    dead = Lease(uri, "run-dead", ttl_s=0.5)
    assert dead.acquire()
    late = Lease(uri, "run-late", ttl_s=30)
    assert not late.acquire()
    time.sleep(0.8)  # the holder stopped renewing: its lease expired
    assert late.acquire()
    assert late.holder()["run_id"] == "run-late"
    assert not dead.renew()  # the old holder finds out at its next renewal ...
    dead.release()  # ... and dropping what it no longer holds leaves the new holder's lease alone
    assert late.holder()["run_id"] == "run-late"
    assert late.renew()


def test_a_run_renews_in_the_background_and_drops_all_at_close(lease_at):
    uris = [lease_at(f"00000{i}-c{i}") for i in range(3)]
    leases = ChunkLeases("run-a", ttl_s=0.6)
    assert all(leases.acquire(uri).held for uri in uris)
    time.sleep(1.5)  # well past one TTL: only renewals keep them
    assert not any(Lease(uri, "run-b", ttl_s=30).acquire() for uri in uris)
    leases.release(uris[0])
    assert Lease(uris[0], "run-b", ttl_s=30).holder() is None
    leases.close()
    assert all(Lease(uri, "run-b", ttl_s=30).holder() is None for uri in uris)


def test_a_lease_of_a_dead_process_on_this_host_is_taken_at_once(tmp_path):
    """A rerun after kill -9 on the same machine need not wait for the dead run's leases to expire; a
    holder on another host is judged by its expiry alone."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    here, there = (str(tmp_path / "leases" / f"00000{i}-c{i}.json") for i in range(2))
    assert Lease(here, "run-dead", ttl_s=600, pid=gone.pid).acquire()
    assert Lease(there, "run-far", ttl_s=600, host="another-host", pid=gone.pid).acquire()
    assert Lease(here, "run-b", ttl_s=30).acquire()
    assert not Lease(there, "run-b", ttl_s=30).acquire()


def _race(uri: str, runners: int = 16) -> list[str]:
    """`runners` threads try to take one lease at the same moment; the run ids of those that got it."""
    barrier = threading.Barrier(runners)
    won: list[str] = []

    def run(i: int) -> None:
        lease = Lease(uri, f"run-{i}", ttl_s=30)
        barrier.wait()
        if lease.acquire():
            won.append(lease.run_id)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_threads_racing_for_one_lease_on_a_filesystem_one_wins(tmp_path):
    for round_ in range(5):
        uri = str(tmp_path / "leases" / f"{round_:06d}-new.json")
        (won,) = _race(uri)
        assert Lease(uri, "reader", 30).holder()["run_id"] == won
    # taking over an expired lease races too: one winner, and no stray files left behind
    uri = str(tmp_path / "leases" / "000009-expired.json")
    for round_ in range(5):
        stale = Lease(uri, f"dead-{round_}", ttl_s=0.01)
        Path(uri).unlink(missing_ok=True)
        assert stale.acquire()
        time.sleep(0.05)
        (won,) = _race(uri)
        assert Lease(uri, "reader", 30).holder()["run_id"] == won
    assert sorted(p.name for p in (tmp_path / "leases").iterdir() if "expired" in p.name) == [Path(uri).name]


def test_a_lease_left_half_written_is_taken_after_one_ttl(tmp_path):
    """A holder killed between O_EXCL's create and its write leaves an empty file: it counts as held
    for one TTL from its mtime, then is anyone's."""
    uri = tmp_path / "leases" / "000000-c0.json"
    uri.parent.mkdir()
    uri.write_bytes(b"")
    assert not Lease(str(uri), "run-a", ttl_s=30).acquire()
    old = time.time() - 60
    os.utime(uri, (old, old))
    lease = Lease(str(uri), "run-a", ttl_s=30)
    assert lease.acquire() and lease.holder()["run_id"] == "run-a"


def test_a_waiting_run_reuses_recorded_chunks_and_takes_over_the_rest(tmp_path):
    """Run A claims the chunks first; run B gets none and waits: it reuses the chunk A records (its
    segment hash-checked) and takes over the ones A drops unrecorded when it ends."""
    from ffray.media.chunks import Chunk
    from ffray.pipeline.datasource import ChunkTask
    from ffray.pipeline.ledger import ChunkRecord, VideoLedger
    from ffray.pipeline.storage import write_atomic

    digest = hashlib.sha256(b"segment 0").hexdigest()
    video_dir = str(tmp_path / "videos" / "k")
    tasks = [ChunkTask("k", "clip.mp4", Chunk(id=f"c{i}", index=i, start=16 * i, end=16 * (i + 1), seek_frame=0,
                                              start_pts=0, end_pts=None), 1) for i in range(3)]
    a, b = ChunkLeases("run-a", ttl_s=4), ChunkLeases("run-b", ttl_s=4)  # b looks at leases every 1s
    ledger_a, ledger_b = VideoLedger(video_dir), VideoLedger(video_dir)
    try:
        assert a.claim(tasks, {"k": ledger_a}) == (tasks, [], [])
        ours, reused, others = b.claim(tasks, {"k": ledger_b})
        assert (ours, reused, others) == ([], [], tasks)

        segment = ledger_a.segment_uri(0, "c0", ".mp4")
        write_atomic(segment, b"segment 0")
        ledger_a.append(ChunkRecord("k", "c0", 0, 0, 16, segment, digest, 9, 16, 0, 0.1))
        a.release(ChunkLeases._uri(tasks[0], {"k": ledger_a}))
        threading.Timer(0.5, a.close).start()  # A ends with chunks 1 and 2 unrecorded
        got = []
        taken, still = b.wait(others, {"k": ledger_b}, on_reused=lambda task, rec: got.append((task, rec)))
        assert [(t.chunk.index, r.sha256) for t, r in got] == [(0, digest)]
        assert sorted(t.chunk.index for t in taken + still) == [1, 2] and taken
    finally:
        a.close()
        b.close()
    assert not list((tmp_path / "videos" / "k" / "leases").iterdir())


# --- two real jobs ----------------------------------------------------------------------------------

CHUNKS = 6


@pytest.fixture(scope="module")
def swap_job(tmp_path_factory):
    """(args(output, work_dir, *extra) -> the `ffray swap` command, the clip, its options)."""
    from media_clips import make_clip

    folder = tmp_path_factory.mktemp("lease-job")
    clip = make_clip(folder / "clip.mp4", frames=16 * CHUNKS, width=160, height=120, gop=16, audio="aac")
    source = asset("media/meds-aa-S001-01.jpg")
    options = contract_face_options(folder / "models", asset(YUNET), enhancer=False)

    def args(output: Path, work: Path, *extra: str) -> list[str]:
        return ffray_cmd(*fault_cli_args(clip, source, options, output, work), *extra)

    return args, clip, source, options


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.ray
@pytest.mark.slow
def test_two_jobs_on_one_work_dir_share_the_chunks(tmp_path, swap_job):
    args, *_ = swap_job
    work = tmp_path / "work"
    procs, started = [], time.monotonic()
    for name in ("a", "b"):
        cmd = args(tmp_path / f"{name}.mp4", work, "--quiet", "--report", str(tmp_path / f"{name}.json"))
        procs.append(subprocess.Popen(cmd, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    errors = [p.communicate(timeout=900)[1] for p in procs]
    seconds = time.monotonic() - started
    assert [p.returncode for p in procs] == [0, 0], errors
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    a, b = (_report(tmp_path / f"{n}.json")["totals"] for n in ("a", "b"))
    print(f"two concurrent jobs: {seconds:.1f}s; processed {a['chunks_processed_this_run']} + "
          f"{b['chunks_processed_this_run']}, reused {a['chunks_reused_from_concurrent_job']} + "
          f"{b['chunks_reused_from_concurrent_job']}")
    assert a["chunks_processed_this_run"] + b["chunks_processed_this_run"] == CHUNKS  # no chunk done twice
    for t in (a, b):
        assert t["chunks_processed_this_run"] + t["chunks_reused_from_concurrent_job"] + t["chunks_resumed"] == CHUNKS
    assert not list(work.glob("videos/*/leases/*"))  # every lease dropped


@pytest.mark.ray
@pytest.mark.slow
def test_a_dead_jobs_leases_are_taken_over_when_they_expire(tmp_path, swap_job):
    """Another job holds two chunks' leases, renews them, then dies (stops renewing, drops nothing):
    this job runs the other chunks, waits, takes the two over once they expire and completes."""
    from ffray.pipeline.driver import VideoRequest, prepare_job
    from ffray.pipeline.lease import lease_uri

    args, clip, source, options = swap_job
    work = tmp_path / "work"
    output = tmp_path / "out.mp4"
    job = prepare_job([VideoRequest(str(clip), str(output), (str(source),))], options,
                      small_config(work, chunk_frames=16))  # the key and plan `ffray swap` will find
    ((key, plan),) = job.plans.items()
    held = [lease_uri(job.ledgers[key].video_dir, c.index, c.id) for c in plan[1:5:2]]
    dead = [Lease(uri, "run-dead", ttl_s=2, host="gone", pid=2**22 + 1) for uri in held]
    assert all(lease.acquire() for lease in dead)
    alive = threading.Event()
    alive.set()

    def renew() -> None:
        while alive.is_set():
            for lease in dead:
                lease.renew()
            time.sleep(0.5)

    renewer = threading.Thread(target=renew)
    renewer.start()
    proc = subprocess.Popen(args(output, work, "--report", str(tmp_path / "report.json")), env=run_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        records = work / "videos" / key / "done"
        deadline = time.monotonic() + 600
        while len(list(records.glob("*.json"))) < CHUNKS - len(held):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(3)  # the job now waits for the two held chunks
        assert len(list(records.glob("*.json"))) == CHUNKS - len(held)
    finally:
        alive.clear()  # the holder dies
        renewer.join()
    expired = max(lease.holder()["expires"] for lease in dead)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "waiting" in stderr
    for uri in held:  # run here, after their leases expired
        assert (records / Path(uri).name).stat().st_mtime > expired
    totals = _report(tmp_path / "report.json")["totals"]
    assert totals["chunks_processed_this_run"] == CHUNKS and totals["chunks_reused_from_concurrent_job"] == 0
    assert not list(work.glob("videos/*/leases/*"))
    reference = tmp_path / "reference.mp4"
    done = subprocess.run(args(reference, tmp_path / "work-ref", "--quiet"), env=run_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert output.read_bytes() == reference.read_bytes()
