"""The builtin pack: real detection and identity with dlib, a classical swapper and enhancer.

Needs no download and no GPU. Detector: libfacedetection's YuNet CNN (C++, weights compiled into the
library; PyPI `yuface`, BSD-3-Clause), or dlib's HOG frontal face detector (`face_detector_model`
`hog`; also what the default falls back to, with a warning, where `yuface` has no wheel). Landmarks
and identity: dlib's 5-point shape predictor and its 128-D ResNet face descriptor, whose weights ship
on PyPI in `face-recognition-models` (public domain / CC0). dlib's 68-point model is never used: its
licence forbids commercial use.

Detector choice (`benchmarks/builtin_detector.py`, video_01.mp4, five people per frame, 2-core CPU):
HOG at 1 upsample finds 41% of the faces (about 2 of 5 per frame: the small and turned ones are lost)
at ~110 ms CPU per 640x480 frame; HOG at 2 upsamples 52% at ~4x that; dlib's CNN MMOD 20% at ~2.5 s.
libfacedetection's YuNet finds all five in every frame at ~55 ms (OpenMP pinned to one thread: the
pack is single-threaded like dlib, and a shared CPU thrashes with more). Its boxes are YuNet's
(taller than HOG's, forehead to chin), as FaceFusion's `yunet` gives them.

Landmarks. With YuNet, `Face.landmark_5` / `landmark_5_68` are YuNet's own five keypoints (eye centres,
nose tip, mouth corners: FaceFusion's order, as FaceFusion's `yunet` gives them; whole pixels). dlib's
5-point predictor still runs on every face, in a HOG-shaped box derived from YuNet's (`predictor_rect`),
for the embedding. On video_01's faces (eye distances 8-30 px) YuNet's points lie 0.04-0.07 eye
distances from the ONNX YuNet's, the predictor's 0.09-0.2 (worse the smaller the face), so the swap
aligns on YuNet's. With HOG, dlib's 5-point predictor marks both corners of each eye and the base of
the nose (subnasale), not FaceFusion's eye centres, nose tip and mouth corners, and `Face.landmark_5` /
`landmark_5_68` are filled in FaceFusion's order as follows, in a frame where the origin is midway
between the eye centres, x runs towards the right eye and the unit is the eye distance:
  - eye centres: the mean of each eye's two corners (measured);
  - nose tip: (nose_base.x, 0.75 * nose_base.y);
  - mouth corners: (nose_base.x -/+ 0.42, 1.5 * nose_base.y).
The three derived points are a fixed face shape that follows the measured nose base (so it follows
pitch, yaw and face proportions roughly); the constants were calibrated once against YuNet's keypoints
on frontal photos, where the derived points land within ~0.06 eye distances of YuNet's. dlib's own
points (in dlib's order) stay in `Face.extra["dlib_shape_5"]` and are what the embedding uses.

Detection scores. YuNet: `Face.score` = (libfacedetection's confidence / 100)^2, the cls x obj product
that FaceFusion's `yunet` compares with `face_detector_score` (libfacedetection reports its square root,
in whole percent); the frame is seen at most `face_detector_size` square (downscaled to fit, as
FaceFusion does), so the default 640 costs the same per frame for any video size; faces down to ~10 px
at that size are found. HOG gives an SVM margin, not a probability: `Face.score` = margin + 0.5, so
`face_detector_score` (FaceFusion's default 0.5) corresponds to dlib's own threshold (margin 0); lower
it to find more (and falser) faces. HOG cannot see faces smaller than ~80 px; each upsample halves that
and costs ~4x the time (`face_detector_upsample`, HOG only; see `DEFAULT_UPSAMPLE`); HOG ignores
`face_detector_size`. `face_detector_angles` and NMS work as for the ONNX detectors. Every
`face_detector_model` except `hog` (`builtin`, or a FaceFusion name, which this pack does not load)
selects YuNet. The other model options of the ONNX pack (landmarker, recognizer, swapper and enhancer
model names, occluder/parser masks) do not apply here; the box mask options (`face_mask_blur`,
`face_mask_padding`) do.

Identity distance. `face_distance` is half dlib's Euclidean distance between 128-D descriptors, so
that `reference_face_distance` reads on a scale like FaceFusion's: the pack's default
(`REFERENCE_DISTANCES["builtin"]` in ffray.faces.options, 0.3) equals dlib's usual same-person tolerance
of 0.6 (same person 0.27-0.44 in dlib units on the test assets, others 0.75-0.92). `dlib_distance`
gives the raw Euclidean distance.

Swap. Per target face, in a crop aligned on FaceFusion's `ffhq_512` template at the face's own
resolution: the source face is warped onto the target's five points (affine least squares), its colour
matched to the target inside the face (Lab mean/std), Poisson-blended with `cv2.seamlessClone` into a
face ellipse, and pasted back through a feathered mask (min with the box mask of `face_mask_blur` /
`face_mask_padding`) with FaceFusion's paste-back, so every pixel outside that mask is untouched.
Several source images: the first image's face gives the pixels (as FaceFusion's image-driven swappers
do); the others only contribute to the averaged embedding.

Enhance. Edge-preserving denoise (bilateral) then unsharp masking of the aligned face crop, pasted back
through the same feathered face mask scaled by `face_enhancer_blend` / 100. The enhancer model name is
not used by this pack: any `face_enhancer_model` enables it.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffray.faces.align import estimate_matrix, template_points, transform_points, warp_face
from ffray.faces.detect import Candidates, detect_faces, nms_threshold, restrict_frame
from ffray.faces.masks import combine_masks, create_box_mask
from ffray.faces.options import REFERENCE_DISTANCES, FaceOptions
from ffray.faces.paste import paste_area, paste_into
from ffray.faces.select import average_identity
from ffray.faces.types import Face
from ffray.models.store import file_digests

log = logging.getLogger(__name__)

# `face_detector_model` that selects dlib's HOG detector; every other name selects YuNet
HOG_DETECTOR = "hog"
YUNET_MODEL = "libfacedetection_yunet"  # its key in `model_hashes` (sha256 of the library with the weights)
# HOG at 1 upsample finds faces down to ~40 px (dlib's and face_recognition's usual default); 2 finds
# ~20 px faces at ~4x the cost. See the module docstring and benchmarks.
DEFAULT_UPSAMPLE = 1
# dlib's 5-point predictor was trained on HOG/MMOD boxes: square, about the face without forehead and
# chin. From YuNet's box (x, y, w, h): side = PREDICTOR_SIDE * sqrt(w h), centre (x + w/2, y + h/2 +
# PREDICTOR_SHIFT_Y * h) (medians over 94 faces found by both, 12-336 px, on video_01 and the test photos)
PREDICTOR_SIDE = 1.05
PREDICTOR_SHIFT_Y = 0.075
# dlib's usual tolerance on the descriptor distance, and the factor that maps it onto FaceFusion's scale
DLIB_TOLERANCE = 0.6
DISTANCE_SCALE = 0.5
SCORE_OFFSET = 0.5  # Face.score = HOG margin + SCORE_OFFSET
EMBED_BATCH = 32  # face chips per ResNet call

# Derived FaceFusion points in the eye frame (see the module docstring)
NOSE_TIP_Y = 0.75
MOUTH_Y = 1.5
MOUTH_HALF_WIDTH = 0.42

CROP_TEMPLATE = "ffhq_512"
_TEMPLATE_EYE_DISTANCE = float(np.linalg.norm(np.subtract(*template_points(CROP_TEMPLATE, 1)[:2])))
MIN_CROP, MAX_CROP = 64, 1024
SOURCE_CROP = 512


def _dlib():
    import dlib  # imported lazily: the ONNX pack and `ffray --help` never need it

    return dlib


def model_paths() -> dict[str, Path]:
    """The weight files the builtin pack can use: dlib's two, and libfacedetection's library (its weights
    are compiled in) where `yuface` is installed."""
    import face_recognition_models as frm

    paths = {
        "dlib_shape_predictor_5": Path(frm.pose_predictor_five_point_model_location()),
        "dlib_face_recognition_resnet_v1": Path(frm.face_recognition_model_location()),
    }
    yunet = _yunet_library()
    if yunet is not None:
        paths[YUNET_MODEL] = yunet
    return paths


def _yunet_library() -> Path | None:
    """libfacedetection's shared library inside the `yuface` wheel, or None where it is not installed."""
    try:
        import yuface
    except ImportError:
        return None
    folder = Path(yuface.__file__).resolve().parent
    libraries = sorted(folder.glob("libfacedetection.so*")) + sorted(folder.glob("facedetection.dll"))  # Linux, Windows
    return libraries[0] if libraries else None


def limit_openmp_threads(threads: int) -> None:
    """Set the thread count of the OpenMP runtime bundled with `yuface` for the calling thread (OpenMP
    keeps it per thread, so call it in the thread that detects). One thread is as fast per frame on a
    busy CPU and never oversubscribes the cores a pipeline actor was given; results are the same."""
    try:
        import yuface
    except ImportError:
        return
    for library in _openmp_libraries(Path(yuface.__file__).resolve().parent.parent):
        library.omp_set_num_threads(int(threads))


_openmp_cache: dict[Path, list] = {}


def _openmp_libraries(site: Path) -> list:
    if site not in _openmp_cache:
        found = []
        # auditwheel's copy on Linux (already loaded by yuface: dlopen returns that same library)
        for path in sorted((site / "yuface.libs").glob("libgomp*.so*")):
            try:
                found.append(ctypes.CDLL(str(path)))
            except OSError:
                pass
        _openmp_cache[site] = found
    return _openmp_cache[site]


def _yunet_detect() -> Callable[[np.ndarray], np.ndarray] | None:
    """libfacedetection's detect (BGR uint8 HxWx3 -> int16 rows: conf %, x, y, w, h, 5 points), or None."""
    try:
        from yuface.yuface import detect
    except ImportError:
        return None
    return detect


def predictor_rect(box: Sequence[float]) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom; inclusive, dlib's way) that dlib's 5-point predictor gets
    for a YuNet box (x1, y1, x2, y2): shaped like the HOG boxes it was trained on."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    side = PREDICTOR_SIDE * float(np.sqrt(w * h))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + PREDICTOR_SHIFT_Y * h
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = max(int(round(side)), 1)
    return left, top, left + size - 1, top + size - 1


def facefusion_points(dlib_shape_5: np.ndarray) -> np.ndarray:
    """FaceFusion's 5 points (left eye, right eye, nose tip, left mouth, right mouth; image left/right)
    from dlib's 5 (right eye outer, right eye inner, left eye outer, left eye inner, nose base)."""
    p = np.asarray(dlib_shape_5, dtype=np.float64).reshape(5, 2)
    left_eye = (p[2] + p[3]) / 2
    right_eye = (p[0] + p[1]) / 2
    origin = (left_eye + right_eye) / 2
    axis_x = right_eye - origin  # half the eye distance
    scale = 2 * float(np.linalg.norm(axis_x))
    if scale < 1e-6:
        return np.stack([left_eye, right_eye, p[4], p[4], p[4]]).astype(np.float32)
    ux = axis_x / np.linalg.norm(axis_x)
    uy = np.array([-ux[1], ux[0]])
    nose_base = np.array([(p[4] - origin) @ ux, (p[4] - origin) @ uy]) / scale

    def frame(x: float, y: float) -> np.ndarray:
        return origin + scale * (x * ux + y * uy)

    nose_tip = frame(nose_base[0], NOSE_TIP_Y * nose_base[1])
    left_mouth = frame(nose_base[0] - MOUTH_HALF_WIDTH, MOUTH_Y * nose_base[1])
    right_mouth = frame(nose_base[0] + MOUTH_HALF_WIDTH, MOUTH_Y * nose_base[1])
    return np.stack([left_eye, right_eye, nose_tip, left_mouth, right_mouth]).astype(np.float32)


def dlib_distance(a: Face, b: Face) -> float:
    """dlib's Euclidean distance between two faces' 128-D descriptors (same person below ~0.6)."""
    if a.embedding is None or b.embedding is None:
        raise ValueError("dlib_distance needs embeddings; analyse with embed=True")
    return float(np.linalg.norm(np.asarray(a.embedding, np.float64) - np.asarray(b.embedding, np.float64)))


class _HogDetector:
    """HOG + 5-point predictor behind the `detect_raw` interface of `ffray.faces.detect`, so angles and
    NMS run exactly as for the ONNX detectors. Candidate landmarks are dlib's own 5 points."""

    type = "builtin"

    def __init__(self, detector, predictor, upsample: int, adjust_threshold: float, lock: threading.Lock):
        self._detector = detector
        self._predictor = predictor
        self._upsample = upsample
        self._adjust = adjust_threshold
        self._lock = lock

    def detect_raw(self, frames: Sequence[np.ndarray]) -> list[Candidates]:
        out = []
        for frame in frames:
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            with self._lock:
                rects, scores, _ = self._detector.run(rgb, self._upsample, self._adjust)
                shapes = [self._predictor(rgb, r) for r in rects]
            if not rects:
                out.append(Candidates.empty())
                continue
            boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float64)
            points = np.array([[(s.part(i).x, s.part(i).y) for i in range(5)] for s in shapes], np.float64)
            out.append(Candidates(boxes, np.asarray(scores, np.float64) + SCORE_OFFSET, points))
        return out


class _YunetDetector:
    """libfacedetection's YuNet behind the `detect_raw` interface. Candidate landmarks are 10 points:
    YuNet's own 5 (FaceFusion's order), then dlib's 5, predicted in a HOG-shaped box derived from each
    YuNet box (`predictor_rect`); `detect_faces` turns both back from rotated views."""

    type = "builtin"

    def __init__(self, detect, predictor, size: int, lock: threading.Lock):
        self._detect = detect
        self._predictor = predictor
        self._size = int(size)
        self._lock = lock

    def detect_raw(self, frames: Sequence[np.ndarray]) -> list[Candidates]:
        dlib = _dlib()
        out = []
        for frame in frames:
            seen = np.ascontiguousarray(restrict_frame(frame, (self._size, self._size)))
            ratio_w, ratio_h = frame.shape[1] / seen.shape[1], frame.shape[0] / seen.shape[0]
            with self._lock:
                limit_openmp_threads(1)
                # rows: conf %, x, y, w, h, 5 points; the 16th column is uninitialised memory
                raw = np.asarray(self._detect(seen), np.float64).reshape(-1, 16)[:, :15]
            if not len(raw):
                out.append(Candidates.empty())
                continue
            x, y = raw[:, 1] * ratio_w, raw[:, 2] * ratio_h
            boxes = np.stack([x, y, x + raw[:, 3] * ratio_w, y + raw[:, 4] * ratio_h], axis=-1)
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            with self._lock:
                shapes = [self._predictor(rgb, dlib.rectangle(*predictor_rect(box))) for box in boxes]
            dlib_points = np.array([[(s.part(i).x, s.part(i).y) for i in range(5)] for s in shapes], np.float64)
            yunet_points = raw[:, 5:15].reshape(-1, 5, 2) * [ratio_w, ratio_h]
            out.append(Candidates(boxes, (raw[:, 0] / 100) ** 2, np.concatenate([yunet_points, dlib_points], 1)))
        return out


class BuiltinAnalyser:
    """Detector (libfacedetection's YuNet, or dlib HOG), landmarks (dlib 5-point) and recognizer (dlib
    ResNet, 128-D)."""

    distance_scale = REFERENCE_DISTANCES["builtin"]  # what face_distance measures, and its default threshold

    def __init__(self, options: FaceOptions | None = None, upsample: int | None = None):
        dlib = _dlib()
        self.options = options or FaceOptions()
        self.upsample = int(self.options.face_detector_upsample if upsample is None else upsample)
        if self.upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {self.upsample}")
        paths = model_paths()
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe
        self._predictor = dlib.shape_predictor(str(paths["dlib_shape_predictor_5"]))
        self._encoder = dlib.face_recognition_model_v1(str(paths["dlib_face_recognition_resnet_v1"]))
        detect = None if self.options.face_detector_model == HOG_DETECTOR else _yunet_detect()
        if detect is not None and YUNET_MODEL in paths:
            if self.options.face_detector_size < 32:
                raise ValueError(f"face_detector_size must be >= 32, got {self.options.face_detector_size}")
            self.detector = "yunet"
            self._detector = _YunetDetector(detect, self._predictor, self.options.face_detector_size, self._lock)
        else:
            if self.options.face_detector_model != HOG_DETECTOR:
                log.warning("the builtin pack's YuNet detector needs the `yuface` package (no wheel for this "
                            "platform or Python?): detecting with dlib's HOG, which misses small and turned "
                            "faces; `--face-detector-model hog` says so and silences this warning")
            self.detector = HOG_DETECTOR
            paths.pop(YUNET_MODEL, None)
            self._detector = _HogDetector(dlib.get_frontal_face_detector(), self._predictor, self.upsample,
                                          self.options.face_detector_score - SCORE_OFFSET, self._lock)
        self.model_hashes = {name: file_digests(path)[0] for name, path in paths.items()}

    def face_distance(self, a: Face, b: Face) -> float:
        """dlib's Euclidean descriptor distance x 0.5: FaceFusion's 0.3 threshold = dlib's 0.6 tolerance."""
        return dlib_distance(a, b) * DISTANCE_SCALE

    def analyse(self, frames: Sequence[np.ndarray], embed: bool | None = None) -> list[list[Face]]:
        if embed is None:
            embed = self.options.face_selector_mode == "reference"
        angles = tuple(self.options.face_detector_angles) or (0,)
        found = detect_faces([self._detector], frames, angles, self.options.face_detector_score,
                             nms_threshold("builtin", angles))
        faces_per_frame = []
        for candidates in found:
            faces = []
            for box, score, marks in zip(candidates.boxes, candidates.scores, candidates.landmarks, strict=True):
                # YuNet: its own 5 points, then dlib's; HOG: dlib's 5, from which FaceFusion's are derived
                points, shape = (marks[:5].astype(np.float32), marks[5:]) if len(marks) == 10 \
                    else (facefusion_points(marks), marks)
                faces.append(Face(
                    box=np.asarray(box, np.float32), score=float(score),
                    landmark_5=points, landmark_5_68=points.copy(),
                    extra={"dlib_shape_5": np.asarray(shape, np.float32)},
                ))
            faces_per_frame.append(faces)
        if embed:
            self.embed(frames, faces_per_frame)
        return faces_per_frame

    def embed(self, frames: Sequence[np.ndarray], faces_per_frame: Sequence[Sequence[Face]]) -> None:
        """Fill `embedding` / `embedding_norm` in place from each face's dlib shape.

        Face chips of all frames go through the ResNet in one call (about 20% faster than per face on
        CPU; the descriptors are identical)."""
        dlib = _dlib()
        todo, chips = [], []
        for frame, faces in zip(frames, faces_per_frame, strict=True):
            pending = [f for f in faces if f.embedding is None]
            if not pending:
                continue
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            for face in pending:
                # dlib's own alignment for its ResNet: 150 px chip, 25% padding
                chips.append(dlib.get_face_chip(rgb, self._dlib_shape(face), size=150, padding=0.25))
                todo.append(face)
        if not todo:
            return
        descriptors = []
        for start in range(0, len(chips), EMBED_BATCH):
            with self._lock:
                descriptors += list(self._encoder.compute_face_descriptor(chips[start:start + EMBED_BATCH]))
        for face, descriptor in zip(todo, descriptors, strict=True):
            embedding = np.asarray(descriptor, dtype=np.float32)
            face.embedding = embedding
            face.embedding_norm = embedding / max(float(np.linalg.norm(embedding)), 1e-12)

    @staticmethod
    def _dlib_shape(face: Face):
        dlib = _dlib()
        points = face.extra.get("dlib_shape_5")
        if points is None:
            raise ValueError("the builtin recognizer needs faces detected by the builtin analyser (dlib shape)")
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
        parts = dlib.points([dlib.point(int(round(float(x))), int(round(float(y)))) for x, y in points])
        return dlib.full_object_detection(dlib.rectangle(x1, y1, x2 - 1, y2 - 1), parts)


# --- classical swap and enhance ---------------------------------------------------------------------

def crop_size_for(face: Face) -> int:
    """Crop side that keeps the face at its own resolution in the `ffhq_512` layout."""
    eyes = np.asarray(face.landmark_5_68, np.float64)[:2]
    eye_distance = float(np.linalg.norm(eyes[1] - eyes[0]))
    size = int(np.ceil(eye_distance / _TEMPLATE_EYE_DISTANCE / 16.0) * 16)
    return int(np.clip(size, MIN_CROP, MAX_CROP))


def face_ellipse_mask(points: np.ndarray, size: int, scale: float = 1.0) -> np.ndarray:
    """uint8 0/255 ellipse over brows, eyes, cheeks, nose and mouth, from 5 crop-space points."""
    p = np.asarray(points, np.float64)
    eye_mid, mouth_mid = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    eye_distance = float(np.linalg.norm(p[1] - p[0]))
    down = mouth_mid - eye_mid
    eye_mouth = float(np.linalg.norm(down))
    centre = eye_mid + 0.42 * down
    angle = float(np.degrees(np.arctan2(p[1][1] - p[0][1], p[1][0] - p[0][0])))
    axes = (max(1, int(round(0.95 * eye_distance * scale))), max(1, int(round(1.05 * eye_mouth * scale))))
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))), axes, angle, 0, 360, 255, -1, cv2.LINE_AA)
    return mask


def feathered_mask(points: np.ndarray, size: int) -> np.ndarray:
    """float32 0..1: 1 well inside the face ellipse, fading to exactly 0 at its edge."""
    sigma = max(0.5, 0.025 * size)
    # shrink by the blur's reach so the blurred mask is exactly 0 outside the full ellipse
    eye_distance = float(np.linalg.norm(np.asarray(points)[1] - np.asarray(points)[0]))
    reach = 3.2 * sigma
    shrink = max(0.3, 1.0 - reach / max(eye_distance * 0.95, 1.0))
    core = face_ellipse_mask(points, size, shrink).astype(np.float32) / 255
    return cv2.GaussianBlur(core, (0, 0), sigma).clip(0, 1)


def _match_colour(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer in Lab: source's face statistics moved to the target's (inside mask)."""
    inside = mask > 0
    if inside.sum() < 16:
        return source
    src = cv2.cvtColor(source, cv2.COLOR_BGR2LAB).astype(np.float32)
    tgt = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
    src_mean, src_std = src[inside].mean(axis=0), src[inside].std(axis=0)
    tgt_mean, tgt_std = tgt[inside].mean(axis=0), tgt[inside].std(axis=0)
    gain = np.clip(tgt_std / np.maximum(src_std, 1e-3), 0.5, 2.0)
    out = (src - src_mean) * gain + tgt_mean
    return cv2.cvtColor(out.clip(0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def _affine_fit(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 affine over all points (robust estimators would drop points out of five)."""
    design = np.hstack([np.asarray(points, np.float64), np.ones((len(points), 1))])
    solution = np.linalg.lstsq(design, np.asarray(targets, np.float64), rcond=None)[0]
    return solution.T


@dataclass
class BuiltinSource:
    """A prepared source identity: an aligned crop of the first source face, its 5 points in the crop,
    and the averaged descriptor (for reporting and selection)."""

    crop: np.ndarray  # BGR uint8, SOURCE_CROP x SOURCE_CROP, ffhq_512 layout
    points: np.ndarray  # (5, 2) float64, FaceFusion order, crop coordinates
    embedding: np.ndarray | None = None


class BuiltinSwapper:
    """Classical face swap: align, colour-match, seamless clone, feathered paste-back."""

    def __init__(self, options: FaceOptions | None = None):
        self.options = options or FaceOptions()
        self.model_hashes: dict[str, str] = {}  # no model file: pure OpenCV

    def prepare_source(self, images: Sequence[np.ndarray], faces: Sequence[Face]) -> BuiltinSource:
        if not images or not faces:
            raise ValueError("prepare_source needs at least one source image and its face")
        first_image, first_face = images[0], faces[0]
        crop, matrix = warp_face(first_image, first_face.landmark_5_68, CROP_TEMPLATE, SOURCE_CROP)
        points = transform_points(np.asarray(first_face.landmark_5_68, np.float64), matrix)
        identity = average_identity(list(faces))
        embedding = None if identity is None or identity.embedding is None else np.asarray(identity.embedding)
        return BuiltinSource(crop=crop, points=points, embedding=embedding)

    def swap(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]],
             source: BuiltinSource, inplace: bool = False) -> list[np.ndarray]:
        out = []
        for frame, frame_faces in zip(frames, faces, strict=True):
            result = frame if inplace else frame.copy()
            for face in frame_faces:
                result = self._swap_face(result, face, source)
            out.append(result)
        return out

    def _swap_face(self, frame: np.ndarray, face: Face, source: BuiltinSource) -> np.ndarray:
        size = crop_size_for(face)
        try:
            target_crop, matrix = warp_face(frame, face.landmark_5_68, CROP_TEMPLATE, size)
        except ValueError:  # degenerate landmarks: leave this face alone rather than fail the frame
            return frame
        target_points = transform_points(np.asarray(face.landmark_5_68, np.float64), matrix)

        # source at the target's resolution first (INTER_AREA avoids aliasing), then onto its points
        scale = size / source.crop.shape[0]
        source_small = cv2.resize(source.crop, (size, size), interpolation=cv2.INTER_AREA)
        fit = _affine_fit(source.points * scale, target_points)
        warped = cv2.warpAffine(source_small, fit, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)

        clone_mask = face_ellipse_mask(target_points, size)
        # keep a 1-px frame free: seamlessClone needs boundary pixels around the mask
        clone_mask[:2, :] = clone_mask[-2:, :] = 0
        clone_mask[:, :2] = clone_mask[:, -2:] = 0
        ys, xs = np.nonzero(clone_mask)
        if len(xs) < 16:
            return frame
        matched = _match_colour(warped, target_crop, clone_mask)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        centre = (int((x0 + x1 + 1) // 2), int((y0 + y1 + 1) // 2))
        # seamlessClone may write into its mask argument
        cloned = cv2.seamlessClone(matched, target_crop, clone_mask.copy(), centre, cv2.NORMAL_CLONE)

        paste_into(frame, cloned.astype(np.float32), self._crop_mask(target_points, size), matrix)
        return frame

    def _crop_mask(self, points: np.ndarray, size: int) -> np.ndarray:
        return combine_masks([
            feathered_mask(points, size),
            create_box_mask((size, size), self.options.face_mask_blur, self.options.face_mask_padding),
        ])

    def paste_mask(self, frame_shape: tuple[int, ...], face: Face) -> np.ndarray:
        """The float 0..1 mask, in frame coordinates, through which `swap` pastes this face: every pixel
        where it is 0 is left bit-identical."""
        size = crop_size_for(face)
        matrix = estimate_matrix(face.landmark_5_68, CROP_TEMPLATE, size)
        points = transform_points(np.asarray(face.landmark_5_68, np.float64), matrix)
        (x1, y1, x2, y2), paste_matrix = paste_area(frame_shape, (size, size), matrix)
        mask = np.zeros(frame_shape[:2], np.float32)
        if x2 > x1 and y2 > y1:
            mask[y1:y2, x1:x2] = cv2.warpAffine(self._crop_mask(points, size), paste_matrix,
                                                (x2 - x1, y2 - y1)).clip(0, 1)
        return mask


class BuiltinEnhancer:
    """Classical enhancer: bilateral denoise + unsharp mask inside the face, blended by face_enhancer_blend."""

    def __init__(self, options: FaceOptions | None = None):
        self.options = options or FaceOptions()
        self.model_hashes: dict[str, str] = {}

    def enhance(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]],
                inplace: bool = False) -> list[np.ndarray]:
        out = []
        for frame, frame_faces in zip(frames, faces, strict=True):
            result = frame if inplace else frame.copy()
            for face in frame_faces:
                result = self._enhance_face(result, face)
            out.append(result)
        return out

    def _enhance_face(self, frame: np.ndarray, face: Face) -> np.ndarray:
        size = crop_size_for(face)
        try:
            crop, matrix = warp_face(frame, face.landmark_5_68, CROP_TEMPLATE, size)
        except ValueError:  # degenerate landmarks
            return frame
        points = transform_points(np.asarray(face.landmark_5_68, np.float64), matrix)
        diameter = max(3, size // 48) | 1
        denoised = cv2.bilateralFilter(crop, diameter, sigmaColor=18, sigmaSpace=diameter)
        blurred = cv2.GaussianBlur(denoised, (0, 0), max(0.8, size / 192))
        sharpened = cv2.addWeighted(denoised, 1.8, blurred, -0.8, 0)
        blend = float(np.clip(self.options.face_enhancer_blend / 100, 0, 1))
        mask = combine_masks([
            feathered_mask(points, size),
            create_box_mask((size, size), self.options.face_mask_blur, (0, 0, 0, 0)),
        ]) * blend
        paste_into(frame, sharpened, mask, matrix)
        return frame
