"""Chunk leases: which run is working on which chunk, so that two jobs on the same video with the same
settings (the same video key, in the same work dir) share the chunks instead of both doing all of them.

    <video_dir>/leases/<chunk_index>-<chunk_id>.json    {"run_id", "host", "pid", "expires", "ttl_s"}

A run takes the lease of each chunk before it submits it; a chunk whose lease another live run holds is
not submitted: the run waits for that chunk's record (ledger.py) and uses it like a resumed chunk. The
holder renews its leases from a background thread every ttl/3, deletes each one when its chunk is
recorded, and all of them when the run ends. A lease whose `expires` has passed (its holder was killed,
its node lost) may be taken over, and so may one whose holder ran on this host (same host name) and
whose process is gone, at once. `expires` is wall-clock time: the hosts' clocks must agree to well
within the TTL.

Taking, renewing and dropping a lease are compare-and-swap operations where the store has them:
- a filesystem (local or shared): taking is os.open(O_CREAT | O_EXCL); renewing, taking over and
  dropping first hard-link the lease to a claim named after the version that was read (os.link is an
  atomic create too: one process wins it), check that what was linked is that version, and only then
  replace the lease (a whole file renamed over it) or delete it;
- S3 (s3fs): a put with If-None-Match: * to take, with If-Match: <ETag> to renew or take over (AWS S3
  and moto honour both; a store that ignores them degrades to the best effort below);
- any other fsspec store: best effort: fsspec's mode="create" (atomic only where that store makes it
  so), then read back after a moment and kept only if it is still ours.

Races can at worst make two runs process the same chunk, which is safe: a segment is written atomically
and is the same bytes whoever writes it, and a record is written whole after its segment. They never
lose a chunk: a chunk is done when its verified record is there, whatever the leases say.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ffray.media.io import local_path, split_uri
from ffray.pipeline.ledger import ChunkRecord, VideoLedger, chunk_name
from ffray.pipeline.storage import join

log = logging.getLogger(__name__)

LEASES = "leases"
SETTLE_S = 0.5  # best-effort stores: how long a write must stay ours before it counts as taken
CLAIM_STALE_S = 60.0  # a filesystem claim lives microseconds; one this old was left by a killed run
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def lease_uri(video_dir: str, chunk_index: int, chunk_id: str) -> str:
    return join(video_dir, LEASES, chunk_name(chunk_index, chunk_id) + ".json")


@dataclass(frozen=True)
class Found:
    """A lease as read from the store: its bytes, the version to compare-and-swap against, its mtime."""

    data: bytes
    version: Any
    modified: float

    def state(self) -> dict | None:
        try:
            state = json.loads(self.data)
            return state if isinstance(state, dict) and "expires" in state else None
        except ValueError:
            return None  # being written (O_EXCL creates, then writes) or not ours to read

    def expires(self, ttl_s: float) -> float:
        state = self.state()
        # unreadable: give it one TTL from its last write, then it is anyone's
        return float(state["expires"]) if state else self.modified + ttl_s

    def holder_gone(self) -> bool:
        """Its holder ran on this host and its process is gone (a rerun after kill -9 need not wait
        for the expiry). A holder elsewhere is judged by its expiry alone."""
        state = self.state()
        if not state or state.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(state["pid"]), 0)
        except ProcessLookupError:
            return True
        except (OSError, ValueError, KeyError):  # someone else's process (EPERM), or no pid
            return False
        return False


class _FileStore:
    """A lease file on a local or shared filesystem; its version is its bytes."""

    def __init__(self, path: str):
        self.path = path

    def create(self, data: bytes) -> bytes | None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return data

    def read(self) -> Found | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
                return Found(data, data, os.fstat(f.fileno()).st_mtime)
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _claim(self, version: bytes) -> Iterator[bool]:
        """True while this process alone may change the lease from `version`: it hard-linked the lease
        to a name made from `version` (os.link fails for everyone else, however many try) and what it
        linked is `version`. The lease is never missing meanwhile, so no plain create can slip in."""
        claim = f"{self.path}.{hashlib.sha256(version).hexdigest()[:16]}.claim"
        try:
            os.link(self.path, claim)
        except FileNotFoundError:
            yield False
            return
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(claim).st_ctime < time.time() - CLAIM_STALE_S:
                    os.unlink(claim)
            yield False
            return
        except OSError:  # a filesystem without hard links: best effort, compare then write
            found = self.read()
            yield found is not None and found.data == version
            return
        try:
            with open(claim, "rb") as f:
                mine = f.read() == version
            yield mine
        finally:
            os.unlink(claim)

    def replace(self, data: bytes, version: bytes) -> bytes | None:
        with self._claim(version) as ours:
            if not ours:
                return None
            tmp = f"{os.path.dirname(self.path)}/.{os.path.basename(self.path)}.{uuid.uuid4().hex}.part"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)  # whole, in one step
            return data

    def delete(self, version: bytes) -> None:
        with self._claim(version) as ours:
            if ours:
                os.unlink(self.path)


class _ObjectStore:
    """A lease object on S3 (version: its ETag, conditional puts) or any other fsspec store (version:
    its bytes, best effort)."""

    def __init__(self, uri: str):
        self.fs, self.path = split_uri(uri)
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        self.conditional = bool(protocols & {"s3", "s3a"})

    def _info(self) -> dict:
        self.fs.invalidate_cache(self.path)
        return self.fs.info(self.path)

    def read(self) -> Found | None:
        for _ in range(5):
            try:
                before = self._info()
                data = self.fs.cat_file(self.path)
                after = self._info()
            except FileNotFoundError:
                return None
            if before.get("ETag") == after.get("ETag"):  # the bytes are those of this version
                modified = after.get("LastModified") or after.get("mtime") or time.time()
                modified = modified.timestamp() if hasattr(modified, "timestamp") else float(modified)
                return Found(data, after.get("ETag") if self.conditional else data, modified)
        return Found(b"", None, time.time())  # rewritten under us again and again: someone holds it

    def _kept(self, data: bytes, out: Any) -> Any:
        if self.conditional and isinstance(out, dict) and out.get("ETag"):
            return out["ETag"]
        time.sleep(SETTLE_S)  # no conditional write: ours only if it is still ours a moment later
        found = self.read()
        return found.version if found is not None and found.data == data else None

    def create(self, data: bytes) -> Any:
        try:
            out = self.fs.pipe_file(self.path, data, mode="create")
        except FileExistsError:
            return None
        return self._kept(data, out)

    def replace(self, data: bytes, version: Any) -> Any:
        if version is None:
            return None
        if self.conditional:
            try:
                out = self.fs.pipe_file(self.path, data, IfMatch=version)
            except FileNotFoundError:
                return None
            except OSError as exc:
                code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
                if str(code) in _CONFLICT_CODES:
                    return None
                raise
            return self._kept(data, out)
        found = self.read()
        if found is None or found.version != version:
            return None
        return self._kept(data, self.fs.pipe_file(self.path, data))

    def delete(self, version: Any) -> None:
        found = self.read()
        if found is not None and found.version == version:  # a moment's race here costs a chunk run twice
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)


def _store(uri: str) -> _FileStore | _ObjectStore:
    path = local_path(uri)
    return _FileStore(path) if path is not None else _ObjectStore(uri)


class Lease:
    """One chunk's lease as seen by one run (`run_id`): take it, renew it, drop it. `seen` is the other
    holder's lease when `acquire` was refused."""

    def __init__(self, uri: str, run_id: str, ttl_s: float, host: str | None = None, pid: int | None = None):
        self.uri = uri
        self.run_id = run_id
        self.ttl_s = float(ttl_s)
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.seen: Found | None = None
        self.released = False
        self._store = _store(uri)
        self._version: Any = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._version is not None

    def _data(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "host": self.host, "pid": self.pid, "ttl_s": self.ttl_s,
                           "expires": round(time.time() + self.ttl_s, 3)}, sort_keys=True).encode()

    def holder(self) -> dict | None:
        """Who holds it now, as stored (None: no one, or not readable yet)."""
        found = self._store.read()
        return found.state() if found is not None else None

    def acquire(self) -> bool:
        """Take the lease if no one holds it or its holder's lease has expired."""
        with self._lock:
            if self.held:
                return True
            version = self._store.create(self._data())
            if version is None:
                self.seen = found = self._store.read()
                if found is None:  # dropped since the create: try once more
                    version = self._store.create(self._data())
                elif found.expires(self.ttl_s) < time.time() or found.holder_gone():  # its holder died: take it over
                    version = self._store.replace(self._data(), found.version)
            self._version = version
            self.released = False
            return version is not None

    def renew(self) -> bool:
        """Push the expiry one TTL on; False when the lease is no longer ours (taken over after it
        expired, or never held)."""
        with self._lock:
            if self._version is not None:
                self._version = self._store.replace(self._data(), self._version)
            return self._version is not None

    def release(self) -> None:
        with self._lock:
            version, self._version = self._version, None
            self.released = True
            if version is not None:
                self._store.delete(version)


class ChunkLeases:
    """One run's leases: taken before its chunks are submitted, renewed in the background every ttl/3,
    dropped when each chunk is recorded and all at `close`."""

    def __init__(self, run_id: str, ttl_s: float):
        self.run_id = run_id
        self.ttl_s = float(ttl_s)
        self.poll_s = min(2.0, self.ttl_s / 10)  # how often a waiting run looks for others' records
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, uri: str) -> Lease:
        lease = Lease(uri, self.run_id, self.ttl_s)
        if lease.acquire():
            with self._lock:
                self._held[uri] = lease
                if self._thread is None:
                    self._thread = threading.Thread(target=self._renew_loop, name="ffray-leases", daemon=True)
                    self._thread.start()
        return lease

    def release(self, uri: str) -> None:
        with self._lock:
            lease = self._held.pop(uri, None)
        if lease is not None:
            try:
                lease.release()
            except Exception as exc:  # it expires on its own; never fail a recorded chunk for it
                log.warning("%s: cannot drop the lease (%s); it expires in %gs", uri, exc, self.ttl_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for uri in list(self._held):
            self.release(uri)

    def _renew_loop(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="ffray-lease") as pool:
            while not self._stop.wait(self.ttl_s / 3):
                with self._lock:
                    leases = list(self._held.values())
                for lease, ok in zip(leases, pool.map(self._renew, leases), strict=True):
                    if not ok and not lease.released:
                        log.warning("%s: lease lost to another run; both may process the chunk (safe: same bytes)",
                                    lease.uri)
                        with self._lock:
                            self._held.pop(lease.uri, None)

    @staticmethod
    def _renew(lease: Lease) -> bool:
        try:
            return lease.renew()
        except Exception as exc:  # a store hiccup: keep the lease and try again next round
            log.warning("%s: cannot renew the lease (%s)", lease.uri, exc)
            return True

    # --- chunks ------------------------------------------------------------------------------------

    @staticmethod
    def _uri(task, ledgers: dict[str, VideoLedger]) -> str:
        return lease_uri(ledgers[task.video_key].video_dir, task.chunk.index, task.chunk.id)

    @staticmethod
    def recorded(tasks: Sequence, ledgers: dict[str, VideoLedger]) -> list[tuple[Any, ChunkRecord]]:
        """(task, record) for the tasks whose chunk another run has recorded since, segment verified."""
        found = []
        for key in {t.video_key for t in tasks}:
            mine = [t for t in tasks if t.video_key == key]
            ledgers[key].refresh({chunk_name(t.chunk.index, t.chunk.id) for t in mine})
            for task in mine:
                rec = ledgers[key].verified(task.chunk.id)
                if rec is not None:
                    found.append((task, rec))
        return found

    def claim(self, tasks: Sequence, ledgers: dict[str, VideoLedger]) -> tuple[list, list, list]:
        """(ours: leased, to run here; reused: (task, record) another run finished meanwhile; others':
        leased by another live run, to wait for)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:  # on an object store, one put each
            held = list(pool.map(lambda task: self.acquire(self._uri(task, ledgers)).held, tasks))
        others = [t for t, mine in zip(tasks, held, strict=True) if not mine]
        ours, reused = self._unrecorded([t for t, mine in zip(tasks, held, strict=True) if mine], ledgers)
        return ours, reused, others

    def _unrecorded(self, ours: list, ledgers: dict[str, VideoLedger]) -> tuple[list, list]:
        """Split leased tasks into (still to run, recorded): a run that recorded a chunk and dropped its
        lease between this run's look at the records and its lease: use its segment, drop the lease."""
        reused = self.recorded(ours, ledgers) if ours else []
        for task, _ in reused:
            self.release(self._uri(task, ledgers))
        done = {id(t) for t, _ in reused}
        return [t for t in ours if id(t) not in done], reused

    def wait(self, others: Sequence, ledgers: dict[str, VideoLedger], on_reused: Callable[[Any, ChunkRecord], None],
             wanted: Callable[[Any], bool] = lambda task: True) -> tuple[list, list]:
        """Wait until each of `others` is recorded by its run (on_reused(task, record)) or its lease can
        be taken over (its run died, or dropped it unrecorded: its chunk failed there). Returns (taken:
        leased, to run here now; still others'). `wanted(task)` False: stop waiting for it (its video
        failed here)."""
        pending = list(others)
        look_at: dict[int, float] = {}  # when to look at a lease again: its expiry, at most ttl/4 ahead
        while True:
            pending = [t for t in pending if wanted(t)]
            for task, rec in self.recorded(pending, ledgers):
                on_reused(task, rec)
                pending.remove(task)
            if not pending:
                return [], []
            now = time.time()
            taken = []
            for task in pending:
                if look_at.get(id(task), 0.0) > now:
                    continue
                lease = self.acquire(self._uri(task, ledgers))
                if lease.held:
                    taken.append(task)
                else:
                    expires = lease.seen.expires(self.ttl_s) if lease.seen is not None else now
                    look_at[id(task)] = min(expires, now + self.ttl_s / 4)
            if taken:
                ours, reused = self._unrecorded(taken, ledgers)
                for task, rec in reused:
                    on_reused(task, rec)
                ids = {id(t) for t in taken}
                return ours, [t for t in pending if id(t) not in ids]
            time.sleep(self.poll_s)
