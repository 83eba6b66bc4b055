"""Declarative registry of FaceFusion's models: one `ModelSpec` per model, as FaceFusion names it.

Facts (releases, templates, sizes, mean/std, colour order, layout, licences, tensor names and shapes)
follow FaceFusion 3.8.1 (see /work/shared/reference/facefusion.md). Hashes are never guessed: only
YuNet's is pinned (checked on the real file); for the others the store verifies against FaceFusion's
crc32 `.hash` file fetched from the same source, and records the sha256 it computed.

Tensor conventions here: a dimension `None` is "any" (batch dimensions are left open so a batched
re-export passes the contract); an output name "" means FaceFusion reads that output by position and
its name is not part of the contract.
"""

from __future__ import annotations

from ffray.errors import ModelError
from ffray.models.spec import ModelSpec, TensorSpec

GITHUB_URL = "https://github.com/facefusion/facefusion-assets/releases/download/{release}/{file}"
HUGGINGFACE_URL = "https://huggingface.co/facefusion/{release}/resolve/main/{file}"
HF_MIRROR_URL = "https://hf-mirror.com/facefusion/{release}/resolve/main/{file}"
URL_TEMPLATES = (GITHUB_URL, HUGGINGFACE_URL, HF_MIRROR_URL)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

NON_COMMERCIAL = "non-commercial research only"


def _urls(release: str, file_name: str) -> tuple[str, ...]:
    return tuple(t.format(release=release, file=file_name) for t in URL_TEMPLATES)


def _image(name: str, size: int, channels_last: bool = False) -> TensorSpec:
    return TensorSpec(name, (None, size, size, 3) if channels_last else (None, 3, size, size))


def _spec(name: str, kind: str, type: str, release: str = "models-3.0.0", file_name: str | None = None,
          **fields) -> ModelSpec:
    file_name = file_name or f"{name}.onnx"
    return ModelSpec(name=name, kind=kind, type=type, file_name=file_name, release=release,
                     urls=_urls(release, file_name), **fields)


def _detectors() -> list[ModelSpec]:
    any_size = TensorSpec("input", (None, 3, None, None))  # retinaface/scrfd take 160..640 squares
    nine = tuple(TensorSpec("", (None, d)) for d in (1, 1, 1, 4, 4, 4, 10, 10, 10))
    return [
        _spec("yolo_face", "detector", "yolo_face", file_name="yoloface_8n.onnx",
              inputs=(_image("input", 640),), outputs=(TensorSpec("", (None, 20, 8400)),),
              size=(640, 640), std=(255.0,) * 3, color="BGR", license="GPL-3.0", commercial=True),
        _spec("scrfd", "detector", "scrfd", file_name="scrfd_2.5g.onnx",
              inputs=(any_size,), outputs=nine, size=(640, 640), mean=(127.5,) * 3, std=(128.0,) * 3,
              color="BGR", license=f"InsightFace, {NON_COMMERCIAL}", commercial=False),
        _spec("retinaface", "detector", "retinaface", file_name="retinaface_10g.onnx",
              inputs=(any_size,), outputs=nine, size=(640, 640), mean=(127.5,) * 3, std=(128.0,) * 3,
              color="BGR", license=f"InsightFace, {NON_COMMERCIAL}", commercial=False),
        _spec("yunet", "detector", "yunet", release="models-3.4.0", file_name="yunet_2023_mar.onnx",
              # checked on the real file (= OpenCV Zoo face_detection_yunet_2023mar.onnx)
              crc32="bfdf4e40", sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
              inputs=(_image("input", 640),),
              outputs=tuple(
                  TensorSpec(f"{head}_{stride}", (None, (640 // stride) ** 2, width))
                  for head, width in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
                  for stride in (8, 16, 32)
              ),
              size=(640, 640), color="BGR", license="MIT", commercial=True),
    ]


def _landmarkers() -> list[ModelSpec]:
    return [
        _spec("2dfan4", "landmarker", "2dfan4", inputs=(_image("input", 256),),
              outputs=(TensorSpec("", (None, 68, 3)), TensorSpec("", (None, 68, 64, 64))),
              size=(256, 256), std=(255.0,) * 3, color="BGR", license="MIT", commercial=True),
        _spec("peppa_wutz", "landmarker", "peppa_wutz", inputs=(_image("input", 256),),
              size=(256, 256), std=(255.0,) * 3, color="BGR", license="Apache-2.0", commercial=True),
        _spec("fan_68_5", "landmarker", "fan_68_5", inputs=(TensorSpec("input", (None, 5, 2)),),
              outputs=(TensorSpec("", (None, 68, 2)),), template="ffhq_512", size=(1, 1),
              license="OpenRAIL-M", commercial=True),
    ]


def _recognizers() -> list[ModelSpec]:
    return [
        _spec("arcface_w600k_r50", "recognizer", "arcface", inputs=(_image("input", 112),),
              outputs=(TensorSpec("", (None, 512)),), template="arcface_112_v2", size=(112, 112),
              mean=(127.5,) * 3, std=(127.5,) * 3, license=f"InsightFace, {NON_COMMERCIAL}", commercial=False),
        _spec("fairface", "classifier", "fairface", inputs=(_image("input", 224),),
              template="arcface_112_v2", size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
              license="CC-BY-4.0", commercial=True),
    ]


def _converters() -> list[ModelSpec]:
    vector = (TensorSpec("input", (None, 512)),)
    return [
        _spec(f"crossface_{family}", "converter", "crossface", release="models-3.4.0", inputs=vector,
              outputs=(TensorSpec("", (None, 512)),), license="unknown (FaceFusion labs)", commercial=False)
        for family in ("ghost", "simswap", "hififace")
    ]


def _swapper(name: str, type: str, size: int, template: str, source: TensorSpec, license: str,
             commercial: bool, pixel_boost: tuple[int, ...], release: str = "models-3.0.0",
             mean=(0.0,) * 3, std=(1.0,) * 3, converter: str | None = None, precision: str = "fp32",
             outputs: tuple[TensorSpec, ...] | None = None, **extra) -> ModelSpec:
    return _spec(name, "swapper", type, release=release,
                 inputs=(source, _image("target", size)),
                 outputs=outputs or (TensorSpec("", (None, 3, size, size)),),
                 template=template, size=(size, size), mean=mean, std=std, license=license,
                 commercial=commercial, converter=converter, pixel_boost=pixel_boost, precision=precision,
                 **extra)


def _swappers() -> list[ModelSpec]:
    embedding = TensorSpec("source", (None, 512))
    boost_128 = (128, 256, 384, 512, 768, 1024)
    boost_256 = (256, 512, 768, 1024)
    specs = [
        _swapper("blendswap_256", "blendswap", 256, "ffhq_512", _image("source", 112),
                 f"mapooon, {NON_COMMERCIAL}", False, (256, 384, 512, 768, 1024)),
        *[
            _swapper(f"ghost_{i}_256", "ghost", 256, "arcface_112_v1", embedding, "Apache-2.0", True, boost_256,
                     mean=HALF, std=HALF, converter="crossface_ghost")
            for i in (1, 2, 3)
        ],
        _swapper("hififace_unofficial_256", "hififace", 256, "mtcnn_512", embedding, "unknown (GuijiAI)", False,
                 boost_256, release="models-3.1.0", mean=HALF, std=HALF, converter="crossface_hififace"),
        *[
            _swapper(f"hyperswap_1{v}_256", "hyperswap", 256, "arcface_128", embedding,
                     "ResearchRAIL (FaceFusion), research only", False, boost_256, release="models-3.3.0",
                     mean=HALF, std=HALF, precision="fp16",
                     # the export names its outputs ["output", "mask"]; FaceFusion reads only the first, and
                     # the mask's shape is not documented, so only "output" is part of the contract
                     outputs=(TensorSpec("output", (None, 3, 256, 256)),))
            for v in ("a", "b", "c")
        ],
        *[
            _swapper(name, "inswapper", 128, "arcface_128", embedding, f"InsightFace, {NON_COMMERCIAL}", False,
                     boost_128, precision=precision, last_initializer_shape=(512, 512))
            for name, precision in (("inswapper_128", "fp32"), ("inswapper_128_fp16", "fp16"))
        ],
        _swapper("simswap_256", "simswap", 256, "arcface_112_v1", embedding, f"neuralchen, {NON_COMMERCIAL}",
                 False, boost_256, mean=IMAGENET_MEAN, std=IMAGENET_STD, converter="crossface_simswap"),
        _swapper("simswap_unofficial_512", "simswap", 512, "arcface_112_v1", embedding,
                 f"neuralchen, {NON_COMMERCIAL}", False, (512, 768, 1024), converter="crossface_simswap"),
        _swapper("uniface_256", "uniface", 256, "ffhq_512", _image("source", 256), "unknown (xc-csc101)", False,
                 boost_256, mean=HALF, std=HALF),
    ]
    return specs


def _enhancer(name: str, type: str, size: int, license: str, commercial: bool, template: str = "ffhq_512",
              weight: bool = False) -> ModelSpec:
    inputs = (_image("input", size),)
    if weight:  # CodeFormer's fidelity weight, shape (1,), float64
        inputs += (TensorSpec("weight", (1,), "float64"),)
    return _spec(name, "enhancer", type, inputs=inputs, outputs=(TensorSpec("", (None, 3, size, size)),),
                 template=template, size=(size, size), mean=HALF, std=HALF, license=license,
                 commercial=commercial)


def _enhancers() -> list[ModelSpec]:
    gpen = f"yangxy, {NON_COMMERCIAL}"
    return [
        _enhancer("codeformer", "codeformer", 512, "S-Lab-1.0 (non-commercial)", False, weight=True),
        *[_enhancer(f"gfpgan_{v}", "gfpgan", 512, "Apache-2.0", True) for v in ("1.2", "1.3", "1.4")],
        _enhancer("gpen_bfr_256", "gpen", 256, gpen, False, template="arcface_128"),
        *[_enhancer(f"gpen_bfr_{n}", "gpen", n, gpen, False) for n in (512, 1024, 2048)],
        _enhancer("restoreformer_plus_plus", "restoreformer", 512, "Apache-2.0", True),
    ]


def _masks() -> list[ModelSpec]:
    return [
        *[_spec(f"xseg_{n}", "occluder", "xseg", release=release, inputs=(_image("input", 256, True),),
                size=(256, 256), std=(255.0,) * 3, color="BGR", layout="NHWC", license="GPL-3.0", commercial=True)
          for n, release in ((1, "models-3.1.0"), (2, "models-3.1.0"), (3, "models-3.2.0"))],
        *[_spec(f"bisenet_resnet_{n}", "parser", "bisenet", release=release, inputs=(_image("input", 512),),
                outputs=(TensorSpec("", (None, 19, 512, 512)),), size=(512, 512), mean=IMAGENET_MEAN,
                std=IMAGENET_STD, license="MIT", commercial=True)
          for n, release in ((18, "models-3.1.0"), (34, "models-3.0.0"))],
    ]


def _build() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for spec in [*_detectors(), *_landmarkers(), *_recognizers(), *_converters(), *_swappers(), *_enhancers(),
                 *_masks()]:
        assert spec.name not in specs, spec.name
        specs[spec.name] = spec
    return specs


MODELS: dict[str, ModelSpec] = _build()

KINDS = tuple(sorted({spec.kind for spec in MODELS.values()}))


def get_spec(name: str) -> ModelSpec:
    """The registry entry for a FaceFusion model name; ModelError naming close names if unknown."""
    try:
        return MODELS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(sorted(MODELS))})"
        raise ModelError(f"{name}: not a known model{hint}") from None


def required_models(name: str) -> list[str]:
    """The model and the models it cannot run without (a swapper's embedding converter)."""
    spec = get_spec(name)
    return [name] + ([spec.converter] if spec.converter else [])


def models_of_kind(kind: str) -> list[ModelSpec]:
    return [spec for spec in MODELS.values() if spec.kind == kind]
