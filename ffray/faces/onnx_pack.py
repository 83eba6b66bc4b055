"""The `facefusion` pack: FaceFusion's ONNX models behind the `ffray.faces.types` protocols.

Each instance owns its sessions (no global state). Models come from a `ModelStore` by FaceFusion name
or as `name=PATH_OR_URL`; the sha256 of every file loaded is in `model_hashes` for the run report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ffray.errors import InputError, ModelError
from ffray.faces.align import estimate_face_angle, landmark_5_from_68
from ffray.faces.classify import FairFace
from ffray.faces.detect import FaceDetector, detect_faces, nms_threshold
from ffray.faces.embed import ArcFace
from ffray.faces.enhance import Enhancer, EnhancerConfig
from ffray.faces.landmark import Landmarker68, Landmarker68From5
from ffray.faces.masks import FaceParser, MaskModels, MaskOptions, Occluder
from ffray.faces.options import REFERENCE_DISTANCES, FaceOptions
from ffray.faces.select import face_distance
from ffray.faces.swap import SourceIdentity, Swapper, SwapperConfig, needs_target_embeddings, read_emap
from ffray.faces.types import Face

MANY_DETECTORS = ("retinaface", "scrfd", "yolo_face")  # FaceFusion's `many` (not yunet)
DEFAULT_BATCH_SIZE = 16


class _Loader:
    """Resolves refs through the store and opens sessions; records the sha256 of every file loaded."""

    def __init__(self, execution=None, store=None):
        from ffray.models.sessions import ExecutionOptions
        from ffray.models.store import ModelStore

        self.execution = execution or ExecutionOptions()
        self.store = store or ModelStore()
        self.model_hashes: dict[str, str] = {}

    def load(self, ref: str, kind: str | None = None):
        """(session, spec, path) for a model ref."""
        from ffray.models.sessions import create_session

        resolved = self.store.resolve(ref)
        if kind is not None and resolved.spec.kind != kind:
            raise ModelError(f"{ref}: {resolved.spec.name} is a {resolved.spec.kind}, not a {kind}")
        session = create_session(resolved, self.execution)
        self.model_hashes[resolved.spec.name] = resolved.sha256
        return session, resolved.spec, resolved.path


def _mask_options(options: FaceOptions) -> MaskOptions:
    return MaskOptions(types=tuple(options.face_mask_types), blur=options.face_mask_blur,
                       padding=tuple(options.face_mask_padding), areas=tuple(options.face_mask_areas),
                       regions=tuple(options.face_mask_regions))


def _mask_models(loader: _Loader, options: FaceOptions, types: Sequence[str], batch_size: int) -> MaskModels:
    models = MaskModels()
    if "occlusion" in types:
        models.occluder = Occluder(loader.load(options.face_occluder_model, "occluder")[0], batch_size)
    if "region" in types:
        models.parser = FaceParser(loader.load(options.face_parser_model, "parser")[0], batch_size)
    return models


class OnnxFaceAnalyser:
    """Detector (+ fan_68_5 and 2dfan4/peppa_wutz when `face_landmarker_score > 0`) + ArcFace when
    embeddings are needed + FairFace when an age/gender/race filter is set (it then classifies every
    face, source faces included). `fan_68_5` and batch size can be overridden (tests pass contract
    models)."""

    distance_scale = REFERENCE_DISTANCES["facefusion"]  # what face_distance measures, and its default threshold

    def __init__(self, options: FaceOptions, execution=None, store=None, batch_size: int = DEFAULT_BATCH_SIZE,
                 fan_68_5: str = "fan_68_5"):
        self.options = options
        self.batch_size = batch_size
        self._loader = _Loader(execution, store)
        self.model_hashes = self._loader.model_hashes
        refs = list(MANY_DETECTORS) if options.face_detector_model == "many" else [options.face_detector_model]
        self.detectors = []
        for ref in refs:
            session, spec, _ = self._loader.load(ref, "detector")
            self.detectors.append(FaceDetector(session, spec.type, options.face_detector_size,
                                               options.face_detector_score, batch_size,
                                               margin=options.face_detector_margin))
        self.nms_threshold = nms_threshold(options.face_detector_model, options.face_detector_angles)
        self.landmarkers: list[Landmarker68] = []
        needs_68 = options.face_landmarker_score > 0 or "area" in options.face_mask_types
        self.fan_68_5 = Landmarker68From5(self._loader.load(fan_68_5, "landmarker")[0], batch_size) \
            if needs_68 else None
        if options.face_landmarker_score > 0:
            refs = ["2dfan4", "peppa_wutz"] if options.face_landmarker_model == "many" \
                else [options.face_landmarker_model]
            for ref in refs:
                session, spec, _ = self._loader.load(ref, "landmarker")
                self.landmarkers.append(Landmarker68(session, spec.type, batch_size))
        self._recognizer: ArcFace | None = None
        self.classifier: FairFace | None = None
        if options.selector_filter_flags():
            session, spec, _ = self._loader.load(options.face_classifier_model, "classifier")
            self.classifier = FairFace(session, batch_size, spec.mean, spec.std)

    @property
    def recognizer(self) -> ArcFace:
        if self._recognizer is None:
            self._recognizer = ArcFace(self._loader.load(self.options.face_recognizer_model, "recognizer")[0],
                                       self.batch_size)
        return self._recognizer

    def face_distance(self, a: Face, b: Face) -> float:
        return face_distance(a, b)

    def classify(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        """FairFace's age/gender/race into the `extra` of faces of `frame` that lack them (for display:
        `ffray faces`). Loads --face-classifier-model when no selector filter did; `analyse` is unchanged."""
        todo = [f for f in faces if "gender" not in f.extra]
        if not todo:
            return
        classifier = self.classifier or getattr(self, "_display_classifier", None)
        if classifier is None:
            session, spec, _ = self._loader.load(self.options.face_classifier_model, "classifier")
            classifier = self._display_classifier = FairFace(session, self.batch_size, spec.mean, spec.std)
        for face, classes in zip(todo, classifier.classify([frame] * len(todo), [f.landmark_5_68 for f in todo]),
                                 strict=True):
            face.extra.update(classes)

    def _landmark_68(self, frames, boxes, angles) -> list[tuple[np.ndarray, float]]:
        results = [m.landmarks(frames, boxes, angles) for m in self.landmarkers]
        if len(results) == 1:
            return results[0]
        # `many`: 2dfan4 unless peppa_wutz scores more than 0.2 higher
        return [a if a[1] > b[1] - 0.2 else b for a, b in zip(results[0], results[1], strict=True)]

    def analyse(self, frames: Sequence[np.ndarray], embed: bool | None = None) -> list[list[Face]]:
        options = self.options
        found = detect_faces(self.detectors, frames, options.face_detector_angles, options.face_detector_score,
                             self.nms_threshold)
        index = [(i, k) for i, c in enumerate(found) for k in range(len(c))]
        face_frames = [frames[i] for i, _ in index]
        boxes = [found[i].boxes[k] for i, k in index]
        landmarks_5 = [found[i].landmarks[k] for i, k in index]
        landmarks_68_5 = self.fan_68_5.landmarks(landmarks_5) if self.fan_68_5 and index else [None] * len(index)
        angles = [estimate_face_angle(p) if p is not None else 0 for p in landmarks_68_5]
        landmarks_5_68 = list(landmarks_5)
        landmarks_68 = list(landmarks_68_5)
        scores_68 = [0.0] * len(index)
        if self.landmarkers and index:
            for n, (points, score) in enumerate(self._landmark_68(face_frames, boxes, angles)):
                landmarks_68[n], scores_68[n] = points, score
                if score > options.face_landmarker_score:
                    landmarks_5_68[n] = landmark_5_from_68(points)
        if embed is None:
            embed = options.face_selector_mode == "reference"
        embeddings = self.recognizer.embed(face_frames, landmarks_5_68) if embed and index else [(None, None)] * len(index)
        classes = self.classifier.classify(face_frames, landmarks_5_68) if self.classifier and index \
            else [{}] * len(index)
        faces: list[list[Face]] = [[] for _ in frames]
        for n, (i, k) in enumerate(index):
            faces[i].append(Face(
                box=np.asarray(boxes[n], dtype=np.float32),
                score=float(found[i].scores[k]),
                landmark_5=np.asarray(landmarks_5[n], dtype=np.float32),
                landmark_5_68=np.asarray(landmarks_5_68[n], dtype=np.float32),
                landmark_68=None if landmarks_68[n] is None else np.asarray(landmarks_68[n], dtype=np.float32),
                landmarker_score=float(scores_68[n]),
                embedding=embeddings[n][0],
                embedding_norm=embeddings[n][1],
                extra={"angle": angles[n], **classes[n]},
            ))
        return faces


class OnnxFaceSwapper:
    def __init__(self, options: FaceOptions, execution=None, store=None, batch_size: int = DEFAULT_BATCH_SIZE):
        self.options = options
        self._loader = _Loader(execution, store)
        self.model_hashes = self._loader.model_hashes
        session, spec, path = self._loader.load(options.face_swapper_model, "swapper")
        boost = options.face_swapper_pixel_boost
        if boost is not None:
            # FaceFusion lists 384 for blendswap_256 but its reshape then fails: only whole multiples
            # of the model size can be interleaved, so they are all ffray accepts
            allowed = [b for b in (spec.pixel_boost or (boost,)) if b % spec.size[0] == 0]
            if boost not in allowed:
                raise InputError(f"--face-swapper-pixel-boost {boost}: {spec.name} allows "
                                 f"{', '.join(map(str, allowed))}")
        converter = self._loader.load(spec.converter, "converter")[0] if spec.converter else None
        emap = read_emap(path) if spec.type == "inswapper" else None
        masks = _mask_options(options)
        config = SwapperConfig(type=spec.type, template=spec.template, size=spec.size[0], mean=spec.mean,
                               std=spec.std, pixel_boost=options.face_swapper_pixel_boost,
                               weight=options.face_swapper_weight, batch_size=batch_size, masks=masks)
        self.swapper = Swapper(session, config, converter, emap, _mask_models(self._loader, options, masks.types,
                                                                             batch_size))
        self._recognizer: ArcFace | None = None
        self._batch_size = batch_size

    def prepare_source(self, images: Sequence[np.ndarray], faces: Sequence[Face]) -> SourceIdentity:
        return self.swapper.prepare_source(images, faces)

    def _needs_embeddings(self) -> bool:
        return needs_target_embeddings(self.swapper.config.type, self.swapper.config.weight)

    def swap(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]],
             source: SourceIdentity, inplace: bool = False) -> list[np.ndarray]:
        if self._needs_embeddings():
            faces = self._with_embeddings(frames, faces)
        return self.swapper.swap(frames, faces, source, inplace)

    def _with_embeddings(self, frames, faces):
        # identity balancing needs the targets' embeddings; faces from another stage may not carry them
        missing = [(i, f) for i, fs in enumerate(faces) for f in fs if f.embedding is None]
        if not missing:
            return faces
        if self._recognizer is None:
            self._recognizer = ArcFace(self._loader.load(self.options.face_recognizer_model, "recognizer")[0],
                                       self._batch_size)
        from dataclasses import replace

        computed = self._recognizer.embed([frames[i] for i, _ in missing], [f.landmark_5_68 for _, f in missing])
        by_id = {id(f): e for (_, f), e in zip(missing, computed, strict=True)}
        return [[replace(f, embedding=by_id[id(f)][0], embedding_norm=by_id[id(f)][1]) if id(f) in by_id else f
                 for f in fs] for fs in faces]


class OnnxFaceEnhancer:
    def __init__(self, options: FaceOptions, execution=None, store=None, batch_size: int = 8):
        if not options.face_enhancer_model:
            raise ValueError("no face enhancer model selected")
        self._loader = _Loader(execution, store)
        self.model_hashes = self._loader.model_hashes
        session, spec, _ = self._loader.load(options.face_enhancer_model, "enhancer")
        masks = _mask_options(options)
        config = EnhancerConfig(template=spec.template, size=spec.size[0], blend=options.face_enhancer_blend,
                                weight=options.face_enhancer_weight, batch_size=batch_size, masks=masks)
        models = _mask_models(self._loader, options, [t for t in masks.types if t == "occlusion"], batch_size)
        self.enhancer = Enhancer(session, config, models)

    def enhance(self, frames: Sequence[np.ndarray], faces: Sequence[Sequence[Face]],
                inplace: bool = False) -> list[np.ndarray]:
        return self.enhancer.enhance(frames, faces, inplace)
