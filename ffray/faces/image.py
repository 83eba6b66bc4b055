"""Still images: read (local path or fsspec URL, EXIF orientation applied), write atomically, and
`swap_image`, the whole single-image swap behind `ffray swap-image` (no Ray).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ffray.errors import InputError, MediaError
from ffray.faces.options import FaceOptions
from ffray.media.io import check_readable, open_output_atomic, split_uri

log = logging.getLogger(__name__)

# extension -> (cv2.imencode extension, encode params)
IMAGE_FORMATS = {
    ".png": (".png", []),
    ".jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
    ".jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
    ".webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 95]),
    ".bmp": (".bmp", []),
    ".tif": (".tiff", []),
    ".tiff": (".tiff", []),
}


def read_image(uri: str | os.PathLike) -> np.ndarray:
    """BGR uint8 HxWx3 from a local path or fsspec URL, EXIF orientation applied (as cv2.imread does).

    Grey and alpha images become 3-channel BGR. Raises MediaError naming the file when it is missing,
    empty or not a decodable image.
    """
    check_readable(uri)
    fs, path = split_uri(uri)
    try:
        with fs.open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise MediaError(uri, f"cannot read: {exc}") from exc
    # IMREAD_COLOR applies the EXIF orientation, for imdecode as for imread
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(uri, "not a readable image")
    return image


def encode_image(image: np.ndarray, uri: str | os.PathLike) -> bytes:
    """Encoded bytes in the format the file extension names."""
    suffix = Path(split_uri(uri)[1]).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise MediaError(uri, f"unsupported image extension {suffix or '(none)'!r}; "
                              f"use one of {', '.join(IMAGE_FORMATS)}")
    extension, params = IMAGE_FORMATS[suffix]
    ok, buffer = cv2.imencode(extension, image, params)
    if not ok:
        raise MediaError(uri, f"cannot encode the image as {extension}")
    return buffer.tobytes()


def write_image(uri: str | os.PathLike, image: np.ndarray) -> None:
    """Write atomically (temporary name then rename, or a single put): nothing partial at `uri`."""
    data = encode_image(image, uri)
    with open_output_atomic(uri) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def swap_image(sources: Sequence[str | os.PathLike], target: str | os.PathLike, output: str | os.PathLike,
               options: FaceOptions, execution=None, store=None) -> dict:
    """Swap the sources' identity (largest face of each source image) into the selected faces of
    `target` and write `output`. Returns a small summary (faces swapped, model hashes).

    Selection follows `options`: `many` / `one`, or `reference` with the reference face taken from
    `reference_face_image` when given, else from the target's own faces (`reference_face_position`
    after sort/filter).
    """
    from ffray.faces.frame import FrameSwap

    if not sources:
        raise InputError("swap-image: at least one --source image is required")
    encode_check = np.zeros((1, 1, 3), np.uint8)
    encode_image(encode_check, output)  # fail on a bad output extension before any work

    source_images = [read_image(uri) for uri in sources]
    target_image = read_image(target)
    reference_image = read_image(options.reference_face_image) if options.reference_face_image else None

    job = FrameSwap(options, execution, store)
    source_faces = job.source_faces(source_images, sources)
    target_faces = job.analyse(target_image)
    if not target_faces:
        raise InputError(f"{os.fspath(target)}: no face found")
    reference = None
    if options.face_selector_mode == "reference":
        reference = job.image_reference(target_faces, source_faces, reference_image)
    selected = job.select(target_faces, reference, source_faces)
    log.info("swap-image: %d of %d target faces selected", len(selected), len(target_faces))

    result = job.swap(target_image, selected, source_images, source_faces)
    write_image(output, result)
    return {"output": os.fspath(output), "target_faces": len(target_faces), "swapped_faces": len(selected),
            "model_hashes": job.model_hashes}
