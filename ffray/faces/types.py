"""The face record and the interfaces every face pack (ONNX models or the builtin dlib pack) implements.

Frames are BGR uint8 HxWx3 arrays. Components hold no global state: each instance owns its sessions,
so one process can run several configurations side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class Face:
    """One detected face, in the coordinates of the frame it was detected in.

    `landmark_5_68` is what every warp (swap, enhance, embedding) uses, as FaceFusion's '5/68':
    5 points derived from the 68-point landmarker when its score passes the threshold, else the
    detector's own 5 points.
    """

    box: np.ndarray  # (4,) float32 x1, y1, x2, y2
    score: float  # detector score
    landmark_5: np.ndarray  # (5, 2) float32, detector keypoints: l-eye, r-eye, nose, l-mouth, r-mouth
    landmark_5_68: np.ndarray  # (5, 2) float32, the points warps use
    landmark_68: np.ndarray | None = None  # (68, 2) float32, or None when no 68-point model ran
    landmarker_score: float = 0.0
    embedding: np.ndarray | None = None  # raw recognizer output (512 for ArcFace, 128 for dlib)
    embedding_norm: np.ndarray | None = None  # embedding / ||embedding||
    extra: dict[str, Any] = field(default_factory=dict)  # pack-specific data (e.g. dlib shape)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class FaceAnalyser(Protocol):
    """Detects faces (and runs landmarker and recognizer) on a batch of frames."""

    model_hashes: dict[str, str]  # model name -> sha256 of the file loaded (for the run report)

    def face_distance(self, a: Face, b: Face) -> float:
        """Identity distance used by reference selection (FaceFusion: (1 - cos) / 2 on embedding_norm)."""
        ...

    def analyse(self, frames: Sequence[np.ndarray], embed: bool | None = None) -> list[list[Face]]:
        """Faces per frame. `embed`: compute embeddings (None = only where the options need them,
        i.e. reference selection; True for source images)."""
        ...


class FaceSwapper(Protocol):
    """Swaps a prepared source identity into the given target faces."""

    model_hashes: dict[str, str]

    def prepare_source(self, images: Sequence[np.ndarray], faces: Sequence[Face]) -> Any:
        """One face per source image (the largest one); returns the identity `swap` takes."""
        ...

    def swap(
        self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]], source: Any
    ) -> list[np.ndarray]:
        """Returns new frames; inputs are never modified."""
        ...


class FaceEnhancer(Protocol):
    model_hashes: dict[str, str]

    def enhance(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]]) -> list[np.ndarray]: ...


# --- Arrow-friendly packing: face records travel between pipeline stages as plain arrays ----------

FACE_COLUMNS = ("face_frame", "box", "score", "landmark_5", "landmark_5_68", "landmark_68", "landmarker_score")


def pack_faces(faces_per_frame: Sequence[Sequence[Face]]) -> dict[str, np.ndarray]:
    """Flatten faces of several frames into arrays; `face_frame` says which frame each face is in.

    Embeddings are not packed: downstream stages need the warp points, and the 68 points for area
    masks (NaN where no 68-point model ran; 544 bytes a face).
    """
    rows = [(i, f) for i, faces in enumerate(faces_per_frame) for f in faces]
    n = len(rows)
    out = {
        "face_frame": np.array([i for i, _ in rows], dtype=np.int32).reshape(n),
        "box": np.array([f.box for _, f in rows], dtype=np.float32).reshape(n, 4),
        "score": np.array([f.score for _, f in rows], dtype=np.float32).reshape(n),
        "landmark_5": np.array([f.landmark_5 for _, f in rows], dtype=np.float32).reshape(n, 5, 2),
        "landmark_5_68": np.array([f.landmark_5_68 for _, f in rows], dtype=np.float32).reshape(n, 5, 2),
        "landmark_68": np.array(
            [f.landmark_68 if f.landmark_68 is not None else np.full((68, 2), np.nan) for _, f in rows],
            dtype=np.float32).reshape(n, 68, 2),
        "landmarker_score": np.array([f.landmarker_score for _, f in rows], dtype=np.float32).reshape(n),
    }
    return out


def unpack_faces(packed: dict[str, np.ndarray], frame_count: int) -> list[list[Face]]:
    faces: list[list[Face]] = [[] for _ in range(frame_count)]
    for k in range(len(packed["face_frame"])):
        landmark_68 = packed["landmark_68"][k] if "landmark_68" in packed else None
        if landmark_68 is not None and np.isnan(landmark_68).any():
            landmark_68 = None
        faces[int(packed["face_frame"][k])].append(
            Face(
                box=np.asarray(packed["box"][k], dtype=np.float32),
                score=float(packed["score"][k]),
                landmark_5=np.asarray(packed["landmark_5"][k], dtype=np.float32),
                landmark_5_68=np.asarray(packed["landmark_5_68"][k], dtype=np.float32),
                landmark_68=None if landmark_68 is None else np.asarray(landmark_68, dtype=np.float32),
                landmarker_score=float(packed["landmarker_score"][k]),
            )
        )
    return faces
