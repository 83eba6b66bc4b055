"""The run report (JSON): per video, per stage, totals, effective configuration, versions, model hashes.

One report per run: `<job dir>/runs/<UTC time>-<random>/report.json` is this run's own (a rerun or a
concurrent job with the same videos never overwrites it), `<job dir>/report.json` the latest run's, and
`--report FILE` a copy where the user asked. Beside each of the job's two, `report.html`: the QC page
(qc_page.py), written after them and, like them, never a reason for a failed run.
"""

from __future__ import annotations

import json
import logging
import platform
import secrets
import sys
import time
from collections import defaultdict
from typing import Any

log = logging.getLogger(__name__)

STAGE_ORDER = ("read", "analysis", "detector", "swapper", "enhancer", "writer")


def stage_figures(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Aggregate the accounting columns of the result rows that this run produced."""
    acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    models: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        frames = int(row.get("frames", 0))
        for stage in STAGE_ORDER:
            if f"{stage}_s" not in row:
                continue
            a = acc[stage]
            a["busy_s"] += float(row[f"{stage}_s"])
            a["model_s"] += float(row.get(f"{stage}_model_s", 0.0))
            a["decode_s"] += float(row.get(f"{stage}_decode_s", 0.0))
            a["cache_hits"] += int(row.get(f"{stage}_cache_hits", 0))
            a["batches"] += float(row[f"{stage}_calls"])
            a["bytes_in"] += int(row[f"{stage}_in"])
            a["bytes_out"] += int(row[f"{stage}_out"])
            a["frames"] += frames
            a["chunks"] += 1
            if row.get(f"{stage}_models"):
                models[stage].update(json.loads(str(row[f"{stage}_models"])))
    out = {}
    for stage in STAGE_ORDER:
        if stage not in acc:
            continue
        a = acc[stage]
        frames = a["frames"]
        out[stage] = {
            "chunks": int(a["chunks"]),
            "frames": int(frames),
            "batches": round(a["batches"]),
            "busy_s": round(a["busy_s"], 4),
            "frames_per_busy_s": round(frames / a["busy_s"], 2) if a["busy_s"] > 0 else None,
            "model_s": round(a["model_s"], 4),  # of busy_s, in ONNX Runtime
            "decode_s": round(a["decode_s"], 4),  # of busy_s, decoding the chunk (detector and writer)
            "cache_hits": int(a["cache_hits"]),  # chunks whose faces came from the template cache (detector)
            "ms_per_frame": {part: round(1000 * value / frames, 2) if frames else None
                             for part, value in (("busy", a["busy_s"]), ("model", a["model_s"]),
                                                 ("decode", a["decode_s"]),
                                                 ("rest", a["busy_s"] - a["model_s"] - a["decode_s"]))},
            "bytes_in": int(a["bytes_in"]),
            "bytes_out": int(a["bytes_out"]),
            "bytes_in_per_frame": round(a["bytes_in"] / frames, 1) if frames else None,
            "bytes_out_per_frame": round(a["bytes_out"] / frames, 1) if frames else None,
        }
        if models.get(stage):
            out[stage]["models"] = dict(models[stage])
    return out


def versions() -> dict[str, str]:
    import numpy

    import ffray

    info = {"ffray": ffray.__version__, "python": platform.python_version(), "numpy": numpy.__version__}
    for name in ("ray", "av", "onnxruntime", "cv2", "pyarrow"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            pass
    return info


def new_run_id() -> str:
    """UTC start time (sorts by time) and a random suffix (two runs in the same second stay apart)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def write_reports(job_dir: str, run_id: str, report: dict, extra: str | None = None,
                  warn: bool = True) -> str:
    """Write this run's report, the job's latest, and `extra`; the path of this run's report ("" when
    none could be written; then `extra` if that one was).

    The report comes after the outputs, which are the deliverable: a report that cannot be written (disk
    full, read-only or wrong path) is a one-line warning on stderr (`warn`), never a failed run."""
    from ffray.pipeline.storage import failure_reason, join, write_json_atomic

    run_file = join(job_dir, "runs", run_id, "report.json")
    written, problems = [], []
    for path in (run_file, join(job_dir, "report.json"), *([extra] if extra else [])):
        try:
            write_json_atomic(path, report)
            written.append(path)
        except Exception as exc:  # OSError, or an object store's own errors
            problems.append(f"{path}: cannot write the run report ({failure_reason(exc)})")
    if problems and warn:
        print(f"ffray: warning: {'; '.join(problems)}", file=sys.stderr)  # one line, however many failed
    elif problems:
        log.debug("%s", "; ".join(problems))
    job_files = [p for p in written if p != extra]  # report.html beside the job's own reports, not the user's file
    if job_files:
        try:
            from ffray.pipeline.qc_page import write_qc_page

            write_qc_page(report, *job_files)
        except Exception as exc:  # a by-product, like the report: never fails the run
            (log.warning if warn else log.debug)("cannot write the QC page beside %s (%s)", job_files[0],
                                                 failure_reason(exc))
    return run_file if run_file in written else (extra if extra in written else "")
