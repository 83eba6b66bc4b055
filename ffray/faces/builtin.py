"""The builtin pack: real detection and identity with dlib, a classical swapper and enhancer.

Needs no download and no GPU: dlib's HOG frontal face detector, its 5-point shape predictor and its
128-D ResNet face descriptor, whose weights ship on PyPI in `face-recognition-models` (public domain /
CC0). dlib's 68-point model is never used: its licence forbids commercial use.

Landmarks. dlib's 5-point predictor marks both corners of each eye and the base of the nose (subnasale),
not FaceFusion's eye centres, nose tip and mouth corners. `Face.landmark_5` / `landmark_5_68` are filled
in FaceFusion's order as follows, in a frame where the origin is midway between the eye centres, x runs
towards the right eye and the unit is the eye distance:
  - eye centres: the mean of each eye's two corners (measured);
  - nose tip: (nose_base.x, 0.75 * nose_base.y);
  - mouth corners: (nose_base.x -/+ 0.42, 1.5 * nose_base.y).
The three derived points are a fixed face shape that follows the measured nose base (so it follows
pitch, yaw and face proportions roughly); the constants were calibrated once against YuNet's keypoints
on frontal photos, where the derived points land within ~0.06 eye distances of YuNet's. dlib's own
points (in dlib's order) stay in `Face.extra["dlib_shape_5"]` and are what the embedding uses.

Detection scores. HOG gives an SVM margin, not a probability. `Face.score` = margin + 0.5, so
`face_detector_score` (FaceFusion's default 0.5) corresponds to dlib's own threshold (margin 0); lower
it to find more (and falser) faces. `face_detector_angles` and NMS work as for the ONNX detectors.
HOG cannot see faces smaller than ~80 px; each upsample halves that and costs ~4x the time (the
`upsample` argument; see `DEFAULT_UPSAMPLE`). The model options of the ONNX pack (detector model and
size, landmarker, recognizer, swapper and enhancer model names, occluder/parser masks) do not apply here;
the box mask options (`face_mask_blur`, `face_mask_padding`) do.

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

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffray.faces.align import estimate_matrix, template_points, transform_points, warp_face
from ffray.faces.detect import Candidates, detect_faces, nms_threshold
from ffray.faces.masks import combine_masks, create_box_mask
from ffray.faces.options import REFERENCE_DISTANCES, FaceOptions
from ffray.faces.paste import paste_area, paste_into
from ffray.faces.select import average_identity
from ffray.faces.types import Face
from ffray.models.store import file_digests

# HOG at 1 upsample finds faces down to ~40 px (dlib's and face_recognition's usual default); 2 finds
# ~20 px faces at ~4x the cost. See the module docstring and benchmarks.
DEFAULT_UPSAMPLE = 1
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
    import face_recognition_models as frm

    return {
        "dlib_shape_predictor_5": Path(frm.pose_predictor_five_point_model_location()),
        "dlib_face_recognition_resnet_v1": Path(frm.face_recognition_model_location()),
    }


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


class BuiltinAnalyser:
    """Detector (dlib HOG), landmarks (dlib 5-point) and recognizer (dlib ResNet, 128-D)."""

    distance_scale = REFERENCE_DISTANCES["builtin"]  # what face_distance measures, and its default threshold

    def __init__(self, options: FaceOptions | None = None, upsample: int | None = None):
        dlib = _dlib()
        self.options = options or FaceOptions()
        self.upsample = int(self.options.face_detector_upsample if upsample is None else upsample)
        if self.upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {self.upsample}")
        paths = model_paths()
        self.model_hashes = {name: file_digests(path)[0] for name, path in paths.items()}
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe
        self._predictor = dlib.shape_predictor(str(paths["dlib_shape_predictor_5"]))
        self._encoder = dlib.face_recognition_model_v1(str(paths["dlib_face_recognition_resnet_v1"]))
        self._hog = _HogDetector(dlib.get_frontal_face_detector(), self._predictor, self.upsample,
                                 self.options.face_detector_score - SCORE_OFFSET, self._lock)

    def face_distance(self, a: Face, b: Face) -> float:
        """dlib's Euclidean descriptor distance x 0.5: FaceFusion's 0.3 threshold = dlib's 0.6 tolerance."""
        return dlib_distance(a, b) * DISTANCE_SCALE

    def analyse(self, frames: Sequence[np.ndarray], embed: bool | None = None) -> list[list[Face]]:
        if embed is None:
            embed = self.options.face_selector_mode == "reference"
        angles = tuple(self.options.face_detector_angles) or (0,)
        found = detect_faces([self._hog], frames, angles, self.options.face_detector_score,
                             nms_threshold("builtin", angles))
        faces_per_frame = []
        for candidates in found:
            faces = []
            for box, score, shape in zip(candidates.boxes, candidates.scores, candidates.landmarks, strict=True):
                points = facefusion_points(shape)
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
