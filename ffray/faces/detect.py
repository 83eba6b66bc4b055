"""Face detectors exactly as FaceFusion's `face_detector`: yolo_face, scrfd, retinaface, yunet.

Preprocessing: optional margin (zero padding), downscale-only resize, paste top-left into a zero
S x S canvas, BGR kept, NCHW float32, per-family normalisation. Decoding per family, then
`cv2.dnn.NMSBoxes`. Frames are batched into one ONNX call per chunk when the model's batch dimension
is dynamic; a model with a fixed batch of 1 runs once per frame. Results are the same either way.

FaceFusion's `if numpy.any(keep_indices)` guard is reproduced on purpose: when the only candidate of a
stride (or of yolo_face's 8400) above the threshold is index 0, the top-left anchor, FaceFusion finds
nothing there, and so do we. It can only drop a face whose sole confident anchor is the corner cell,
and matching FaceFusion's faces frame for frame matters more than rescuing that case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ffray.faces.align import rotation_matrix_and_size, transform_box, transform_points

DETECTOR_TYPES = ("yolo_face", "scrfd", "retinaface", "yunet")
FEATURE_STRIDES = (8, 16, 32)


@dataclass
class Candidates:
    """Detections of one frame in frame coordinates, before NMS (or after, when returned by `detect`)."""

    boxes: np.ndarray  # (N, 4) float64 x1 y1 x2 y2
    scores: np.ndarray  # (N,) float
    landmarks: np.ndarray  # (N, 5, 2) float64

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, indices: Sequence[int]) -> Candidates:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return Candidates(self.boxes[idx], self.scores[idx], self.landmarks[idx])

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.landmarks for p in parts]))


def nms_threshold(detector_model: str, angles: Sequence[int]) -> float:
    """FaceFusion's `get_nms_threshold`: 0.1 for `many`, else 0.4/0.3/0.2/0.1 for 1/2/3/4 angles."""
    if detector_model == "many":
        return 0.1
    return {2: 0.3, 3: 0.2, 4: 0.1}.get(len(angles), 0.4)


def apply_nms(candidates: Candidates, score_threshold: float, iou_threshold: float) -> list[int]:
    """`cv2.dnn.NMSBoxes` on xywh boxes; kept indices, best score first."""
    if not len(candidates):
        return []
    xywh = [(float(x1), float(y1), float(x2 - x1), float(y2 - y1)) for x1, y1, x2, y2 in candidates.boxes]
    keep = cv2.dnn.NMSBoxes(xywh, [float(s) for s in candidates.scores], score_threshold=score_threshold,
                            nms_threshold=iou_threshold)
    return [int(i) for i in np.asarray(keep).reshape(-1)]


def margin_pixels(shape: tuple[int, ...], margin: Sequence[float]) -> tuple[int, int, int, int]:
    """(top, right, bottom, left) pixels for margins in percent: m% -> int(dim * interp(m, [0,100], [0,0.5]))."""
    h, w = shape[:2]
    top, right, bottom, left = margin
    return (int(h * np.interp(top, [0, 100], [0, 0.5])), int(w * np.interp(right, [0, 100], [0, 0.5])),
            int(h * np.interp(bottom, [0, 100], [0, 0.5])), int(w * np.interp(left, [0, 100], [0, 0.5])))


def restrict_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscale (bilinear) to fit `size` = (width, height); never upscale."""
    height, width = frame.shape[:2]
    max_w, max_h = size
    if height > max_h or width > max_w:
        scale = min(max_h / height, max_w / width)
        return cv2.resize(frame, (int(width * scale), int(height * scale)))
    return frame


def normalise_detect_input(canvas: np.ndarray, detector_type: str) -> np.ndarray:
    if detector_type in ("retinaface", "scrfd"):
        return (canvas - 127.5) / 128.0
    if detector_type == "yolo_face":
        return canvas / 255.0
    return canvas  # yunet: raw 0..255


def prepare_detect_input(frame: np.ndarray, size: int, detector_type: str) -> tuple[np.ndarray, float, float]:
    """(1x3xSxS float32 input, ratio_width, ratio_height) for one BGR frame."""
    resized = restrict_frame(frame, (size, size))
    ratio_height = frame.shape[0] / resized.shape[0]
    ratio_width = frame.shape[1] / resized.shape[1]
    canvas = np.zeros((size, size, 3))
    canvas[:resized.shape[0], :resized.shape[1], :] = resized
    canvas = np.expand_dims(canvas.transpose(2, 0, 1), axis=0).astype(np.float32)
    return normalise_detect_input(canvas, detector_type), ratio_width, ratio_height


def static_anchors(stride: int, anchor_total: int, rows: int, cols: int) -> np.ndarray:
    """Anchor centres (x, y) * stride in row-major order, each repeated `anchor_total` times."""
    y, x = np.mgrid[:rows, :cols][::-1]
    anchors = np.stack((y, x), axis=-1)
    anchors = (anchors * stride).reshape((-1, 2))
    return np.stack([anchors] * anchor_total, axis=1).reshape((-1, 2))


def _per_item(output: np.ndarray, item: int, batched: bool) -> np.ndarray:
    # models exported without a batch axis (InsightFace's SCRFD/RetinaFace) give (K, C) for batch 1
    return output[item] if batched else output


def decode_anchor_distance(outputs: Sequence[np.ndarray], size: int, score: float, ratio_w: float,
                           ratio_h: float) -> Candidates:
    """retinaface / scrfd: 2 anchors per cell, distances x stride, `score >= threshold`."""
    boxes, scores, landmarks = [], [], []
    for index, stride in enumerate(FEATURE_STRIDES):
        raw_scores = outputs[index]
        keep = np.where(raw_scores >= score)[0]
        if np.any(keep):  # FaceFusion quirk: a stride whose only hit is anchor 0 yields nothing
            cells = size // stride
            anchors = static_anchors(stride, 2, cells, cells)
            distance = outputs[index + 3] * stride
            kps = outputs[index + 6] * stride
            box = np.column_stack([anchors[:, 0] - distance[:, 0], anchors[:, 1] - distance[:, 1],
                                   anchors[:, 0] + distance[:, 2], anchors[:, 1] + distance[:, 3]])[keep]
            boxes.append(box * [ratio_w, ratio_h, ratio_w, ratio_h])
            scores.append(raw_scores[keep][:, 0])
            points = np.stack((anchors[:, 0::2] + kps[:, 0::2], anchors[:, 1::2] + kps[:, 1::2]), axis=-1)
            landmarks.append(points[keep] * [ratio_w, ratio_h])
    return _candidates(boxes, scores, landmarks)


def decode_yolo_face(output: np.ndarray, score: float, ratio_w: float, ratio_h: float) -> Candidates:
    """yolo_face: (20, 8400) -> [cx, cy, w, h, score, 5 x (x, y, conf)], `score > threshold` (strict)."""
    detection = np.squeeze(output).T
    raw_boxes, raw_scores, raw_points = np.split(detection, [4, 5], axis=1)
    keep = np.where(raw_scores > score)[0]
    if not np.any(keep):
        return Candidates.empty()
    raw_boxes, raw_scores, raw_points = raw_boxes[keep], raw_scores[keep], raw_points[keep].copy()
    boxes = np.column_stack([(raw_boxes[:, 0] - raw_boxes[:, 2] / 2) * ratio_w,
                             (raw_boxes[:, 1] - raw_boxes[:, 3] / 2) * ratio_h,
                             (raw_boxes[:, 0] + raw_boxes[:, 2] / 2) * ratio_w,
                             (raw_boxes[:, 1] + raw_boxes[:, 3] / 2) * ratio_h])
    raw_points[:, 0::3] = raw_points[:, 0::3] * ratio_w
    raw_points[:, 1::3] = raw_points[:, 1::3] * ratio_h
    landmarks = raw_points.reshape(-1, 5, 3)[:, :, :2]
    return Candidates(boxes.astype(np.float64), raw_scores.ravel().astype(np.float64), landmarks.astype(np.float64))


def decode_yunet(outputs: Sequence[np.ndarray], size: int, score: float, ratio_w: float,
                 ratio_h: float) -> Candidates:
    """yunet: 1 anchor per cell, score = cls * obj `>= threshold` (FaceFusion; OpenCV uses the sqrt)."""
    boxes, scores, landmarks = [], [], []
    for index, stride in enumerate(FEATURE_STRIDES):
        raw_scores = (outputs[index] * outputs[index + 3]).reshape(-1)
        keep = np.where(raw_scores >= score)[0]
        if np.any(keep):
            cells = size // stride
            anchors = static_anchors(stride, 1, cells, cells)
            raw_box = outputs[index + 6]
            centre = raw_box[:, :2] * stride + anchors
            extent = np.exp(raw_box[:, 2:4]) * stride
            box = np.stack([centre[:, 0] - extent[:, 0] / 2, centre[:, 1] - extent[:, 1] / 2,
                            centre[:, 0] + extent[:, 0] / 2, centre[:, 1] + extent[:, 1] / 2], axis=-1)
            boxes.append(box[keep] * [ratio_w, ratio_h, ratio_w, ratio_h])
            scores.append(raw_scores[keep])
            kps = outputs[index + 9]
            points = np.concatenate([kps[:, [2 * k, 2 * k + 1]] * stride + anchors for k in range(5)],
                                    axis=-1).reshape(-1, 5, 2)
            landmarks.append(points[keep] * [ratio_w, ratio_h])
    return _candidates(boxes, scores, landmarks)


def _candidates(boxes: list, scores: list, landmarks: list) -> Candidates:
    if not boxes:
        return Candidates.empty()
    return Candidates(np.concatenate(boxes).astype(np.float64), np.concatenate(scores).astype(np.float64),
                      np.concatenate(landmarks).astype(np.float64))


def normalise_box(box: np.ndarray) -> np.ndarray:
    x1, x2 = sorted([box[0], box[2]])
    y1, y2 = sorted([box[1], box[3]])
    return np.array([x1, y1, x2, y2])


def has_dynamic_batch(session) -> bool:
    dim = session.get_inputs()[0].shape[0]
    return not isinstance(dim, int)


def run_batched(session, feeds: list[dict[str, np.ndarray]], batch_size: int) -> list[list[np.ndarray]]:
    """Run items (each a dict of batch-1 inputs) in chunks of `batch_size` when the model's first input
    has a dynamic batch dimension, else one by one. Returns, per item, its outputs (batch axis kept
    at size 1 for batched models; as the model gives them for batch-1 models).

    A model whose input batch is dynamic but whose outputs have no batch axis (InsightFace's
    RetinaFace/SCRFD exports give [anchors, C]) cannot be split per item: such a chunk is re-run
    one item at a time, so the result is always that of batch size 1."""
    if not feeds:
        return []
    results: list[list[np.ndarray]] = []
    if has_dynamic_batch(session) and batch_size > 1:
        for start in range(0, len(feeds), batch_size):
            chunk = feeds[start:start + batch_size]
            if len(chunk) == 1:
                results.append(session.run(None, chunk[0]))
                continue
            inputs = {name: np.concatenate([f[name] for f in chunk]) for name in chunk[0]}
            outputs = session.run(None, inputs)
            if any(o.ndim == 0 or o.shape[0] != len(chunk) for o in outputs):
                results.extend(session.run(None, feed) for feed in chunk)
                continue
            for k in range(len(chunk)):
                results.append([o[k:k + 1] for o in outputs])
    else:
        for feed in feeds:
            results.append(session.run(None, feed))
    return results


class FaceDetector:
    """One detector model (an `onnxruntime.InferenceSession`) of a FaceFusion detector type."""

    def __init__(self, session, detector_type: str, size: int = 640, score: float = 0.5,
                 batch_size: int = 8, margin: Sequence[float] = (0, 0, 0, 0)):
        if detector_type not in DETECTOR_TYPES:
            raise ValueError(f"unknown detector type {detector_type!r}; choose from {', '.join(DETECTOR_TYPES)}")
        self.session = session
        self.type = detector_type
        self.size = int(size)
        self.score = float(score)
        self.batch_size = max(1, int(batch_size))
        self.margin = tuple(margin)
        self.input_name = session.get_inputs()[0].name

    def _decode(self, outputs: list[np.ndarray], ratio_w: float, ratio_h: float) -> Candidates:
        if self.type == "yolo_face":
            return decode_yolo_face(outputs[0], self.score, ratio_w, ratio_h)
        # drop a leading batch axis of size 1; rank-2 outputs have none
        outputs = [o[0] if o.ndim == 3 else o for o in outputs]
        if self.type == "yunet":
            return decode_yunet(outputs, self.size, self.score, ratio_w, ratio_h)
        return decode_anchor_distance(outputs, self.size, self.score, ratio_w, ratio_h)

    def detect_raw(self, frames: Sequence[np.ndarray]) -> list[Candidates]:
        """Candidates per frame (angle 0, margin applied and removed), before NMS."""
        feeds, ratios, margins = [], [], []
        for frame in frames:
            top, right, bottom, left = margin_pixels(frame.shape, self.margin)
            padded = np.pad(frame, ((top, bottom), (left, right), (0, 0))) if any((top, right, bottom, left)) \
                else frame
            tensor, ratio_w, ratio_h = prepare_detect_input(padded, self.size, self.type)
            feeds.append({self.input_name: tensor})
            ratios.append((ratio_w, ratio_h))
            margins.append((left, top))
        results = []
        for outputs, (ratio_w, ratio_h), (left, top) in zip(run_batched(self.session, feeds, self.batch_size),
                                                             ratios, margins, strict=True):
            found = self._decode(outputs, ratio_w, ratio_h)
            if len(found):
                found.boxes = np.array([normalise_box(b) for b in found.boxes]) - [left, top, left, top]
                found.landmarks = found.landmarks - [left, top]
            results.append(found)
        return results

    def detect(self, frames: Sequence[np.ndarray], angles: Sequence[int] = (0,),
               iou_threshold: float | None = None) -> list[Candidates]:
        """Candidates per frame after NMS (best first), over all `angles` (0/90/180/270)."""
        threshold = nms_threshold(self.type, angles) if iou_threshold is None else iou_threshold
        return detect_faces([self], frames, angles, self.score, threshold)


def detect_faces(detectors: Sequence[FaceDetector], frames: Sequence[np.ndarray], angles: Sequence[int],
                 score: float, iou_threshold: float) -> list[Candidates]:
    """FaceFusion's `get_many_faces` detection half: every detector (several for `many`) at every angle,
    merged, then one NMS per frame. Kept candidates are ordered best score first."""
    per_frame: list[list[Candidates]] = [[] for _ in frames]
    for angle in angles:
        if angle == 0:
            views, inverses = list(frames), [None] * len(frames)
        else:
            views, inverses = [], []
            for frame in frames:
                matrix, size = rotation_matrix_and_size(angle, frame.shape[:2][::-1])
                views.append(cv2.warpAffine(frame, matrix, size))
                inverses.append(cv2.invertAffineTransform(matrix))
        for detector in detectors:
            for k, (found, inverse) in enumerate(zip(detector.detect_raw(views), inverses, strict=True)):
                if inverse is not None and len(found):
                    found = Candidates(np.array([normalise_box(transform_box(b, inverse)) for b in found.boxes]),
                                       found.scores, transform_points(found.landmarks, inverse))
                per_frame[k].append(found)
    out = []
    for frame, parts in zip(frames, per_frame, strict=True):
        if not np.any(frame) or score <= 0:  # FaceFusion skips all-black frames
            out.append(Candidates.empty())
            continue
        merged = Candidates.concat(parts)
        out.append(merged.take(apply_nms(merged, score, iou_threshold)))
    return out
