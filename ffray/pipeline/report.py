"""The run report (JSON): per video, per stage, totals, effective configuration, versions, model hashes."""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from typing import Any

STAGE_ORDER = ("read", "detector", "swapper", "enhancer", "writer")


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
