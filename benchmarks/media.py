"""Media layer throughput: decode (PyAV vs decord; one chunk vs chunks in parallel processes) and
segment encode per preset, at 480p (the shared asset video_01.mp4) and on a generated 1080p clip.

    python benchmarks/media.py [--json] [--workers N] [--frames-1080p N]

Frames/s are for frames delivered as BGR uint8 arrays (the project's format), so conversion counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # media_clips: the test-clip generator

ASSETS = Path(os.environ.get("FFRAY_TEST_ASSETS", REPO.parent / "shared" / "assets"))


def decode_pyav_sequential(path: str) -> int:
    from ffray.media import decode_all

    return sum(1 for _ in decode_all(path))


def decode_decord_sequential(path: str, batch: int = 8) -> int:
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    count = 0
    for start in range(0, len(reader), batch):
        rgb = reader.get_batch(list(range(start, min(start + batch, len(reader))))).asnumpy()
        count += len(rgb[..., ::-1].copy())
    return count


def decode_one_chunk(args) -> int:
    from ffray.media import decode_chunk

    path, chunk = args
    return sum(1 for _ in decode_chunk(path, chunk))


def decode_decord_chunk(args) -> int:
    import decord

    path, (start, end) = args
    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    count = 0
    for s in range(start, end, 8):
        count += len(reader.get_batch(list(range(s, min(s + 8, end)))).asnumpy())
    return count


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def make_1080p(folder: Path, frames: int) -> Path:
    from media_clips import make_clip

    return make_clip(folder / "clip_1080p.mp4", frames=frames, width=1920, height=1080, gop=30, bframes=2,
                     options={"preset": "ultrafast", "crf": "20"})


def bench_video(label: str, path: Path, workers: int, chunk_frames: int) -> list[dict]:
    from ffray.media import plan_chunks, probe

    path = str(path)
    info = probe(path)
    rows = []
    decode_pyav_sequential(path)  # warm the page cache and imports
    n, seconds = timed(decode_pyav_sequential, path)
    rows.append({"video": label, "test": "decode sequential", "backend": "pyav", "frames": n, "fps": n / seconds})
    n, seconds = timed(decode_decord_sequential, path)
    rows.append({"video": label, "test": "decode sequential", "backend": "decord", "frames": n, "fps": n / seconds})
    chunks = plan_chunks(info, chunk_frames)
    middle = chunks[len(chunks) // 2]
    n, seconds = timed(decode_one_chunk, (path, middle))
    rows.append({"video": label, "test": f"decode 1 chunk ({middle.frames} fr)", "backend": "pyav", "frames": n,
                 "fps": n / seconds})
    n, seconds = timed(decode_decord_chunk, (path, (middle.start, middle.end)))
    rows.append({"video": label, "test": f"decode 1 chunk ({middle.frames} fr)", "backend": "decord", "frames": n,
                 "fps": n / seconds})
    for backend, fn, jobs in (("pyav", decode_one_chunk, [(path, c) for c in chunks]),
                              ("decord", decode_decord_chunk, [(path, (c.start, c.end)) for c in chunks])):
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(fn, jobs[:workers]))  # start the workers before timing
            start = time.perf_counter()
            n = sum(pool.map(fn, jobs))
            seconds = time.perf_counter() - start
        rows.append({"video": label, "test": f"decode {len(chunks)} chunks, {workers} procs", "backend": backend,
                     "frames": n, "fps": n / seconds})
    return rows


def bench_encode(label: str, path: Path, presets: list[str], frames: int) -> list[dict]:
    from ffray.media import EncodeOptions, decode_all, encode_segment, probe

    info = probe(path)
    images = []
    for pts, image in decode_all(path):
        images.append((image, pts))
        if len(images) >= frames:
            break
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for preset in presets:
            opts = EncodeOptions(preset=preset)
            seg, seconds = timed(encode_segment, images, Path(folder) / f"{preset}.mp4", info, opts)
            rows.append({"video": label, "test": f"encode libx264 {preset} crf{opts.crf} threads{opts.threads}",
                         "backend": "pyav", "frames": seg.frames, "fps": seg.frames / seconds,
                         "bytes": os.path.getsize(seg.path)})
        # what an .avi output gets (see ffray/media/encode.py)
        opts = EncodeOptions.for_output("out.avi")
        seg, seconds = timed(encode_segment, images, Path(folder) / "avi.mp4", info, opts)
        rows.append({"video": label, "test": f"encode mpeg4 (avi) qscale{opts.codec_options()['qmin']} "
                                             f"threads{opts.threads}",
                     "backend": "pyav", "frames": seg.frames, "fps": seg.frames / seconds,
                     "bytes": os.path.getsize(seg.path)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--frames-1080p", type=int, default=120)
    parser.add_argument("--presets", default="ultrafast,veryfast,medium")
    args = parser.parse_args()
    presets = args.presets.split(",")

    rows = []
    video_01 = ASSETS / "media" / "video_01.mp4"
    with tempfile.TemporaryDirectory() as folder:
        clip = make_1080p(Path(folder), args.frames_1080p)
        if video_01.exists():
            rows += bench_video("480p video_01", video_01, args.workers, 30)
        else:
            print(f"skipping 480p: {video_01} not found", file=sys.stderr)
        rows += bench_video("1080p generated", clip, args.workers, 30)
        if video_01.exists():
            rows += bench_encode("480p video_01", video_01, presets, 90)
        rows += bench_encode("1080p generated", clip, presets, 60)

    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "workers": args.workers, "rows": rows}, indent=2))
        return 0
    print(f"{os.cpu_count()} CPUs, {args.workers} worker processes")
    print(f"{'video':<16} {'test':<42} {'backend':<7} {'frames':>6} {'frames/s':>9}")
    for row in rows:
        print(f"{row['video']:<16} {row['test']:<42} {row['backend']:<7} {row['frames']:>6} {row['fps']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
