"""Loads the three face components a pipeline stage needs, for either pack.

Each pipeline stage loads only its own component: the detector stage an analyser (detector,
landmarker, recognizer), the swapper stage a swapper, the enhancer stage an enhancer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ffray.faces.options import FaceOptions
from ffray.faces.types import Face, FaceAnalyser, FaceEnhancer, FaceSwapper

if TYPE_CHECKING:
    from ffray.models.sessions import ExecutionOptions
    from ffray.models.store import ModelStore


def load_analyser(options: FaceOptions, execution: ExecutionOptions | None = None,
                  store: ModelStore | None = None) -> FaceAnalyser:
    options.check_pack_supports_filters()
    if options.pack == "builtin":
        from ffray.faces import builtin

        return builtin.BuiltinAnalyser(options)
    from ffray.faces import onnx_pack

    return onnx_pack.OnnxFaceAnalyser(options, execution, store)


def load_swapper(options: FaceOptions, execution: ExecutionOptions | None = None,
                 store: ModelStore | None = None) -> FaceSwapper:
    if options.pack == "builtin":
        from ffray.faces import builtin

        return builtin.BuiltinSwapper(options)
    from ffray.faces import onnx_pack

    return onnx_pack.OnnxFaceSwapper(options, execution, store)


def load_enhancer(options: FaceOptions, execution: ExecutionOptions | None = None,
                  store: ModelStore | None = None) -> FaceEnhancer | None:
    if options.face_enhancer_model is None:
        return None
    if options.pack == "builtin":
        from ffray.faces import builtin

        return builtin.BuiltinEnhancer(options)
    from ffray.faces import onnx_pack

    return onnx_pack.OnnxFaceEnhancer(options, execution, store)


def face_warps(options: FaceOptions) -> Callable[[Face], list[tuple[str, int]]]:
    """face -> the (template, crop size) of every warp the swapper and enhancer stages make of its
    frame for it (the patch a face travels in must cover them: paste.warps_footprint). Read from the
    options and the registry, without loading a model, so the detector stage can cut patches."""
    if options.pack == "builtin":
        from ffray.faces.builtin import CROP_TEMPLATE, crop_size_for

        return lambda face: [(CROP_TEMPLATE, crop_size_for(face))]
    from ffray.faces.embed import ARCFACE_SIZE, ARCFACE_TEMPLATE
    from ffray.faces.swap import needs_target_embeddings
    from ffray.models.registry import get_spec
    from ffray.models.store import parse_model_ref

    swapper = get_spec(parse_model_ref(options.face_swapper_model)[0])
    warps = [(swapper.template, int(options.face_swapper_pixel_boost or swapper.size[0]))]
    if needs_target_embeddings(swapper.type, options.face_swapper_weight):
        warps.append((ARCFACE_TEMPLATE, ARCFACE_SIZE))  # the swapper embeds targets itself
    if options.face_enhancer_model:
        enhancer = get_spec(parse_model_ref(options.face_enhancer_model)[0])
        warps.append((enhancer.template, int(enhancer.size[0])))
    return lambda face: warps


# option field -> (its flag, the registry kind its model must be)
MODEL_OPTIONS = {
    "face_detector_model": ("--face-detector-model", "detector"),
    "face_landmarker_model": ("--face-landmarker-model", "landmarker"),
    "face_recognizer_model": ("--face-recognizer-model", "recognizer"),
    "face_classifier_model": ("--face-classifier-model", "classifier"),
    "face_swapper_model": ("--face-swapper-model", "swapper"),
    "face_enhancer_model": ("--face-enhancer-model", "enhancer"),
    "face_occluder_model": ("--face-occluder-model", "occluder"),
    "face_parser_model": ("--face-parser-model", "parser"),
}


def model_refs(options: FaceOptions) -> list[tuple[str, str, str]]:
    """(flag, model ref, registry kind) of every model file the loaders above open for `options`, in any
    stage or in the driver's source analysis; none for the builtin pack. Follows what
    ffray.faces.onnx_pack loads (tests/test_preflight.py checks that the two agree)."""
    if options.pack == "builtin":
        return []
    from ffray.faces.onnx_pack import MANY_DETECTORS
    from ffray.models.registry import get_spec
    from ffray.models.store import parse_model_ref

    flag = {field: f for field, (f, _) in MODEL_OPTIONS.items()}
    refs: list[tuple[str, str, str]] = []
    detectors = MANY_DETECTORS if options.face_detector_model == "many" else (options.face_detector_model,)
    refs += [(flag["face_detector_model"], ref, "detector") for ref in detectors]
    if options.face_landmarker_score > 0 or "area" in options.face_mask_types:
        refs.append((flag["face_landmarker_model"], "fan_68_5", "landmarker"))
    if options.face_landmarker_score > 0:
        landmarkers = ("2dfan4", "peppa_wutz") if options.face_landmarker_model == "many" \
            else (options.face_landmarker_model,)
        refs += [(flag["face_landmarker_model"], ref, "landmarker") for ref in landmarkers]
    refs.append((flag["face_recognizer_model"], options.face_recognizer_model, "recognizer"))  # source faces
    if options.selector_filter_flags():
        refs.append((flag["face_classifier_model"], options.face_classifier_model, "classifier"))
    refs.append((flag["face_swapper_model"], options.face_swapper_model, "swapper"))
    converter = get_spec(parse_model_ref(options.face_swapper_model)[0]).converter
    if converter:
        refs.append((flag["face_swapper_model"], converter, "converter"))
    if options.face_enhancer_model:
        refs.append((flag["face_enhancer_model"], options.face_enhancer_model, "enhancer"))
    if "occlusion" in options.face_mask_types:
        refs.append((flag["face_occluder_model"], options.face_occluder_model, "occluder"))
    if "region" in options.face_mask_types:
        refs.append((flag["face_parser_model"], options.face_parser_model, "parser"))
    return list(dict.fromkeys(refs))
