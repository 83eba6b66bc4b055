"""Throughput against the codec floor: `ffray swap` vs a bare transcode of the same clip, side by side.

    python benchmarks/throughput.py [--json] [--frames 240] [--frames-4k 48] [--baseline-repo DIR]

For a generated 1080p clip and a generated 4K clip (one face, a camera-like moving background):
- bare transcode fps: decode + encode at ffray's encoder settings (libx264 veryfast, quality 80 = CRF 10,
  2 threads), the frames handed from decoder to encoder as they come, no colour conversion: the floor;
- `ffray swap` fps end to end (Ray start-up, model loads, remux included) and steady state (frames of
  every chunk after the first over the time between the first and the last chunk finishing), and
  its ratio to the transcode;
- object-store bytes per frame at every stage boundary, as % of a raw BGR frame (the run report);
- CPU ms per frame of each stage, split into ONNX Runtime model time, decode and the rest (report);
- ffray as it runs by default (face tracking on: a detector-only pass over the video first) and with
  `--face-tracking off` (FaceFusion's per-frame selection, one pass);
- with `--baseline-repo DIR` (another checkout, e.g. `git worktree add /tmp/base <commit>`), the same
  ffray run from that code on the same clip, for before/after figures in one run.
Models: the real SCRFD 2.5G detector (its input renamed to FaceFusion's 'input') and contract
ArcFace / inswapper / GFPGAN models (tests/contract_models.py), face selector mode 'one'.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
ASSETS = Path(os.environ.get("FFRAY_TEST_ASSETS", REPO.parent / "shared" / "assets"))


def renamed_scrfd(dest: Path) -> Path:
    """InsightFace's scrfd_2.5g.onnx names its input 'input.1'; FaceFusion's copy (the registry's
    contract) calls it 'input'. Same weights, renamed."""
    import onnx

    model = onnx.load(str(ASSETS / "models" / "scrfd_2.5g.onnx"))
    old = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = ["input" if name == old else name for name in node.input]
    model.graph.input[0].name = "input"
    onnx.save(model, str(dest))
    return dest


def make_clip(dest: Path, width: int, height: int, frames: int, fps: int = 30) -> Path:
    """One face (~30 % of the frame height) drifting slowly over a textured background that pans:
    an encoder has real work and the detector a real face on every frame."""
    import av
    import cv2
    from skimage import data

    face = cv2.imread(str(ASSETS / "media" / "meds-aa-S001-01.jpg"))
    scale = 0.55 * height / face.shape[0]
    face = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    texture = cv2.resize(np.ascontiguousarray(data.coffee()[:, :, ::-1]), (width + frames * 2, height),
                         interpolation=cv2.INTER_CUBIC)
    fh, fw = face.shape[:2]
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast", "g": "48"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.ascontiguousarray(texture[:, i * 2:i * 2 + width])
            x = int(width * 0.3 + 40 * np.sin(i / 25)) if width > fw else 0
            y = int((height - fh) / 2 + 20 * np.cos(i / 30))
            image[y:y + fh, x:x + fw] = face
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    return dest


def bare_transcode(clip: Path, dest: Path) -> dict:
    """Decode and re-encode at ffray's segment settings (EncodeOptions defaults), one process."""
    import av

    from ffray.media.encode import EncodeOptions

    opts = EncodeOptions()
    started = time.perf_counter()
    count = 0
    with av.open(str(clip)) as src, av.open(str(dest), "w") as out:
        vin = src.streams.video[0]
        vin.thread_type = "AUTO"
        stream = out.add_stream(opts.encoder, rate=vin.average_rate, options=opts.codec_options())
        stream.width, stream.height, stream.pix_fmt = vin.width, vin.height, opts.pix_fmt
        stream.codec_context.thread_count = opts.threads
        for frame in src.decode(vin):
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
            count += 1
        out.mux(stream.encode())
    seconds = time.perf_counter() - started
    return {"frames": count, "seconds": seconds, "fps": count / seconds}


def run_ffray(repo: Path, clip: Path, source: Path, models: dict, output: Path, work: Path,
              extra: list[str]) -> dict:
    args = [sys.executable, "-m", "ffray", "swap", "--source", str(source), "--target", str(clip),
            "--output", str(output), "--work-dir", str(work), "--providers", "cpu", "--pack", "facefusion",
            "--face-detector-model", models["detector"], "--face-landmarker-score", "0",
            "--face-recognizer-model", models["recognizer"], "--face-swapper-model", models["swapper"],
            "--face-enhancer-model", models["enhancer"], "--face-selector-mode", "one", "--quiet", *extra]
    env = dict(os.environ, PYTHONPATH=str(repo), RAY_DATA_DISABLE_PROGRESS_BARS="1")
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=str(repo), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ffray swap ({repo}) failed: {proc.stderr[-3000:]}")
    # this run's report: the newest (a work dir can hold other jobs' reports too)
    report = json.loads(max(work.glob("jobs/*/report.json"), key=lambda p: p.stat().st_mtime).read_text())
    # steady state: segments are written the moment a chunk is encoded; the first one marks the end
    # of start-up (Ray, model loads, the first chunk through every pool)
    finished = []
    for path in work.glob("videos/*/done/*.json"):
        record = json.loads(path.read_text())
        segment = path.parent.parent / "segments" / record["segment"]
        finished.append((segment.stat().st_mtime, int(record.get("frames", 0))))
    finished.sort()
    frames = sum(n for _, n in finished)
    steady = None
    if len(finished) > 1 and finished[-1][0] > finished[0][0]:
        steady = (frames - finished[0][1]) / (finished[-1][0] - finished[0][0])
    return {"seconds": seconds, "frames": frames, "fps": frames / seconds, "steady_fps": steady,
            "chunks": len(finished), "report": report}


def stage_figures(report: dict, raw_frame_bytes: int) -> dict:
    out = {}
    for name, st in report["stages"].items():
        per = st.get("ms_per_frame") or {"busy": 1000 * st["busy_s"] / st["frames"] if st["frames"] else None}
        out[name] = {"bytes_in_pct": 100 * (st["bytes_in_per_frame"] or 0) / raw_frame_bytes,
                     "bytes_out_pct": 100 * (st["bytes_out_per_frame"] or 0) / raw_frame_bytes,
                     "ms_per_frame": per}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--frames", type=int, default=240, help="frames of the 1080p clip")
    parser.add_argument("--frames-4k", type=int, default=48, help="frames of the 4K clip (0: skip it)")
    parser.add_argument("--baseline-repo", type=Path, help="another checkout to run side by side")
    parser.add_argument("--ffray-args", default="", help="extra `ffray swap` arguments, one string")
    args = parser.parse_args()

    from contract_models import build

    tmp = Path(tempfile.mkdtemp(prefix="ffray-throughput-"))
    models = {"detector": f"scrfd={renamed_scrfd(tmp / 'scrfd_2.5g.onnx')}",
              "recognizer": build("arcface_w600k_r50", tmp), "swapper": build("inswapper_128", tmp),
              "enhancer": build("gfpgan_1.4", tmp)}
    source = ASSETS / "media" / "meds-aa-S002-01.jpg"
    if not source.exists():
        source = ASSETS / "media" / "meds-aa-S029-01.jpg"
    extra = args.ffray_args.split()
    repos = [("ffray", REPO, extra), ("ffray, tracking off", REPO, [*extra, "--face-tracking", "off"])]
    repos += [("baseline", args.baseline_repo.resolve(), extra)] if args.baseline_repo else []
    clips = [("1080p", 1920, 1080, args.frames)] + ([("4K", 3840, 2160, args.frames_4k)] if args.frames_4k else [])
    results: dict = {"cpus": os.cpu_count(), "clips": {}}
    for label, width, height, frames in clips:
        clip = make_clip(tmp / f"{label}.mp4", width, height, frames)
        entry: dict = {"width": width, "height": height, "frames": frames,
                       "transcode": bare_transcode(clip, tmp / f"{label}-transcode.mp4")}
        for k, (name, repo, flags) in enumerate(repos):
            run = run_ffray(repo, clip, source, models, tmp / f"{label}-{k}.mp4", tmp / f"work-{label}-{k}", flags)
            run["stages"] = stage_figures(run.pop("report"), width * height * 3)
            run["ratio"] = run["fps"] / entry["transcode"]["fps"]
            run["steady_ratio"] = run["steady_fps"] / entry["transcode"]["fps"] if run["steady_fps"] else None
            entry[name] = run
        results["clips"][label] = entry

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"cpus={results['cpus']}")
    for label, entry in results["clips"].items():
        t = entry["transcode"]
        print(f"\n{label} ({entry['width']}x{entry['height']}, {entry['frames']} frames): bare transcode "
              f"{t['fps']:.2f} fps")
        for name, _, _ in repos:
            r = entry[name]
            steady = f"{r['steady_fps']:.2f} fps ({r['steady_ratio']:.2f}x)" if r["steady_fps"] else "n/a"
            print(f"  {name}: end to end {r['fps']:.2f} fps ({r['ratio']:.2f}x the transcode), steady {steady}")
            for stage, st in r["stages"].items():
                ms = ", ".join(f"{k} {v:.1f}" for k, v in st["ms_per_frame"].items() if v is not None)
                print(f"    {stage:<9} in {st['bytes_in_pct']:6.2f} % of a raw frame, out {st['bytes_out_pct']:6.2f} %;"
                      f" ms/frame: {ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
