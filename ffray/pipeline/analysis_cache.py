"""The template cache: a target's face analysis, stored once per (content, analysis settings) in the work
dir and reused by every later job on that target, whatever its sources or swap settings.

Content factories swap many faces into the same template videos, and detection (with landmarks and
embeddings) is the largest share of a run. What every later job needs from it is the analysed faces of
every frame, before selection: selection (mode, reference, filters, order) runs on them per job.

Layout: `<work root>/analysis/<analysis key>/<chunk id>.npz` with `<chunk id>.json` beside it (sha256,
size, frames, whether embeddings are in). The key is the video's content hash and everything that
changes the analysis: pack, detector / landmarker / recognizer / classifier models (by sha256) and their
options. A chunk id already says which frames (video content and chunk plan). An entry is verified on
every read; a damaged or partial one is logged, ignored and rebuilt. Entries without embeddings serve
jobs that need none ('one', 'many'); a job that needs them (reference mode) rebuilds the entry with them.
Arrays are stored as they came out of the analyser, so cached faces are bit for bit fresh ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any

import numpy as np

from ffray.faces.options import FaceOptions
from ffray.faces.types import Face

log = logging.getLogger(__name__)

CACHE_DIR = "analysis"
FORMAT = 1
# options that change what the analyser returns (not what is selected from it)
ANALYSIS_OPTIONS = ("pack", "face_detector_model", "face_detector_size", "face_detector_score",
                    "face_detector_angles", "face_detector_margin", "face_detector_upsample",
                    "face_landmarker_model", "face_landmarker_score", "face_recognizer_model")


def analysis_key(content_hash: str, options: FaceOptions, model_hashes: dict[str, str]) -> str:
    opts = options.to_dict()
    ident = {"format": FORMAT, "content": content_hash, "options": {k: opts.get(k) for k in ANALYSIS_OPTIONS},
             "classifier": opts.get("face_classifier_model") if options.selector_filter_flags() else None,
             "models": dict(sorted(model_hashes.items()))}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def needs_embeddings(options: FaceOptions) -> bool:
    """What the analyser computes by default (`analyse(embed=None)`): embeddings for reference mode."""
    return options.face_selector_mode == "reference"


# --- faces <-> arrays (no pickle: a work dir may be shared) -----------------------------------------


def _encode_extra(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_extra(v) for v in value]}
    if isinstance(value, dict):
        return {k: _encode_extra(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode_extra(value: Any) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        if "__tuple__" in value:
            return tuple(_decode_extra(v) for v in value["__tuple__"])
        return {k: _decode_extra(v) for k, v in value.items()}
    return value


def faces_to_bytes(faces: list[list[Face]]) -> bytes:
    rows = [(i, f) for i, frame in enumerate(faces) for f in frame]
    n = len(rows)

    def stack(get, shape, dtype):
        values = [get(f) for _, f in rows]
        out = np.full((n, *shape), np.nan, dtype=dtype)
        for k, v in enumerate(values):
            if v is not None:
                out[k] = v
        return out

    dim = next((len(f.embedding) for _, f in rows if f.embedding is not None), 0)
    emb_dtype = next((f.embedding.dtype for _, f in rows if f.embedding is not None), np.float32)
    arrays = {
        "frame": np.array([i for i, _ in rows], np.int32),
        "count": np.int64(len(faces)),
        "box": stack(lambda f: f.box, (4,), np.float32),
        "score": np.array([f.score for _, f in rows], np.float64),
        "landmark_5": stack(lambda f: f.landmark_5, (5, 2), np.float32),
        "landmark_5_68": stack(lambda f: f.landmark_5_68, (5, 2), np.float32),
        "landmark_68": stack(lambda f: f.landmark_68, (68, 2), np.float32),
        "has_68": np.array([f.landmark_68 is not None for _, f in rows], bool),
        "landmarker_score": np.array([f.landmarker_score for _, f in rows], np.float64),
        "embedding": stack(lambda f: f.embedding, (dim,), emb_dtype),
        "embedding_norm": stack(lambda f: f.embedding_norm, (dim,), emb_dtype),
        "has_embedding": np.array([f.embedding is not None for _, f in rows], bool),
        "extra": np.array(json.dumps([_encode_extra(f.extra) for _, f in rows])),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def faces_from_bytes(data: bytes) -> list[list[Face]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    faces: list[list[Face]] = [[] for _ in range(int(a["count"]))]
    extras = json.loads(str(a["extra"]))
    for k in range(len(a["frame"])):
        has_embedding = bool(a["has_embedding"][k])
        faces[int(a["frame"][k])].append(Face(
            box=a["box"][k], score=float(a["score"][k]), landmark_5=a["landmark_5"][k],
            landmark_5_68=a["landmark_5_68"][k], landmark_68=a["landmark_68"][k] if a["has_68"][k] else None,
            landmarker_score=float(a["landmarker_score"][k]),
            embedding=a["embedding"][k] if has_embedding else None,
            embedding_norm=a["embedding_norm"][k] if has_embedding else None,
            extra=_decode_extra(extras[k])))
    return faces


# --- the store ------------------------------------------------------------------------------------


class FaceStore:
    """Faces per frame of each chunk under `folder`/<key>/<chunk id>.npz, verified on read: the template
    cache (`AnalysisCache`) and each video's tracked selection (`selection_store`)."""

    def __init__(self, folder: str):
        self.folder = folder

    def _paths(self, key: str, chunk_id: str) -> tuple[str, str]:
        from ffray.pipeline.storage import join

        folder = join(self.folder, key) if key else self.folder
        return join(folder, f"{chunk_id}.npz"), join(folder, f"{chunk_id}.json")

    def load(self, key: str, chunk_id: str, frames: int, embeddings: bool = False) -> list[list[Face]] | None:
        """The chunk's analysed faces, or None: not there, damaged, or without embeddings a job needs."""
        from ffray.media.io import split_uri

        data_uri, record_uri = self._paths(key, chunk_id)
        try:
            fs, path = split_uri(record_uri)
            if not fs.exists(path):
                return None
            with fs.open(path, "rb") as f:
                record = json.loads(f.read())
            if embeddings and not record.get("embeddings"):
                return None
            fs, path = split_uri(data_uri)
            with fs.open(path, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() != record.get("sha256") or len(data) != record.get("size"):
                raise ValueError("sha256 does not match its record")
            faces = faces_from_bytes(data)
            if len(faces) != frames:
                raise ValueError(f"{len(faces)} frames where the chunk has {frames}")
            return faces
        except Exception as exc:  # a bad entry costs a fresh analysis, never the chunk
            log.warning("%s: ignoring a damaged face-analysis cache entry (%s); analysing again", data_uri, exc)
            return None

    def store(self, key: str, chunk_id: str, faces: list[list[Face]], embeddings: bool = False) -> None:
        """Best effort: a cache that cannot be written only costs the next job the analysis."""
        from ffray.pipeline.storage import write_atomic, write_json_atomic

        data_uri, record_uri = self._paths(key, chunk_id)
        try:
            data = faces_to_bytes(faces)
            write_atomic(data_uri, data)
            write_json_atomic(record_uri, {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                           "frames": len(faces), "embeddings": embeddings, "format": FORMAT})
        except Exception as exc:
            log.warning("%s: cannot write the face-analysis cache (%s)", data_uri, exc)


def AnalysisCache(root: str) -> FaceStore:  # noqa: N802  (reads as the thing it is)
    from ffray.pipeline.storage import join

    return FaceStore(join(root, CACHE_DIR))
