"""Live news from the pool actors to the driver's progress line: which actors have loaded their models,
and frames encoded in chunks not finished yet. Without it a user sees nothing between "starting Ray"
and the first finished chunk (a minute on a cold cluster), then whole chunks at once.

A small actor (`LiveBoard`, no CPU, on the driver's node) collects fire-and-forget reports; the driver
polls it. Everything here is best effort: a report that cannot be delivered is dropped, never a failed
chunk, and nothing the board says changes what is processed or recorded.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class LiveBoard:
    def __init__(self):
        self.ready: dict[str, set[str]] = {}  # stage -> actors (host:pid) that loaded their models
        self.failed: dict[str, str] = {}  # stage -> why an actor could not start
        self.frames: dict[tuple[str, int], int] = {}  # (video key, chunk index) -> frames encoded so far

    def started(self, stage: str, actor: str, error: str = "") -> None:
        if error:
            self.failed[stage] = error
        else:
            self.ready.setdefault(stage, set()).add(actor)

    def encoded(self, video_key: str, chunk_index: int, frames: int) -> None:
        self.frames[(video_key, chunk_index)] = max(frames, self.frames.get((video_key, chunk_index), 0))

    def snapshot(self) -> dict:
        return {"ready": {s: len(a) for s, a in self.ready.items()}, "failed": dict(self.failed),
                "frames": dict(self.frames)}


def start_board(name: str):
    """The board for one run, on this (the driver's) node: it lives and dies with the driver."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0, max_restarts=0)(LiveBoard).options(
        name=name, scheduling_strategy=here).remote()


class Reporter:
    """What a stage actor holds: sends reports to the board named in its job table, if there is one."""

    def __init__(self, board: str | None, min_interval_s: float = 0.5):
        self.board_name = board
        self.min_interval_s = min_interval_s
        self._board = None
        self._last: dict[tuple[str, int], float] = {}
        self.actor = f"{socket.gethostname()}:{os.getpid()}"

    def _handle(self):
        if self._board is None and self.board_name:
            try:
                import ray

                self._board = ray.get_actor(self.board_name)
            except Exception:  # no Ray (a plain loop) or the driver is gone: nobody to tell
                self.board_name = None
        return self._board

    def started(self, stage: str, error: str = "") -> None:
        board = self._handle()
        if board is not None:
            try:
                board.started.remote(stage, self.actor, error)
            except Exception:
                log.debug("live report dropped", exc_info=True)

    def encoded(self, video_key: str, chunk_index: int, frames: int, last: bool = False) -> None:
        """Frames encoded so far in a chunk; sent at most every `min_interval_s` per chunk."""
        now = time.monotonic()
        key = (video_key, chunk_index)
        if not last and now - self._last.get(key, 0.0) < self.min_interval_s:
            return
        self._last[key] = now
        board = self._handle()
        if board is not None:
            try:
                board.encoded.remote(video_key, chunk_index, frames)
            except Exception:
                log.debug("live report dropped", exc_info=True)
