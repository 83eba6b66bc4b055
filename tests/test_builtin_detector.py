"""The builtin pack's detectors: libfacedetection's YuNet (the default, PyPI `yuface`) and dlib's HOG
(`face_detector_model` `hog`, the old default). Recall is measured against the facefusion pack's real
YuNet ONNX (score > 0.5) on frames of video_01.mp4, whose five people it finds in every frame;
benchmarks/builtin_detector.py measures the whole clip."""

from __future__ import annotations

import hashlib
import logging

import av
import cv2
import numpy as np
import onnxruntime as ort
import pytest

from ffray.faces import builtin
from ffray.faces.builtin import HOG_DETECTOR, YUNET_MODEL, BuiltinAnalyser, dlib_distance, predictor_rect
from ffray.faces.detect import FaceDetector, detect_faces
from ffray.faces.image import read_image
from ffray.faces.options import FaceOptions
from ffray.faces.select import largest_face
from tests.conftest import asset

FRAMES = (0, 18, 36, 54, 72, 87)
IOU_MATCH = 0.3

needs_yuface = pytest.mark.skipif(builtin._yunet_detect() is None,
                                  reason="the builtin pack's YuNet needs the `yuface` package")


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matches(boxes, reference) -> list[tuple[int, int]]:
    """Greedy one-to-one (found, reference) index pairs with IoU >= 0.3, best first."""
    pairs = sorted(((iou(b, r), i, j) for i, b in enumerate(boxes) for j, r in enumerate(reference)),
                   reverse=True)
    used_found, used_reference, out = set(), set(), []
    for value, i, j in pairs:
        if value >= IOU_MATCH and i not in used_found and j not in used_reference:
            used_found.add(i)
            used_reference.add(j)
            out.append((i, j))
    return out


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    out = []
    with av.open(str(asset("media/video_01.mp4"))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in FRAMES:
                out.append(frame.to_ndarray(format="bgr24"))
            if i >= max(FRAMES):
                break
    return out


@pytest.fixture(scope="module")
def reference(frames):
    """Per frame: (boxes, keypoints) of the real YuNet ONNX at FaceFusion's score 0.5."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(asset("models/yunet_s_640_640.onnx")), options,
                                   providers=["CPUExecutionProvider"])
    detector = FaceDetector(session, "yunet", 640, 0.5)
    found = detect_faces([detector], frames, (0,), 0.5, 0.4)
    assert [len(f) for f in found] == [5] * len(frames)  # the five people, not the camera
    return [(f.boxes, f.landmarks) for f in found]


@pytest.fixture(scope="module")
def yunet() -> BuiltinAnalyser:
    analyser = BuiltinAnalyser(FaceOptions(face_selector_mode="many"))
    if analyser.detector != "yunet":
        pytest.skip("the builtin pack's YuNet needs the `yuface` package")
    return analyser


@pytest.fixture(scope="module")
def hog() -> BuiltinAnalyser:
    return BuiltinAnalyser(FaceOptions(face_selector_mode="many", face_detector_model=HOG_DETECTOR))


def recall(analyser, frames, reference) -> tuple[float, list[int]]:
    found = analyser.analyse(frames, embed=False)
    per_frame = [len(matches([f.box for f in faces], boxes)) for faces, (boxes, _) in zip(found, reference,
                                                                                           strict=True)]
    return sum(per_frame) / sum(len(boxes) for boxes, _ in reference), per_frame


@needs_yuface
def test_default_finds_at_least_four_of_five_faces(yunet, hog, frames, reference):
    value, per_frame = recall(yunet, frames, reference)
    assert value >= 0.8 and min(per_frame) >= 4, per_frame
    old, old_per_frame = recall(hog, frames, reference)
    assert old < 0.6 and value > old, (old_per_frame, per_frame)  # what HOG finds: about 2 of 5


@needs_yuface
def test_no_false_positives_at_the_default_score(yunet, frames, reference):
    """The camera in front of a face scores below FaceFusion's 0.5 (cls x obj), as in the ONNX YuNet."""
    for faces, (boxes, _) in zip(yunet.analyse(frames, embed=False), reference, strict=True):
        assert len(faces) == len(matches([f.box for f in faces], boxes))
        assert all(0.5 <= f.score <= 1 for f in faces)


@needs_yuface
def test_detections_are_deterministic(yunet, frames):
    first = yunet.analyse(frames, embed=True)
    again = BuiltinAnalyser(FaceOptions(face_selector_mode="many")).analyse(frames[::-1], embed=True)[::-1]
    for a_faces, b_faces in zip(first, again, strict=True):
        assert len(a_faces) == len(b_faces)
        for a, b in zip(a_faces, b_faces, strict=True):
            np.testing.assert_array_equal(a.box, b.box)
            assert a.score == b.score
            np.testing.assert_array_equal(a.landmark_5, b.landmark_5)
            np.testing.assert_array_equal(a.extra["dlib_shape_5"], b.extra["dlib_shape_5"])
            np.testing.assert_array_equal(a.embedding, b.embedding)


@needs_yuface
def test_landmarks_are_inside_the_box_and_on_the_face(yunet, frames, reference):
    errors, dlib_eye_errors = [], []
    for faces, (boxes, points) in zip(yunet.analyse(frames, embed=True), reference, strict=True):
        for face in faces:
            x1, y1, x2, y2 = face.box
            assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmark_5)
            left_eye, right_eye, nose, left_mouth, right_mouth = face.landmark_5
            assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
            assert max(left_eye[1], right_eye[1]) < min(left_mouth[1], right_mouth[1])
            np.testing.assert_array_equal(face.landmark_5, face.landmark_5_68)
            # dlib's points (for the embedding) land on the same face, their eye centres near YuNet's eyes
            shape = face.extra["dlib_shape_5"]
            assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in shape)
            eye_distance = float(np.linalg.norm(right_eye - left_eye))
            dlib_eye_errors += [np.linalg.norm((shape[2] + shape[3]) / 2 - left_eye) / eye_distance,
                                np.linalg.norm((shape[0] + shape[1]) / 2 - right_eye) / eye_distance]
            assert face.embedding.shape == (128,)
        for i, j in matches([f.box for f in faces], boxes):
            distance = float(np.linalg.norm(points[j][1] - points[j][0]))
            errors.append(np.linalg.norm(faces[i].landmark_5 - points[j], axis=1).mean() / distance)
    assert np.mean(errors) < 0.1, np.mean(errors)  # faces of 8-30 px between the eyes
    # one of the five holds a camera before his face: there both are guesses
    assert np.mean(dlib_eye_errors) < 0.25 and np.median(dlib_eye_errors) < 0.2, dlib_eye_errors


@needs_yuface
def test_embedding_of_a_yunet_face_matches_its_hog_face(yunet, hog):
    """dlib's predictor gets a HOG-shaped box (predictor_rect): the descriptor is that of HOG's box."""
    image = read_image(asset("media/meds-aa-S001-01.jpg"))
    a = largest_face(yunet.analyse([image], embed=True)[0])
    b = largest_face(hog.analyse([image], embed=True)[0])
    assert iou(predictor_rect(a.box), b.box) > 0.6
    assert dlib_distance(a, b) < 0.1
    other = largest_face(yunet.analyse([read_image(asset("media/meds-aa-S029-01.jpg"))], embed=True)[0])
    assert dlib_distance(a, other) > 0.6


@needs_yuface
def test_detector_angles_find_a_rotated_face_with_yunet():
    upright = read_image(asset("media/meds-aa-S001-01.jpg"))
    sideways = cv2.rotate(upright, cv2.ROTATE_90_CLOCKWISE)
    found = BuiltinAnalyser(FaceOptions(face_detector_angles=(0, 90, 270))).analyse([sideways], embed=True)[0]
    assert len(found) == 1  # the upright view's detection; NMS drops the weaker sideways one
    reference = BuiltinAnalyser(FaceOptions()).analyse([upright], embed=True)[0][0]
    h = upright.shape[0]
    back = np.stack([found[0].landmark_5[:, 1], h - found[0].landmark_5[:, 0]], axis=1)
    assert np.abs(np.sort(back, axis=0) - np.sort(reference.landmark_5, axis=0)).max() < 6
    assert dlib_distance(found[0], reference) < 0.1


@needs_yuface
def test_frames_larger_than_the_detector_size_are_downscaled(yunet, frames):
    frame = frames[0]
    big = cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)  # 1280x960 -> seen at 640x480
    small_faces = yunet.analyse([frame], embed=False)[0]
    big_faces = yunet.analyse([big], embed=False)[0]
    assert len(big_faces) == len(small_faces) == 5
    for a in small_faces:
        b = max(big_faces, key=lambda f: iou(f.box / 2, a.box))
        assert iou(b.box / 2, a.box) > 0.8
    with pytest.raises(ValueError, match="face_detector_size"):
        BuiltinAnalyser(FaceOptions(face_detector_size=16))


@needs_yuface
def test_model_hashes_name_the_detector(yunet, hog):
    library = builtin.model_paths()[YUNET_MODEL]
    assert yunet.model_hashes[YUNET_MODEL] == hashlib.sha256(library.read_bytes()).hexdigest()
    assert YUNET_MODEL not in hog.model_hashes and hog.detector == HOG_DETECTOR
    assert set(hog.model_hashes) == {"dlib_shape_predictor_5", "dlib_face_recognition_resnet_v1"}


def test_hog_is_the_old_detector(hog, frames):
    """`face_detector_model` hog: dlib's HOG at 1 upsample and margin 0, dlib's points -> FaceFusion's."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    faces = hog.analyse(frames[:2], embed=False)
    for frame, frame_faces in zip(frames[:2], faces, strict=True):
        rects, _, _ = detector.run(np.ascontiguousarray(frame[:, :, ::-1]), 1, 0.0)
        expected = sorted([r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects)
        assert sorted(f.box.tolist() for f in frame_faces) == expected
        for face in frame_faces:
            np.testing.assert_allclose(face.landmark_5, builtin.facefusion_points(face.extra["dlib_shape_5"]))
    assert hog.detector == HOG_DETECTOR


def test_without_yuface_the_default_falls_back_to_hog(monkeypatch, caplog, frames):
    monkeypatch.setattr(builtin, "_yunet_detect", lambda: None)
    with caplog.at_level(logging.WARNING, logger="ffray.faces.builtin"):
        analyser = BuiltinAnalyser(FaceOptions(face_selector_mode="many"))
    assert analyser.detector == HOG_DETECTOR and YUNET_MODEL not in analyser.model_hashes
    assert "yuface" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ffray.faces.builtin"):
        BuiltinAnalyser(FaceOptions(face_detector_model=HOG_DETECTOR))
    assert caplog.text == ""


def test_predictor_rect_is_hog_shaped():
    left, top, right, bottom = predictor_rect((100, 100, 140, 152))  # YuNet: taller than wide
    assert right - left == bottom - top  # square
    side = right - left + 1
    assert side == round(builtin.PREDICTOR_SIDE * np.sqrt(40 * 52))
    assert (left + right + 1) / 2 == pytest.approx(120, abs=0.5)
    assert (top + bottom + 1) / 2 == pytest.approx(126 + builtin.PREDICTOR_SHIFT_Y * 52, abs=0.5)
