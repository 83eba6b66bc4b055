"""Prometheus metrics of the pipeline stages, through `ray.util.metrics`.

Each stage actor records what `stages.run_stage` measured for a batch (`record_stage`); Ray sends the
points to its node's metrics agent, which serves them on the node's Prometheus endpoint
(`ray.nodes()[i]["MetricsExportPort"]`, fixed with `ray start --metrics-export-port`). Ray prefixes
every name with `ray_`, and a counter gets `_total`: `ffray_frames` is scraped as `ray_ffray_frames_total`.

Labels: `stage` (detector, swapper, enhancer, writer) and `job` (JobTable.job_id); errors add `kind`
(input, model, processing). A chunk counts once, at the stage that completed or failed it: rows that
arrive already failed pass through later stages without being counted again.

Best effort: nothing here raises into the pipeline, and outside a Ray worker/driver it does nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

STAGE_TAGS = ("stage", "job")
# busy seconds of one chunk: a 16-frame chunk on a GPU is ~0.1 s, a long chunk on CPU minutes
CHUNK_SECONDS_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0]

# per process, created on first use: metric objects must be made in the process that records them
_metrics: dict[str, Any] | None = None


def _ray_ready() -> bool:
    # never import ray here: a process that has not imported it has nowhere to export to
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _get() -> dict[str, Any] | None:
    global _metrics
    if _metrics is None:
        if not _ray_ready():
            return None
        _metrics = _create()
    return _metrics


def _create() -> dict[str, Any]:
    from ray.util.metrics import Counter, Histogram

    def counter(name: str, description: str, tags=STAGE_TAGS) -> Any:
        return Counter(name, description, tag_keys=tags)

    return {
        "frames": counter("ffray_frames", "Frames of the chunks a stage completed."),
        "faces": counter("ffray_faces", "Selected faces in the chunks a stage completed."),
        "chunks": counter("ffray_chunks", "Chunks a stage completed without error."),
        "errors": counter("ffray_errors", "Chunks a stage failed, by kind (input, model, processing).",
                          (*STAGE_TAGS, "kind")),
        "busy_s": counter("ffray_busy_seconds", "Seconds a stage spent on its batches (exact sum)."),
        "model_s": counter("ffray_model_seconds", "Seconds a stage spent in ONNX Runtime."),
        "decode_s": counter("ffray_decode_seconds", "Seconds a stage spent decoding video."),
        "bytes_in": counter("ffray_bytes_in", "Bytes of the rows entering a stage (object store boundary)."),
        "bytes_out": counter("ffray_bytes_out", "Bytes of the rows leaving a stage (object store boundary)."),
        "chunk_s": Histogram("ffray_chunk_seconds", "Busy seconds of a stage per chunk.",
                             boundaries=CHUNK_SECONDS_BOUNDARIES, tag_keys=STAGE_TAGS),
        "cache_hits": counter("ffray_template_cache_hits", "Face template cache hits.", ("job",)),
    }


def _inc(metric: Any, value: float, tags: dict[str, str]) -> None:
    if value > 0:  # Counter.inc refuses 0
        metric.inc(float(value), tags)


def _column_sum(out: dict[str, Any], key: str) -> float:
    values = out.get(key)
    return float(np.sum(values)) if values is not None else 0.0


def _writer_out_bytes(out: dict[str, Any]) -> float:
    """Bytes of the writer's result rows: write_rows drops the patch and face columns after run_stage
    (where `writer_out` was measured) and adds `frames`, so measure what it keeps, as row_nbytes does."""
    from ffray.faces.patches import Patches

    dropped = {"chunk_task", *Patches.COLUMNS}
    total = 8 * len(out["chunk_id"])  # the int64 `frames` column write_rows adds
    for key, values in out.items():
        if key in dropped or key.startswith("face_"):
            continue
        values = np.asarray(values)
        total += sum(np.asarray(v).nbytes for v in values) if values.dtype.kind == "O" else values.nbytes
    return float(total)


def record_stage(stage: str, out: dict[str, Any], job_id: str, failed_before=None) -> None:
    """Turn one batch returned by `run_stage` into metric updates. `failed_before`: the batch's `error`
    column as it came in (rows already failed upstream are not this stage's chunks)."""
    try:
        metrics = _get()
        if metrics is None:
            return
        tags = {"stage": stage, "job": str(job_id)}
        errors = out["error"]
        n = len(errors)
        before = failed_before if failed_before is not None else [""] * n
        fresh = [i for i in range(n) if not before[i]]
        done = [i for i in fresh if not errors[i]]
        busy = out.get(f"{stage}_s")
        faces = out.get("faces")
        starts, ends = out["start"], out["end"]

        _inc(metrics["chunks"], len(done), tags)
        _inc(metrics["frames"], sum(int(ends[i]) - int(starts[i]) for i in done), tags)
        if faces is not None:
            _inc(metrics["faces"], sum(int(faces[i]) for i in done), tags)
        kinds = out.get("error_kind")
        for i in fresh:
            if errors[i]:
                kind = str(kinds[i]) if kinds is not None and kinds[i] else "processing"
                metrics["errors"].inc(1.0, {**tags, "kind": kind})
        if busy is not None:
            # run_stage splits a batch's time evenly over its rows: per chunk that is the batch average
            for i in fresh:
                metrics["chunk_s"].observe(float(busy[i]), tags)
            _inc(metrics["busy_s"], _column_sum(out, f"{stage}_s"), tags)
        _inc(metrics["model_s"], _column_sum(out, f"{stage}_model_s"), tags)
        _inc(metrics["decode_s"], _column_sum(out, f"{stage}_decode_s"), tags)
        _inc(metrics["bytes_in"], _column_sum(out, f"{stage}_in"), tags)
        _inc(metrics["bytes_out"], _writer_out_bytes(out) if stage == "writer" else _column_sum(out, f"{stage}_out"),
             tags)
        # a stage that reads a template cache says per row whether it hit (`detector_cache_hits`)
        _inc(metrics["cache_hits"], _column_sum(out, f"{stage}_cache_hits"), {"job": tags["job"]})
    except Exception:  # metrics are best effort: never fail a chunk over them
        logger.debug("could not record metrics of a %s batch", stage, exc_info=True)


def record_cache_hit(job: str, hits: int = 1) -> None:
    """Count face template cache hits (`ray_ffray_template_cache_hits_total{job}`)."""
    try:
        metrics = _get()
        if metrics is not None:
            _inc(metrics["cache_hits"], hits, {"job": str(job)})
    except Exception:
        logger.debug("could not record a template cache hit", exc_info=True)
