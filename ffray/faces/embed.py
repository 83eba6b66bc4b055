"""ArcFace recognizer as FaceFusion's `face_recognizer`: arcface_112_v2 crop at 112, x/127.5 - 1, RGB,
NCHW; embedding = raw output, embedding_norm = embedding / ||embedding||. Batched."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ffray.faces.align import warp_face
from ffray.faces.detect import run_batched

ARCFACE_TEMPLATE = "arcface_112_v2"
ARCFACE_SIZE = 112


# float32(v / 127.5 - 1) for every uint8 v: a lookup equals FaceFusion's float64 formula bit for bit
ARCFACE_LUT = (np.arange(256) / 127.5 - 1).astype(np.float32)
ARCFACE_LUT.flags.writeable = False


def prepare_arcface_crop(frame: np.ndarray, landmark_5: np.ndarray) -> np.ndarray:
    crop, _ = warp_face(frame, landmark_5, ARCFACE_TEMPLATE, (ARCFACE_SIZE, ARCFACE_SIZE))
    return np.expand_dims(ARCFACE_LUT[crop[:, :, ::-1]].transpose(2, 0, 1), axis=0)


class ArcFace:
    def __init__(self, session, batch_size: int = 32):
        self.session = session
        self.batch_size = max(1, int(batch_size))
        self.input_name = session.get_inputs()[0].name

    def embed(self, frames: Sequence[np.ndarray],
              landmarks_5: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(embedding, embedding_norm) per face; `frames[i]` holds face i (use `landmark_5_68`)."""
        feeds = [{self.input_name: prepare_arcface_crop(f, l5)} for f, l5 in zip(frames, landmarks_5, strict=True)]
        out = []
        for outputs in run_batched(self.session, feeds, self.batch_size):
            embedding = outputs[0].ravel()
            out.append((embedding, embedding / np.linalg.norm(embedding)))
        return out
