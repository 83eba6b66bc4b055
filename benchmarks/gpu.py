"""GPU benchmark: `ffray swap` on a generated 1080p clip with one face, cost-equivalent proxy models.

    python benchmarks/gpu.py [--frames 240] [--swapper hyperswap_1a_256] [--enhancer gfpgan_1.4] [--trt]
                             [--detector-gpus F] [--swapper-gpus F] [--enhancer-gpus F] [--json]
    python benchmarks/gpu.py --cpu --frames 24     # smoke run on a CPU box (no GPU shares)

Models: the real SCRFD detector (scrfd_2.5g.onnx, its input renamed from 'input.1' to FaceFusion's
'input'), proxies (benchmarks/proxy_models.py) for the recognizer (arcface_w600k_r50), the swapper and the
enhancer: the production I/O contract with about the published compute per call. The clip: the source
face scaled to ~300 px tall, composited on a moving background, 1920x1080, libx264.

Prints fps end to end (subprocess start to exit: Ray start-up, model loads and remux included) and in
steady state (chunk records written after the first one, from their mtimes), per-stage busy/model ms per
frame (run report), GPU busy % and peak GPU memory sampled with nvidia-smi every 200 ms, peak host PSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from pipeline import ASSETS, TreeMemory, cli_args  # noqa: E402
from proxy_models import build_proxy  # noqa: E402

SOURCE = ASSETS / "media/meds-aa-S001-01.jpg"
SCRFD = ASSETS / "models/scrfd_2.5g.onnx"
WIDTH, HEIGHT, FPS = 1920, 1080, 30
STAGES = ("read", "detector", "swapper", "enhancer", "writer")


def rename_scrfd(source: Path, dest: Path) -> Path:
    """InsightFace's SCRFD export names its input 'input.1'; FaceFusion's file (and the contract) 'input'."""
    import onnx

    model = onnx.load(str(source))
    old, new = model.graph.input[0].name, "input"
    model.graph.input[0].name = new
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest


def face_height(image: np.ndarray, detector: Path) -> tuple[float, np.ndarray]:
    """Height and box of the best face SCRFD finds in `image` (through ffray's own analyser)."""
    from ffray.faces.options import FaceOptions
    from ffray.faces.packs import load_analyser

    options = FaceOptions(pack="facefusion", face_detector_model=f"scrfd={detector}", face_landmarker_score=0.0)
    faces = load_analyser(options).analyse([image], embed=False)[0]
    if not faces:
        raise SystemExit(f"no face found in {SOURCE}")
    face = max(faces, key=lambda f: f.score)
    return float(face.box[3] - face.box[1]), face.box


def make_clip(dest: Path, frames: int, detector: Path, face_px: int = 300, preset: str = "veryfast") -> Path:
    """`frames` 1080p frames: the source portrait scaled so that its face is ~`face_px` tall, drifting
    slowly over a scrolling textured background, feathered edges; H.264 (libx264, CRF 18, GOP 30)."""
    import av
    import cv2

    image = cv2.imread(str(SOURCE))
    height, _ = face_height(image, detector)
    scale = face_px / height
    portrait = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ph, pw = portrait.shape[:2]
    ph, pw = min(ph, HEIGHT - 40), min(pw, WIDTH - 40)
    portrait = portrait[:ph, :pw]
    alpha = np.zeros((ph, pw), np.float32)
    border = max(4, min(ph, pw) // 12)
    alpha[border:-border, border:-border] = 1
    alpha = cv2.GaussianBlur(alpha, (0, 0), border / 2)[..., None]
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 255, (HEIGHT // 24, WIDTH // 12, 3), dtype=np.uint8), (2 * WIDTH, HEIGHT),
                         interpolation=cv2.INTER_CUBIC)
    texture = (0.5 * cv2.GaussianBlur(texture, (0, 0), 6) + 64).astype(np.uint8)  # softer, like real footage
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": preset, "g": "30"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            shift = (i * 8) % WIDTH
            frame = np.ascontiguousarray(texture[:, shift:shift + WIDTH])
            x = int((WIDTH - pw) / 2 + 300 * np.sin(2 * np.pi * i / 240))
            y = int((HEIGHT - ph) / 2 + 60 * np.sin(2 * np.pi * i / 120))
            region = frame[y:y + ph, x:x + pw].astype(np.float32)
            frame[y:y + ph, x:x + pw] = (alpha * portrait + (1 - alpha) * region).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dest


class GpuSampler:
    """`nvidia-smi --query-gpu=utilization.gpu,memory.used -lms 200` in a thread: (time, busy %, MiB)."""

    def __init__(self, interval_ms: int = 200):
        self.samples: list[tuple[float, float, float]] = []
        self.available = shutil.which("nvidia-smi") is not None
        self._cmd = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                     "-lms", str(interval_ms)]
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self):
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                busy, mib = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.samples.append((time.time(), busy, mib))

    def __enter__(self):
        if self.available:
            self._proc = subprocess.Popen(self._cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._thread.join(timeout=10)

    def busy(self, start: float = 0.0, end: float = float("inf")) -> float | None:
        values = [b for t, b, _ in self.samples if start <= t <= end]
        return float(np.mean(values)) if values else None

    def peak_mib(self) -> float | None:
        return max((m for _, _, m in self.samples), default=None)


def swap_command(args, clip: Path, models: dict[str, Path], work: Path, output: Path) -> list[str]:
    """pipeline.py's `ffray swap` command line, with this run's providers, GPU shares and pools."""
    from ffray.faces.options import FaceOptions

    options = FaceOptions(pack="facefusion", face_detector_model=f"scrfd={models['scrfd']}",
                          face_landmarker_score=0.0,
                          face_recognizer_model=f"arcface_w600k_r50={models['arcface_w600k_r50']}",
                          face_swapper_model=f"{args.swapper}={models[args.swapper]}",
                          face_enhancer_model=f"{args.enhancer}={models[args.enhancer]}" if args.enhancer else None,
                          face_selector_mode=args.selector)
    cmd = cli_args(clip, SOURCE, options, output, work, args.chunk_frames)
    if not args.enhancer:  # cli_args always passes an enhancer
        k = cmd.index("--face-enhancer-model")
        del cmd[k:k + 2]
    k = cmd.index("--providers")
    cmd[k + 1:k + 2] = ["cpu"] if args.cpu else (["tensorrt", "cuda", "cpu"] if args.trt else ["cuda", "cpu"])
    gpus = {"detector": 0.0, "swapper": 0.0, "enhancer": 0.0} if args.cpu else \
        {"detector": args.detector_gpus, "swapper": args.swapper_gpus, "enhancer": args.enhancer_gpus}
    for stage in ("detector", "swapper", "enhancer"):
        if gpus[stage] is not None:
            cmd += [f"--{stage}-gpus", str(gpus[stage])]
        for flag in ("actors", "model_batch"):
            value = getattr(args, f"{stage}_{flag}")
            if value is not None:
                cmd += [f"--{stage}-{flag.replace('_', '-')}", str(value)]
    if args.cpu:
        cmd += ["--num-gpus", "0", "--intra-op-threads", "1"]
    return cmd + args.extra


def run_swap(cmd: list[str], work: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_DATA_DISABLE_PROGRESS_BARS="1")
    env.pop("RAY_ADDRESS", None)
    log = work / "ffray-swap.log"
    with GpuSampler() as gpu, open(log, "wb") as err:
        started_wall, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        with TreeMemory(proc.pid) as mem:
            proc.wait()
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"ffray swap failed (exit {proc.returncode}); {log}:\n{log.read_text()[-3000:]}")
    reports = sorted(work.glob("work/jobs/*/report.json"))
    report = json.loads(reports[-1].read_text()) if reports else None
    records, segments = [], []
    for path in work.glob("work/videos/*/done/*.json"):
        frames = int(json.loads(path.read_text()).get("frames", 0))
        records.append((path.stat().st_mtime, frames))
        segment = sorted(path.parent.parent.glob(f"segments/{path.stem}.*"))
        if segment:
            segments.append((segment[0].stat().st_mtime, frames))
    return {"seconds": seconds, "started": started_wall, "report": report, "records": sorted(records),
            "segments": sorted(segments), "gpu": gpu, "peak_pss": mem.peak}


def steady_fps(times: list[tuple[float, int]]) -> float | None:
    """Frames finished after the first chunk over the time from the first chunk to the last."""
    if len(times) < 2 or times[-1][0] <= times[0][0]:
        return None
    return round(sum(f for _, f in times[1:]) / (times[-1][0] - times[0][0]), 2)


def figures(run: dict, frames: int) -> dict:
    records, report, gpu = run["records"], run["report"] or {}, run["gpu"]
    out = {"frames": frames, "wall_s": round(run["seconds"], 2), "fps_end_to_end": round(frames / run["seconds"], 2),
           "fps_driver": (report.get("totals") or {}).get("frames_per_second"),
           "faces": (report.get("totals") or {}).get("faces"), "chunks": len(records),
           "peak_host_pss_mib": round(run["peak_pss"] / 2**20)}
    # steady state: frames of the chunks finished after the first one, over the time between them. The
    # driver writes a chunk's record when Ray Data hands it the row, in bursts: the segment files' mtimes
    # (written by the writer actors as each chunk is encoded) time the pipeline more closely.
    out["fps_steady"] = steady_fps(records)
    out["fps_steady_segments"] = steady_fps(run["segments"])
    times = run["segments"] if len(run["segments"]) >= 2 else records
    window = (times[0][0], times[-1][0]) if len(times) >= 2 else (run["started"], run["started"] + run["seconds"])
    out["first_chunk_after_s"] = round(records[0][0] - run["started"], 2) if records else None
    stages = {}
    for name in STAGES:
        st = (report.get("stages") or {}).get(name)
        if st:
            ms = st.get("ms_per_frame") or {}
            stages[name] = {"busy_ms_per_frame": ms.get("busy"), "model_ms_per_frame": ms.get("model"),
                            "frames_per_busy_s": st.get("frames_per_busy_s"), "batches": st.get("batches")}
    out["stages"] = stages
    if gpu.available:
        out["gpu_busy_pct"] = gpu.busy()
        out["gpu_busy_pct_steady"] = gpu.busy(*window)
        out["gpu_peak_mib"] = gpu.peak_mib()
        out["gpu_samples"] = len(gpu.samples)
    else:
        out["gpu_busy_pct"] = None
        out["gpu_note"] = "nvidia-smi not found: GPU busy % not sampled"
    return out


def print_figures(f: dict, args, models: dict[str, Path]) -> None:
    providers = "cpu" if args.cpu else ("tensorrt,cuda,cpu" if args.trt else "cuda,cpu")
    print(f"clip: {args.frames} frames 1920x1080 one face; providers {providers}; chunk {args.chunk_frames} frames; "
          f"selector {args.selector}; proxy scale {args.scale}")
    print("models: " + ", ".join(f"{k}={v.name}" for k, v in models.items()))
    print(f"faces swapped: {f['faces']} in {f['frames']} frames, {f['chunks']} chunks")
    def fps(v):
        return f"{v:.2f}" if v else "n/a (needs >= 2 chunks)"
    print(f"fps end to end: {f['fps_end_to_end']:.2f} ({f['wall_s']:.1f} s wall, driver's own {f['fps_driver']}); "
          f"first chunk recorded after {f['first_chunk_after_s']} s")
    print(f"fps steady state: {fps(f['fps_steady'])} from chunk record mtimes, {fps(f['fps_steady_segments'])} "
          f"from segment mtimes{' (few chunks: rough)' if f['chunks'] < 5 else ''}")
    print(f"{'stage':<10}{'busy ms/frame':>15}{'model ms/frame':>16}{'frames/busy-s':>15}{'batches':>9}")
    for name, st in f["stages"].items():
        def cell(v, width):
            return f"{v:>{width}.2f}" if isinstance(v, (int, float)) else f"{'-':>{width}}"
        print(f"{name:<10}{cell(st['busy_ms_per_frame'], 15)}{cell(st['model_ms_per_frame'], 16)}"
              f"{cell(st['frames_per_busy_s'], 15)}{st['batches'] or 0:>9}")
    if f.get("gpu_note"):
        print(f["gpu_note"])
    else:
        print(f"GPU busy: {f['gpu_busy_pct']:.1f} % over the run, "
              f"{f['gpu_busy_pct_steady'] if f['gpu_busy_pct_steady'] is None else round(f['gpu_busy_pct_steady'], 1)}"
              f" % in steady state; peak GPU memory {f['gpu_peak_mib']} MiB ({f['gpu_samples']} samples)")
    print(f"peak host PSS (process tree): {f['peak_host_pss_mib']} MiB")
    if not f["faces"] or f["faces"] < 0.9 * f["frames"]:
        print("WARNING: faces were found in fewer than 90 % of the frames: swapper/enhancer figures are low")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--cpu", action="store_true", help="smoke run: providers cpu, no GPU shares, scale 0.1")
    parser.add_argument("--trt", action="store_true", help="providers tensorrt cuda cpu")
    parser.add_argument("--swapper", default="hyperswap_1a_256",
                        choices=["hyperswap_1a_256", "inswapper_128", "simswap_256"])
    parser.add_argument("--enhancer", default="gfpgan_1.4", help="gfpgan_1.4, codeformer or '' for none")
    parser.add_argument("--selector", default="reference", choices=["reference", "one", "many"],
                        help="face selector mode (FaceFusion's default: reference, which embeds every face)")
    parser.add_argument("--chunk-frames", type=int, default=None, help="default 48 (8 with --cpu)")
    parser.add_argument("--scale", type=float, default=None,
                        help="multiply the proxies' compute (default 1; 0.1 with --cpu)")
    parser.add_argument("--fp32", action="store_true", help="proxies in fp32 (default: the registry's precision)")
    for stage in ("detector", "swapper", "enhancer"):
        parser.add_argument(f"--{stage}-gpus", type=float, default=None, help="GPU share (default: ffray's auto)")
        parser.add_argument(f"--{stage}-actors", default=None, help="N or MIN-MAX")
        parser.add_argument(f"--{stage}-model-batch", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None, help="folder for clip, models, work dir (default: temp)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("extra", nargs="*", help="more `ffray swap` arguments, after --")
    args = parser.parse_args()
    args.chunk_frames = args.chunk_frames or (8 if args.cpu else 48)
    args.scale = args.scale if args.scale is not None else (0.1 if args.cpu else 1.0)
    if args.enhancer and args.enhancer not in ("gfpgan_1.4", "codeformer"):
        parser.error("--enhancer: gfpgan_1.4, codeformer or ''")

    if not args.cpu:
        import onnxruntime

        wanted = "TensorrtExecutionProvider" if args.trt else "CUDAExecutionProvider"
        if wanted not in onnxruntime.get_available_providers():
            print(f"warning: ONNX Runtime here has no {wanted} ({onnxruntime.get_available_providers()}); "
                  "ffray would fall back to CPU", file=sys.stderr)

    work = args.work or Path(tempfile.mkdtemp(prefix="ffray-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    fp16 = False if args.fp32 else None
    models = {"scrfd": rename_scrfd(SCRFD, work / "models/scrfd_2.5g.onnx")}
    for name in ("arcface_w600k_r50", args.swapper, *([args.enhancer] if args.enhancer else [])):
        models[name] = build_proxy(name, work / "models", fp16=fp16, scale=args.scale)
    clip = work / f"clip-{args.frames}.mp4"
    if not clip.exists():
        make_clip(clip, args.frames, models["scrfd"])
    prepared = time.perf_counter() - started
    output = work / "out.mp4"
    output.unlink(missing_ok=True)
    shutil.rmtree(work / "work", ignore_errors=True)  # a fresh job, never a resumed one
    cmd = swap_command(args, clip, models, work / "work", output)
    run = run_swap(cmd, work)
    result = figures(run, args.frames)
    result["prepare_s"] = round(prepared, 1)
    result["command"] = cmd
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_figures(result, args, models)
        print(f"(models, clip and proxies built in {prepared:.1f} s; work folder {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
