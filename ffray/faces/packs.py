"""Loads the three face components a pipeline stage needs, for either pack.

Each pipeline stage loads only its own component: the detector stage an analyser (detector,
landmarker, recognizer), the swapper stage a swapper, the enhancer stage an enhancer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ffray.faces.options import FaceOptions
from ffray.faces.types import FaceAnalyser, FaceEnhancer, FaceSwapper

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
