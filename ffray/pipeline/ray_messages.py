"""Ray's messages that are not for ffray's users: a user should see no WARNING or ERROR line when nothing
is wrong. Each one is named here with why it is harmless; nothing else is hidden."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

# Ray Data ray.put()s every operator's DataContext and MapTransformer and passes those refs to each pool
# actor, so the driver's core worker logs this at ERROR once per pool on every run. The refs are owned by
# this driver and outlive every actor restart the job can survive (the worker-kill and node-loss tests
# restart actors with them), so it never applies to ffray's pools.
HARMLESS_CORE_WORKER_LINES = (b"has constructor arguments in the object store and max_restarts > 0",)
_CPP_LOG_HEAD = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")  # glog's line start, as Ray writes it
_CPP_LOG_SHAPE = b"[0000-00-00 00:00:00,000 "


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_ray_notices() -> None:
    """Ray 2.60 protects every new local cluster with a token and says so at WARNING on each start (the
    secure default working as intended: nothing for a user to act on); and a driver that joins from a
    connect thread (connect.py) keeps the default SIGTERM action, exit, which is what a job stop wants."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    worker = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _DropMessages) for f in worker.filters):
        worker.addFilter(_DropMessages("SIGTERM handler is not set"))


def _could_be_cpp_log(partial: bytes) -> bool:
    """True while `partial` (a line not ended yet) may still become a C++ log line: '[2026-12-02 ...'."""
    shape = re.sub(rb"\d", b"0", partial[:len(_CPP_LOG_SHAPE)])
    return _CPP_LOG_SHAPE.startswith(shape) if len(partial) < len(_CPP_LOG_SHAPE) else \
        bool(_CPP_LOG_HEAD.match(partial))


@contextlib.contextmanager
def without_harmless_core_worker_lines() -> Iterator[None]:
    """Drop HARMLESS_CORE_WORKER_LINES from this process's file descriptor 2 (where Ray's C++ core worker
    logs) while the dataset runs; every other byte is passed on as it comes. Ray's own processes were
    started before this and keep the real stderr."""
    sys.stderr.flush()
    try:
        original = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as source:
            for data in iter(lambda: source.read(65536), b""):
                pending += data
                *lines, pending = pending.split(b"\n")
                out = b"".join(line + b"\n" for line in lines
                               if not any(n in line for n in HARMLESS_CORE_WORKER_LINES))
                if pending and not _could_be_cpp_log(pending):
                    out, pending = out + pending, b""  # progress redraws ('\r', no newline) pass at once
                if out:
                    os.write(original, out)
            if pending:
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes: the pump drains it and ends
        thread.join(timeout=10)
        os.close(original)
