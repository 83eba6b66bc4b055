"""Pipeline benchmark: `ffray swap` on Ray against a plain single-process loop with the same models.

    python benchmarks/pipeline.py [--json] [--faces one|many] [--repeat 10]

Measures, on `video_01.mp4` (640x480, 90 frames) and on a clip ten times longer made from it:
- frames/s end to end (Ray start, model loads, remux included) of `ffray swap` (a subprocess, local Ray)
  and of a plain loop in one process (decode -> detect -> swap -> enhance -> encode -> remux) that runs
  the very same stage functions without Ray;
- object-store bytes per frame at each stage boundary (from the run report);
- peak memory (sum of PSS over the process tree: driver, raylet, workers, plasma pages counted once);
- time to finish a job killed at half-way (driver SIGKILLed, command rerun) vs a full run.
Models: the real YuNet detector, contract ArcFace/inswapper/GFPGAN models (tests/contract_models.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
ASSETS = Path(os.environ.get("FFRAY_TEST_ASSETS", REPO.parent / "shared" / "assets"))


class TreeMemory:
    """Peak of the summed PSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_long_clip(source: Path, dest: Path, repeat: int) -> Path:
    """`source`'s frames `repeat` times in a row (video only), H.264."""
    import av

    from ffray.media import decode_all

    frames = [image for _, image in decode_all(str(source))]
    with av.open(str(source)) as c:
        rate = c.streams.video[0].average_rate
    with av.open(str(dest), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast", "g": "30"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for _ in range(repeat):
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dest


def face_options(models: Path, faces: str):
    from pipeline_helpers import contract_face_options

    # per-frame selection: the plain loop below runs the stage functions chunk by chunk, without the
    # driver's whole-video tracking pass
    return contract_face_options(models, ASSETS / "models/yunet_s_640_640.onnx", enhancer=True,
                                 face_selector_mode=faces, face_tracking="off")


def cli_args(video, source, options, output, work, chunk_frames) -> list[str]:
    return [sys.executable, "-m", "ffray", "swap", "--source", str(source), "--target", str(video),
            "--output", str(output), "--work-dir", str(work), "--chunk-frames", str(chunk_frames),
            "--providers", "cpu", "--pack", options.pack, "--face-detector-model", options.face_detector_model,
            "--face-landmarker-score", "0", "--face-recognizer-model", options.face_recognizer_model,
            "--face-swapper-model", options.face_swapper_model,
            "--face-enhancer-model", options.face_enhancer_model,
            "--face-selector-mode", options.face_selector_mode, "--face-tracking", options.face_tracking, "--quiet"]


def run_ray(video, source, options, output, work, chunk_frames, kill_at: float | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_DATA_DISABLE_PROGRESS_BARS="1")
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.Popen(cli_args(video, source, options, output, work, chunk_frames), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    killed = False
    with TreeMemory(proc.pid) as mem:
        if kill_at is not None:
            while proc.poll() is None:
                if len(list(Path(work).glob("videos/*/done/*.json"))) >= kill_at:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.05)
        _, err = proc.communicate()
    seconds = time.perf_counter() - started
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"ffray swap failed: {err.decode()[-2000:]}")
    report = None
    reports = list(Path(work).glob("jobs/*/report.json"))
    if reports and not killed:
        report = json.loads(reports[0].read_text())
    return {"seconds": seconds, "peak_pss": mem.peak, "report": report, "killed": killed}


def stream_bytes(path: Path) -> str:
    """sha256 of every packet of every stream: what the two ways of running must agree on (the CLI's
    output also carries the synthetic-media label in its container tags; the plain loop writes none)."""
    import hashlib

    import av

    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                digest.update(packet.stream.index.to_bytes(2, "little") + bytes(packet))
    return digest.hexdigest()


def run_plain(video, source, options, output, work, chunk_frames) -> dict:
    """Same stage functions, one process, no Ray: the baseline."""
    from ffray.faces.image import read_image
    from ffray.faces.packs import load_analyser, load_enhancer, load_swapper
    from ffray.media import remux
    from ffray.models.sessions import ExecutionOptions
    from ffray.pipeline.config import PipelineConfig
    from ffray.pipeline.datasource import chunk_row
    from ffray.pipeline.driver import VideoRequest, prepare_job
    from ffray.pipeline.stages import SourceCache, detect_rows, enhance_rows, swap_rows, write_rows

    with TreeMemory(os.getpid()) as mem:
        started = time.perf_counter()
        config = PipelineConfig(chunk_frames=chunk_frames, work_dir=str(work), providers=("cpu",))
        job = prepare_job([VideoRequest(str(video), str(output), (str(source),))], options, config)
        cpu = ExecutionOptions(providers=("cpu",))
        analyser = load_analyser(options, cpu)
        swapper = load_swapper(options, cpu)
        enhancer = load_enhancer(options, cpu)
        sources = SourceCache(swapper, job.table, read_image)
        segments = []
        frames = 0
        for task in job.tasks:
            row = chunk_row(task)
            row = enhance_rows(swap_rows(detect_rows(row, analyser, job.table), swapper, sources, job.table),
                               enhancer, job.table)
            out = write_rows(row, job.table)
            assert not out["error"][0], out["error"][0]
            segments.append(str(out["segment"][0]))
            frames += int(out["frames"][0])
        (vid,) = job.plans
        remux(str(video), segments, str(output), info=job.infos[vid])
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_pss": mem.peak, "frames": frames}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--faces", choices=["one", "many"], default="one",
                        help="face selector mode: one face per frame (default) or all ~5 of video_01")
    parser.add_argument("--repeat", type=int, default=10, help="length of the long clip, in video_01s")
    parser.add_argument("--chunk-frames", type=int, default=30)
    parser.add_argument("--face-tracking", choices=["off", "on"], default="off",
                        help="for the Ray runs; 'on' (ffray's default) adds the tracking pass, so the plain loop "
                             "(per-frame selection) no longer makes the same output")
    args = parser.parse_args()

    from contract_models import build  # noqa: F401  (fails early when run outside the repo)

    from ffray.media import probe

    video = ASSETS / "media/video_01.mp4"
    source = ASSETS / "media/meds-aa-S001-01.jpg"
    tmp = Path(tempfile.mkdtemp(prefix="ffray-bench-"))
    options = face_options(tmp, args.faces)
    ray_options = dataclasses.replace(options, face_tracking=args.face_tracking)
    long_clip = make_long_clip(video, tmp / "long.mp4", args.repeat)
    results: dict = {"faces": args.faces, "chunk_frames": args.chunk_frames, "cpus": os.cpu_count(),
                     "face_tracking": args.face_tracking}
    rows = []
    for label, clip in (("video_01", video), (f"video_01 x{args.repeat}", long_clip)):
        frames = probe(str(clip)).frames
        plain = run_plain(clip, source, options, tmp / f"plain-{clip.stem}.mp4", tmp / f"wp-{clip.stem}",
                          args.chunk_frames)
        ray_run = run_ray(clip, source, ray_options, tmp / f"ray-{clip.stem}.mp4", tmp / f"wr-{clip.stem}",
                          args.chunk_frames)
        same = stream_bytes(tmp / f"plain-{clip.stem}.mp4") == stream_bytes(tmp / f"ray-{clip.stem}.mp4")
        same = same if args.face_tracking == "off" else "n/a (tracking on)"
        rows.append({"video": label, "frames": frames,
                     "plain_fps": frames / plain["seconds"], "ray_fps": frames / ray_run["seconds"],
                     "plain_s": plain["seconds"], "ray_s": ray_run["seconds"],
                     "plain_peak_mib": plain["peak_pss"] / 2**20, "ray_peak_mib": ray_run["peak_pss"] / 2**20,
                     "outputs_identical": same})
        results.setdefault("stages", {})[label] = {
            name: {"bytes_in_per_frame": st["bytes_in_per_frame"], "bytes_out_per_frame": st["bytes_out_per_frame"],
                   "busy_s": st["busy_s"], "frames_per_busy_s": st["frames_per_busy_s"]}
            for name, st in ray_run["report"]["stages"].items()}
    results["runs"] = rows

    # resume: kill the driver when half the chunks are in the ledger, rerun, compare with a full run
    chunks = len(__import__("ffray.media", fromlist=["plan_chunks"]).plan_chunks(probe(str(long_clip)),
                                                                                   args.chunk_frames))
    work = tmp / "resume"
    killed = run_ray(long_clip, source, ray_options, tmp / "resume.mp4", work, args.chunk_frames, kill_at=chunks / 2)
    rerun = run_ray(long_clip, source, ray_options, tmp / "resume.mp4", work, args.chunk_frames)
    full = rows[1]["ray_s"]
    results["resume"] = {"chunks": chunks, "killed_after_s": killed["seconds"], "rerun_s": rerun["seconds"],
                         "full_run_s": full, "rerun_over_full": rerun["seconds"] / full,
                         "resumed_chunks": rerun["report"]["totals"]["chunks_resumed"],
                         "identical_to_full_run": (tmp / "resume.mp4").read_bytes()
                         == (tmp / f"ray-{long_clip.stem}.mp4").read_bytes()}  # both labelled alike

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"faces={args.faces} chunk_frames={args.chunk_frames} cpus={os.cpu_count()} face_tracking={args.face_tracking}")
    print(f"{'video':<16}{'frames':>7}{'plain fps':>11}{'ray fps':>9}{'plain MiB':>11}{'ray MiB':>9}  same streams")
    for r in rows:
        print(f"{r['video']:<16}{r['frames']:>7}{r['plain_fps']:>11.2f}{r['ray_fps']:>9.2f}"
              f"{r['plain_peak_mib']:>11.0f}{r['ray_peak_mib']:>9.0f}  {r['outputs_identical']}")
    print(f"Ray peak memory, long over short: {rows[1]['ray_peak_mib'] / rows[0]['ray_peak_mib']:.2f}x")
    print("\nobject-store bytes per frame at each stage boundary (ray run, video_01):")
    figures = results["stages"]["video_01"]
    for name in [n for n in ("read", "detector", "swapper", "enhancer", "writer") if n in figures]:
        st = figures[name]
        print(f"  {name:<9} in {st['bytes_in_per_frame'] or 0:>10.0f}  out {st['bytes_out_per_frame'] or 0:>10.0f}"
              f"  busy {st['busy_s']:>7.2f} s  {st['frames_per_busy_s'] or 0:>7.1f} frames/busy-s")
    r = results["resume"]
    print(f"\nresume: killed at {r['killed_after_s']:.1f} s (half of {r['chunks']} chunks), rerun {r['rerun_s']:.1f} s "
          f"vs full run {r['full_run_s']:.1f} s ({100 * r['rerun_over_full']:.0f} %), "
          f"{r['resumed_chunks']} chunks resumed, identical output: {r['identical_to_full_run']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
