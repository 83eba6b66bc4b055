"""Live progress on stderr: per video and overall frames done of total, frames/s, ETA.

On a terminal one line is redrawn in place; in a log (not a TTY) a line is printed every few seconds
and one per finished video. Quiet mode prints nothing.
"""

from __future__ import annotations

import sys
import threading
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
    phase: str = ""  # what the job is doing before frames flow: preparing, starting Ray, loading models
    inflight: dict[str, int] = field(default_factory=dict)  # video id -> frames encoded in unfinished chunks
    _last: float = 0.0
    _width: int = 0
    _closed: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)  # the driver's live poller ticks too

    def __post_init__(self) -> None:
        self.stream = self.stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if self.interval is None:
            self.interval = 0.5 if self.tty else 5.0

    def set_phase(self, text: str, delay: float = 0.0) -> None:
        """Say what the job is doing now; "" once frames flow. Shown at once on a terminal; in a log
        after `delay` seconds if still current, so a command refused at once prints only its error."""
        if text == self.phase:
            return
        self.phase = text
        if delay and not self.tty and not self.quiet:
            timer = threading.Timer(delay, lambda: self.phase == text and not self._closed and self.tick(force=True))
            timer.daemon = True
            timer.start()
        else:
            self.tick(force=True)

    def set_inflight(self, frames: dict[str, int]) -> None:
        """Frames already encoded in chunks not recorded yet, per video: per-frame progress."""
        with self._lock:
            self.inflight = dict(frames)
        self.tick()

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

    def _done(self, video_id: str, v: VideoProgress) -> int:
        return min(v.total, v.done + self.inflight.get(video_id, 0)) if v.total else v.done

    def totals(self) -> tuple[int, int, int]:
        total = sum(v.total for v in self.videos.values())
        done = sum(self._done(k, v) for k, v in self.videos.items())
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
        parts = [self.phase] if self.phase else []
        running = [f"{v.name} {self._done(k, v)}/{v.total}" + (" waiting" if v.state == "waiting" else "")
                   for k, v in self.videos.items() if v.state in ("running", "waiting") and v.total]
        pct = 100.0 * done / total if total else 100.0
        if not self.videos and not parts:
            return ""  # nothing to say yet
        head = f"[{done}/{total} frames {pct:5.1f}% {fps:6.1f} fps ETA {_eta(eta)}]" if self.videos else "[ffray]"
        return " ".join([head, *parts, *running[:4]]) + (" ..." if len(running) > 4 else "")

    def tick(self, force: bool = False) -> None:
        if self.quiet:
            return
        with self._lock:
            self._tick(force)

    def _tick(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < (self.interval or 0):
            return
        text = self.render()
        if not text:
            return
        self._last = now
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
        with self._lock:
            self._line(text)

    def _line(self, text: str) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(redact(text) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._closed = True
        if not self.quiet and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
