"""Detectors: the real YuNet and SCRFD on real photos and video frames; yolo_face and retinaface
decoding through contract models; FaceFusion's thresholds and NMS."""

from __future__ import annotations

import av
import cv2
import numpy as np
import onnxruntime as ort
import pytest
from conftest import asset
from contract_models import build_retinaface, build_yolo_face

from ffray.faces.detect import (
    Candidates,
    FaceDetector,
    apply_nms,
    decode_anchor_distance,
    decode_yolo_face,
    decode_yunet,
    nms_threshold,
    prepare_detect_input,
    restrict_frame,
)

MEDS = ["meds-aa-S001-01.jpg", "meds-aa-S001-02.jpg", "meds-aa-S001-03.jpg", "meds-aa-S029-01.jpg",
        "meds-af-S419-01.jpg"]


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def yunet():
    return FaceDetector(session(asset("models/yunet_s_640_640.onnx")), "yunet")


@pytest.fixture(scope="module")
def scrfd():
    return FaceDetector(session(asset("models/scrfd_2.5g.onnx")), "scrfd")


@pytest.fixture(scope="module")
def video_frames():
    with av.open(str(asset("media/video_01.mp4"))) as container:
        frames = [f.to_ndarray(format="bgr24") for k, f in enumerate(container.decode(video=0)) if k in (0, 45, 89)]
    assert len(frames) == 3
    return frames


def _iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("name", MEDS)
def test_yunet_and_scrfd_find_the_one_face_in_each_photo(name, yunet, scrfd):
    image = cv2.imread(str(asset(f"media/{name}")))
    a, b = yunet.detect([image])[0], scrfd.detect([image])[0]
    assert len(a) == 1 and len(b) == 1
    assert a.scores[0] > 0.8 and b.scores[0] > 0.8
    assert _iou(a.boxes[0], b.boxes[0]) > 0.8
    for found in (a, b):  # keypoints inside the box, eyes above the mouth, left eye left of right eye
        x1, y1, x2, y2 = found.boxes[0]
        points = found.landmarks[0]
        assert ((points >= [x1, y1]) & (points <= [x2, y2])).all()
        assert points[0, 0] < points[1, 0] and points[:2, 1].max() < points[3:, 1].min()


def test_yunet_boxes_match_opencv_face_detector_yn(yunet, video_frames):
    images = [cv2.imread(str(asset(f"media/{name}"))) for name in MEDS] + list(video_frames)
    for image in images:
        h, w = image.shape[:2]
        assert max(h, w) <= 640  # no downscale: both see the same pixels
        reference = cv2.FaceDetectorYN.create(str(asset("models/yunet_s_640_640.onnx")), "", (w, h), 0.5, 0.3)
        _, expected = reference.detect(image)
        ours = yunet.detect([image])[0]
        # OpenCV thresholds sqrt(cls*obj), FaceFusion cls*obj: compare OpenCV's confident faces
        expected = [e for e in expected if e[14] ** 2 >= 0.5]
        assert len(expected) >= 1
        for e in expected:
            box = np.array([e[0], e[1], e[0] + e[2], e[1] + e[3]])
            nearest = ours.boxes[np.argmax([_iou(box, b) for b in ours.boxes])]
            assert np.abs(nearest - box).max() < 2.0
            k = int(np.argmax([_iou(box, b) for b in ours.boxes]))
            np.testing.assert_allclose(ours.landmarks[k], e[4:14].reshape(5, 2), atol=2.0)


def test_detectors_find_the_group_in_video_frames(yunet, scrfd, video_frames):
    for frame in video_frames:
        a, b = yunet.detect([frame])[0], scrfd.detect([frame])[0]
        assert 3 <= len(a) <= 7 and 3 <= len(b) <= 7
        matched = sum(max(_iou(x, y) for y in b.boxes) > 0.5 for x in a.boxes)
        assert matched >= 3


def test_dynamic_batch_equals_batch_one(video_frames):
    detector = FaceDetector(session(asset("models/yunet_n_dynamic.onnx")), "yunet", batch_size=4)
    single = FaceDetector(detector.session, "yunet", batch_size=1)
    images = list(video_frames) + [cv2.imread(str(asset(f"media/{MEDS[0]}")))]
    batched, one = detector.detect(images), single.detect(images)
    for x, y in zip(batched, one, strict=True):
        assert len(x) == len(y) and len(x) >= 1
        np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-3)
        np.testing.assert_allclose(x.scores, y.scores, atol=1e-5)


def test_downscale_only_top_left_letterbox():
    small = np.full((100, 200, 3), 255, np.uint8)
    assert restrict_frame(small, (640, 640)) is small  # never upscaled
    tensor, rw, rh = prepare_detect_input(small, 640, "scrfd")
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32 and (rw, rh) == (1.0, 1.0)
    assert tensor[0, :, :100, :200].min() == pytest.approx((255 - 127.5) / 128)
    assert tensor[0, :, 100:, :].max() == pytest.approx(-127.5 / 128)  # padding is zero before normalising
    big = np.zeros((960, 1280, 3), np.uint8)
    big[0, 0] = [10, 20, 30]  # BGR order kept
    tensor, rw, rh = prepare_detect_input(big, 640, "yunet")
    assert (rw, rh) == (2.0, 2.0) and tensor[0, :, 480:, :].max() == 0
    assert tensor[0, 0, 0, 0] < tensor[0, 2, 0, 0]  # raw 0..255 for yunet, blue first
    assert prepare_detect_input(big, 640, "yolo_face")[0].max() <= 1.0


def test_nms_thresholds_follow_angles_and_many():
    assert nms_threshold("yunet", (0,)) == 0.4
    assert nms_threshold("scrfd", (0, 90)) == 0.3
    assert nms_threshold("scrfd", (0, 90, 180)) == 0.2
    assert nms_threshold("scrfd", (0, 90, 180, 270)) == 0.1
    assert nms_threshold("many", (0,)) == 0.1
    boxes = np.array([[0, 0, 100, 100], [10, 0, 110, 100], [0, 0, 100, 60], [300, 300, 400, 400.0]])
    found = Candidates(boxes, np.array([0.9, 0.8, 0.85, 0.4]), np.zeros((4, 5, 2)))
    # IoU(0,1) = 0.818, IoU(0,2) = 0.6: both suppressed at 0.4; the 0.4-score box is under the 0.5 score
    assert apply_nms(found, 0.5, 0.4) == [0]
    assert apply_nms(found, 0.5, 0.7) == [0, 2]  # 0.6 <= 0.7 survives, 0.818 does not
    assert apply_nms(found, 0.3, 0.4) == [0, 3]


def test_yolo_face_uses_strict_greater_and_decodes(tmp_path):
    detector = FaceDetector(session(build_yolo_face(tmp_path / "yolo.onnx")), "yolo_face")
    frame = np.full((480, 640, 3), 128, np.uint8)
    found = detector.detect([frame])[0]
    assert len(found) == 1  # the candidate scoring exactly 0.5 is dropped (`>`)
    np.testing.assert_allclose(found.boxes[0], [128, 128, 512, 512], atol=1e-3)  # (0.5 +- 0.3) * 640
    np.testing.assert_allclose(found.landmarks[0][0], [320 - 0.35 * 192, 320 - 0.2 * 192], atol=1e-3)
    raw = np.zeros((1, 20, 8400), np.float32)
    raw[0, :5, 0] = [100, 100, 20, 20, 0.5]
    raw[0, :5, 1] = [200, 100, 20, 20, 0.5]
    assert len(decode_yolo_face(raw, 0.5, 1, 1)) == 0  # `>` excludes the threshold itself
    assert len(decode_yolo_face(raw, 0.49, 1, 1)) == 2


def test_retinaface_contract_model_batch_one_decode(tmp_path):
    model = session(build_retinaface(tmp_path / "retinaface.onnx"))
    detector = FaceDetector(model, "retinaface", batch_size=8)  # batch-1 model: loops
    frames = [np.full((480, 640, 3), v, np.uint8) for v in (0, 100, 200)]
    frames[0][0, 0] = 1  # not all-black (FaceFusion skips black frames)
    results = detector.detect(frames)
    for found in results:
        assert len(found) == 1
        # stride 16 anchor at cell (20, 20) -> (320, 320) in the 640 canvas; half-size 0.3*640 = 192
        np.testing.assert_allclose(found.boxes[0], [128, 128, 512, 512], atol=1e-3)
    assert results[0].scores[0] < results[2].scores[0]  # the score follows the input
    # the decoder keeps `score >= threshold` (yolo_face: `>`); cv2.dnn.NMSBoxes then keeps `> threshold`,
    # as in FaceFusion, so a score exactly at the threshold survives decoding but not NMS
    score = float(results[1].scores[0])
    assert len(FaceDetector(model, "retinaface", score=score).detect_raw([frames[1]])[0]) == 1
    assert len(FaceDetector(model, "retinaface", score=score).detect([frames[1]])[0]) == 0
    assert len(FaceDetector(model, "retinaface", score=score + 1e-4).detect_raw([frames[1]])[0]) == 0
    assert len(detector.detect([np.zeros((480, 640, 3), np.uint8)])[0]) == 0  # black frame: skipped


def test_angles_map_detections_back_to_the_frame(yunet):
    image = cv2.imread(str(asset(f"media/{MEDS[0]}")))
    upright = yunet.detect([image])[0]
    rotated = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    assert len(yunet.detect([rotated])[0]) == 0 or yunet.detect([rotated])[0].scores.max() < upright.scores[0]
    found = yunet.detect([rotated], angles=(0, 90))[0]
    assert len(found) >= 1
    # the face box, rotated back to the original orientation, matches the upright detection
    x1, y1, x2, y2 = found.boxes[0]
    h = image.shape[0]
    back = np.array([y1, h - x2, y2, h - x1])
    assert _iou(back, upright.boxes[0]) > 0.7


def test_detector_input_normalisation_per_family():
    frame = np.random.default_rng(5).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    canvas = np.zeros((640, 640, 3))
    canvas[:300, :400] = frame  # top-left, BGR kept, no resize below the detector size
    canvas = np.expand_dims(canvas.transpose(2, 0, 1), axis=0).astype(np.float32)
    np.testing.assert_array_equal(prepare_detect_input(frame, 640, "retinaface")[0], (canvas - 127.5) / 128.0)
    np.testing.assert_array_equal(prepare_detect_input(frame, 640, "scrfd")[0], (canvas - 127.5) / 128.0)
    np.testing.assert_array_equal(prepare_detect_input(frame, 640, "yolo_face")[0], canvas / 255.0)
    np.testing.assert_array_equal(prepare_detect_input(frame, 640, "yunet")[0], canvas)
    for family in ("retinaface", "yolo_face", "yunet"):
        assert prepare_detect_input(frame, 640, family)[0].dtype == np.float32


def _anchor_distance_outputs(size, hits):
    """9 rank-2 retinaface/scrfd outputs, all scores 0 except `hits` (stride 8 anchor index -> score)."""
    counts = [(size // s) ** 2 * 2 for s in (8, 16, 32)]
    outputs = [np.zeros((n, 1), np.float32) for n in counts]
    outputs += [np.full((n, 4), 2.0, np.float32) for n in counts]
    outputs += [np.zeros((n, 10), np.float32) for n in counts]
    for index, score in hits.items():
        outputs[0][index] = score
    return outputs


def _yunet_outputs(size, hits):
    cells = [(size // s) ** 2 for s in (8, 16, 32)]
    cls = [np.zeros((n, 1), np.float32) for n in cells]
    obj = [np.ones((n, 1), np.float32) for n in cells]
    box = [np.zeros((n, 4), np.float32) for n in cells]
    kps = [np.zeros((n, 10), np.float32) for n in cells]
    for index, score in hits.items():
        cls[0][index] = score
    return cls + obj + box + kps


def test_any_keep_indices_quirk_is_reproduced():
    """FaceFusion guards each stride with `if numpy.any(keep_indices)`: when the only index above the
    threshold is 0 (the top-left anchor) the stride yields nothing; with other hits index 0 is kept."""
    assert len(decode_anchor_distance(_anchor_distance_outputs(64, {0: 0.9}), 64, 0.5, 1, 1)) == 0
    found = decode_anchor_distance(_anchor_distance_outputs(64, {0: 0.9, 7: 0.8}), 64, 0.5, 1, 1)
    assert list(found.scores) == pytest.approx([0.9, 0.8])
    # anchor 7 = cell 3 of stride 8 (2 anchors per cell): centre (24, 0), distances 2 * 8
    np.testing.assert_allclose(found.boxes[1], [24 - 16, 0 - 16, 24 + 16, 0 + 16])
    assert len(decode_anchor_distance(_anchor_distance_outputs(64, {1: 0.9}), 64, 0.5, 1, 1)) == 1
    assert len(decode_yunet(_yunet_outputs(64, {0: 0.9}), 64, 0.5, 1, 1)) == 0
    assert len(decode_yunet(_yunet_outputs(64, {0: 0.9, 3: 0.7}), 64, 0.5, 1, 1)) == 2
    raw = np.zeros((1, 20, 8400), np.float32)
    raw[0, :5, 0] = [100, 100, 20, 20, 0.9]
    assert len(decode_yolo_face(raw, 0.5, 1, 1)) == 0
    raw[0, :5, 9] = [200, 100, 20, 20, 0.9]
    assert len(decode_yolo_face(raw, 0.5, 1, 1)) == 2


def test_threshold_comparison_per_family():
    # retinaface/scrfd and yunet keep a score equal to the threshold (`>=`); yolo_face does not (`>`)
    assert len(decode_anchor_distance(_anchor_distance_outputs(64, {4: 0.5}), 64, 0.5, 1, 1)) == 1
    assert len(decode_yunet(_yunet_outputs(64, {4: 0.5}), 64, 0.5, 1, 1)) == 1
    raw = np.zeros((1, 20, 8400), np.float32)
    raw[0, :5, 4] = [100, 100, 20, 20, 0.5]
    assert len(decode_yolo_face(raw, 0.5, 1, 1)) == 0


def test_dynamic_batch_input_with_unbatched_outputs_runs_one_by_one(tmp_path):
    model = session(build_retinaface(tmp_path / "retinaface_dynamic.onnx", dynamic_batch=True))
    assert not isinstance(model.get_inputs()[0].shape[0], int) and len(model.get_outputs()[0].shape) == 2
    frames = [np.full((480, 640, 3), v, np.uint8) for v in (50, 100, 200)]
    batched = FaceDetector(model, "retinaface", batch_size=8).detect(frames)
    single = FaceDetector(model, "retinaface", batch_size=1).detect(frames)
    for a, b in zip(batched, single, strict=True):
        assert len(a) == len(b) == 1
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert batched[0].scores[0] < batched[2].scores[0]  # each frame saw its own input
