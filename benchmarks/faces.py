"""Faces/s per stage and batch size on CPU: the real YuNet (dynamic-batch yunet_n) on frames of
video_01.mp4, and the contract models (tests/contract_models.py) for landmarks, ArcFace, swappers and
the enhancer. Contract models are tiny, so those rows measure ffray's own per-face work (warps,
normalisation, pixel boost, masks, paste-back) plus ONNX Runtime call overhead, not a real network.

    python benchmarks/faces.py [--assets ../shared/assets] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import contract_models  # noqa: E402

from ffray.faces.detect import FaceDetector  # noqa: E402
from ffray.faces.embed import ArcFace  # noqa: E402
from ffray.faces.enhance import Enhancer, EnhancerConfig  # noqa: E402
from ffray.faces.landmark import Landmarker68  # noqa: E402
from ffray.faces.swap import Swapper, SwapperConfig, read_emap  # noqa: E402

BATCHES = (1, 4, 16)


def session(path, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed(fn, items: int, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default=os.environ.get("FFRAY_TEST_ASSETS", str(REPO.parent / "shared" / "assets")))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    assets = Path(args.assets)
    with av.open(str(assets / "media" / "video_01.mp4")) as container:
        frames = [f.to_ndarray(format="bgr24") for _, f in zip(range(args.frames), container.decode(video=0), strict=False)]
    tmp = Path(tempfile.mkdtemp())
    rows = []

    yunet = session(assets / "models" / "yunet_n_dynamic.onnx", args.threads)
    faces_per_frame = None
    for b in BATCHES:
        det = FaceDetector(yunet, "yunet", batch_size=b)
        found = det.detect(frames)
        faces_per_frame = found
        rows.append(("detect yunet_n (real)", b, "frames/s", timed(lambda d=det: d.detect(frames), len(frames),
                                                                  args.repeat)))
    yunet_s = FaceDetector(session(assets / "models" / "yunet_s_640_640.onnx", args.threads), "yunet")
    rows.append(("detect yunet_s (real, fixed batch 1)", 1, "frames/s",
                 timed(lambda: yunet_s.detect(frames), len(frames), args.repeat)))

    face_frames = [frames[i] for i, c in enumerate(faces_per_frame) for _ in range(len(c))]
    boxes = [b for c in faces_per_frame for b in c.boxes]
    l5 = [p for c in faces_per_frame for p in c.landmarks]
    n_faces = len(boxes)
    fan = session(contract_models.build_2dfan4(tmp / "2dfan4.onnx"), args.threads)
    arc = session(contract_models.build_arcface(tmp / "arcface.onnx"), args.threads)
    for b in BATCHES:
        lm = Landmarker68(fan, "2dfan4", batch_size=b)
        rows.append(("landmark 2dfan4 (contract)", b, "faces/s",
                     timed(lambda m=lm: m.landmarks(face_frames, boxes, [0] * n_faces), n_faces, args.repeat)))
    for b in BATCHES:
        rec = ArcFace(arc, batch_size=b)
        rows.append(("embed arcface (contract)", b, "faces/s",
                     timed(lambda r=rec: r.embed(face_frames, l5), n_faces, args.repeat)))

    from ffray.faces.types import Face

    faces = [[Face(box=c.boxes[k].astype(np.float32), score=float(c.scores[k]), landmark_5=c.landmarks[k],
                   landmark_5_68=c.landmarks[k]) for k in range(len(c))] for c in faces_per_frame]
    source_face = faces[0][0]
    source_face.embedding = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    source_face.embedding_norm = source_face.embedding / np.linalg.norm(source_face.embedding)
    for name, boost in (("inswapper_128", None), ("inswapper_128", 256), ("hyperswap_1a_256", None)):
        path = contract_models.BUILDERS[name](tmp / f"{name}.onnx")
        swap_session = session(path, args.threads)
        for b in BATCHES:
            kind = "inswapper" if name.startswith("inswapper") else "hyperswap"
            cfg = SwapperConfig(type=kind, template="arcface_128", size=128 if kind == "inswapper" else 256,
                                mean=(0, 0, 0) if kind == "inswapper" else (0.5,) * 3,
                                std=(1, 1, 1) if kind == "inswapper" else (0.5,) * 3, pixel_boost=boost, batch_size=b)
            swapper = Swapper(swap_session, cfg, emap=read_emap(path) if kind == "inswapper" else None)
            source = swapper.prepare_source([frames[0]], [source_face])
            label = f"swap {name}" + (f" boost {boost}" if boost else "") + " (contract)"
            rows.append((label, b, "faces/s", timed(lambda s=swapper, src=source: s.swap(frames, faces, src), n_faces,
                                                    args.repeat)))
    gfpgan = session(contract_models.build_gfpgan(tmp / "gfpgan.onnx"), args.threads)
    for b in BATCHES:
        enhancer = Enhancer(gfpgan, EnhancerConfig(template="ffhq_512", size=512, batch_size=b))
        rows.append(("enhance gfpgan (contract)", b, "faces/s",
                     timed(lambda e=enhancer: e.enhance(frames, faces), n_faces, args.repeat)))

    print(f"CPU, {args.threads} ORT threads, {len(frames)} frames of video_01.mp4 (640x480), {n_faces} faces\n")
    print(f"{'stage':<42} {'batch':>5}  {'rate':>10}")
    for stage, batch, unit, rate in rows:
        print(f"{stage:<42} {batch:>5}  {rate:>8.1f} {unit}")


if __name__ == "__main__":
    main()
