"""Live progress on stderr: per video and overall frames done of total, frames/s, ETA.

On a terminal one line is redrawn in place; in a log (not a TTY) a line is printed every few seconds
and one per finished video. Quiet mode prints nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ffray.redact import redact


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@dataclass
class VideoProgress:
    name: str
    total: int
    done: int = 0
    resumed: int = 0  # frames already done by an earlier run or a concurrent job
    state: str = "running"  # running | waiting (for a concurrent job's chunks) | remuxing | done | failed


@dataclass
class Progress:
    stream: TextIO | None = None
    quiet: bool = False
    interval: float | None = None  # seconds between redraws; default 0.5 on a TTY, 5 in a log
    videos: dict[str, VideoProgress] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0
    _width: int = 0

    def __post_init__(self) -> None:
        self.stream = self.stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if self.interval is None:
            self.interval = 0.5 if self.tty else 5.0

    def add(self, video_id: str, name: str, total: int, resumed: int = 0) -> None:
        self.videos[video_id] = VideoProgress(name, total, done=resumed, resumed=resumed)

    def advance(self, video_id: str, frames: int) -> None:
        self.videos[video_id].done += frames
        self.tick()

    def reuse(self, video_id: str, frames: int) -> None:
        """Frames a concurrent job finished: done, but not this run's throughput."""
        self.videos[video_id].resumed += frames
        self.advance(video_id, frames)

    def set_state(self, video_id: str, state: str, detail: str = "") -> None:
        v = self.videos[video_id]
        v.state = state
        if state in ("done", "failed"):
            self.line(f"{v.name}: {state}{(' ' + detail) if detail else ''}")
            if not self.tty:
                return  # in a log the line above says it all
        self.tick(force=True)

    def totals(self) -> tuple[int, int, int]:
        total = sum(v.total for v in self.videos.values())
        done = sum(v.done for v in self.videos.values())
        resumed = sum(v.resumed for v in self.videos.values())
        return done, total, resumed

    def rate(self) -> float:
        done, _, resumed = self.totals()
        elapsed = time.monotonic() - self.started
        return (done - resumed) / elapsed if elapsed > 0 else 0.0

    def render(self) -> str:
        done, total, _ = self.totals()
        fps = self.rate()
        eta = (total - done) / fps if fps > 0 else None
        parts = []
        for v in self.videos.values():
            if v.state in ("running", "waiting") and v.total:
                parts.append(f"{v.name} {v.done}/{v.total}" + (" waiting" if v.state == "waiting" else ""))
        pct = 100.0 * done / total if total else 100.0
        head = f"[{done}/{total} frames {pct:5.1f}% {fps:6.1f} fps ETA {_eta(eta)}]"
        return " ".join([head, *parts[:4]]) + (" ..." if len(parts) > 4 else "")

    def tick(self, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not force and now - self._last < (self.interval or 0):
            return
        self._last = now
        text = self.render()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        """A message that stays (a finished or failed video)."""
        if self.quiet:
            return
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(redact(text) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.quiet and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
