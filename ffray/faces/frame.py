"""The face work of one frame as a video job does it, without Ray: source faces, analysis, selection,
swap, enhancement. `ffray swap-image`, `ffray preview` and `ffray faces` use it; the pipeline stages
(ffray.pipeline.stages) call the same component methods on batches of frames.

What a job adds around it (decoding the frame, the reference face of a video) is in
ffray.pipeline.one_frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ffray.errors import InputError
from ffray.faces.options import FaceOptions
from ffray.faces.packs import load_analyser, load_enhancer, load_swapper
from ffray.faces.select import choose_reference_face, largest_face, select_faces
from ffray.faces.types import Face, FaceAnalyser, pack_faces, unpack_faces


def as_stage_faces(faces: Sequence[Face]) -> list[Face]:
    """The faces as the swapper and enhancer stages receive them: through the detector stage's packed
    columns (float32 geometry; no embeddings, no pack extras), so one frame swaps bit for bit as in a job."""
    return unpack_faces(pack_faces([faces]), 1)[0]


def source_faces(analyser: FaceAnalyser, images: Sequence[np.ndarray],
                 uris: Sequence[str | os.PathLike]) -> list[Face]:
    """The largest face of each source image, with its embedding, as a job takes them (InputError naming
    an image without a face)."""
    faces = []
    for uri, image in zip(uris, images, strict=True):
        found = largest_face(analyser.analyse([image], embed=True)[0])
        if found is None:
            raise InputError(f"{os.fspath(uri)}: no face found in the source image")
        faces.append(found)
    return faces


class FrameSwap:
    """The job's face components for single frames: the analyser now, the swapper and enhancer on first
    use (a frame with no selected face loads neither)."""

    def __init__(self, options: FaceOptions, execution=None, store=None):
        self.options = options
        self.execution = execution
        self.store = store
        self.analyser: FaceAnalyser = load_analyser(options, execution, store)
        self._swapper = None
        self._enhancer = None
        self._enhancer_loaded = False

    @property
    def model_hashes(self) -> dict[str, str]:
        hashes = dict(getattr(self.analyser, "model_hashes", {}) or {})
        for component in (self._swapper, self._enhancer):
            if component is not None:
                hashes.update(component.model_hashes)
        return hashes

    def source_faces(self, images: Sequence[np.ndarray], uris: Sequence[str | os.PathLike]) -> list[Face]:
        return source_faces(self.analyser, images, uris)

    def analyse(self, image: np.ndarray) -> list[Face]:
        """A frame's faces as the detector stage finds them (embeddings only where selection needs them)."""
        return self.analyser.analyse([image])[0]

    def image_reference(self, target_faces: Sequence[Face], source_faces: Sequence[Face],
                        reference_image: np.ndarray | None = None) -> Face | None:
        """Reference mode on a still image: the reference face from `reference_image`'s faces (InputError
        when it has none), else from the target's own faces; --reference-face-position after sort/filter."""
        faces = target_faces
        if reference_image is not None:
            faces = self.analyser.analyse([reference_image], embed=True)[0]
            if not faces:
                raise InputError(f"{self.options.reference_face_image}: no face found")
        return choose_reference_face(faces, self.options, source_faces)

    def select(self, faces: Sequence[Face], reference: Face | None, source_faces: Sequence[Face]) -> list[Face]:
        return select_faces(faces, self.options, reference, distance=self.analyser.face_distance,
                            source_faces=source_faces)

    def swap(self, image: np.ndarray, faces: Sequence[Face], source_images: Sequence[np.ndarray],
             source_faces: Sequence[Face]) -> np.ndarray:
        """Swap then (when an enhancer is set) enhance `faces` in a new image; `image` is not modified."""
        if not faces:
            return image
        if self._swapper is None:
            self._swapper = load_swapper(self.options, self.execution, self.store)
        identity = self._swapper.prepare_source(source_images, list(source_faces))
        result = self._swapper.swap([image], [list(faces)], identity)[0]
        if not self._enhancer_loaded:
            self._enhancer = load_enhancer(self.options, self.execution, self.store)
            self._enhancer_loaded = True
        if self._enhancer is not None:
            result = self._enhancer.enhance([result], [list(faces)])[0]
        return result
