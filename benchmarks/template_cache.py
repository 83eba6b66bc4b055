"""Template cache: the first source into a 1080p template against the next ones, same work dir.

    python benchmarks/template_cache.py [--json] [--frames 96] [--sources 3]

Runs `ffray swap` (local Ray, start-up and remux included) on one generated 1080p clip (see
benchmarks/throughput.py) with a different source image each time and one work dir: the first run
analyses the template (SCRFD 2.5G + contract models), the next ones find its faces in the cache. Prints
each run's wall time, its speed-up over the first, and what its report says: template cache hits and
the detector's model time (per face-tracking setting: the default, on, and off).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ASSETS, REPO, make_clip, renamed_scrfd, run_ffray  # noqa: E402

SOURCES = ("meds-aa-S001-01.jpg", "meds-aa-S029-01.jpg", "meds-af-S419-01.jpg", "meds-aa-S001-02.jpg")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--sources", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from contract_models import build

    tmp = Path(tempfile.mkdtemp(prefix="ffray-template-"))
    models = {"detector": f"scrfd={renamed_scrfd(tmp / 'scrfd_2.5g.onnx')}",
              "recognizer": build("arcface_w600k_r50", tmp), "swapper": build("inswapper_128", tmp),
              "enhancer": build("gfpgan_1.4", tmp)}
    clip = make_clip(tmp / "template.mp4", 1920, 1080, args.frames)
    results = {}
    for tracking in ("on", "off"):
        work = tmp / f"work-{tracking}"
        runs = []
        for k, name in enumerate(SOURCES[:args.sources]):
            run = run_ffray(REPO, clip, ASSETS / "media" / name, models, tmp / f"out-{tracking}-{k}.mp4", work,
                            ["--face-tracking", tracking])
            stages = run["report"]["stages"]
            model_s = sum(stages.get(s, {}).get("model_s", 0.0) for s in ("analysis", "detector"))
            runs.append({"source": name, "seconds": round(run["seconds"], 1),
                         "cache_hits": sum(stages.get(s, {}).get("cache_hits", 0) for s in ("analysis", "detector")),
                         "analysis_and_detector_model_s": round(model_s, 2), "chunks": run["chunks"]})
        for r in runs:
            r["speedup_over_first"] = round(runs[0]["seconds"] / r["seconds"], 2)
        results[f"tracking {tracking}"] = runs
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for label, runs in results.items():
        print(f"{label}: {args.frames} frames 1920x1080")
        for r in runs:
            print(f"  {r['source']:<24} {r['seconds']:>7.1f} s  x{r['speedup_over_first']:<5} cache hits {r['cache_hits']:>3}"
                  f"  detector model time {r['analysis_and_detector_model_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
