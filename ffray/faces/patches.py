"""Face patches: the pixels a face's swap and enhancement read and write, cut from the frame, so that
the face stages of a distributed job move faces instead of whole frames.

A patch is, per selected face, the frame box that holds every crop warp the later stages make of that
face and every pixel their paste-back writes (`paste.warps_footprint`), in the upright frame. A stage
works on a `Canvas`: full-size frame buffers into which it writes a frame's patches, so every face
function runs on the same coordinates, matrices and border pixels as on the whole frame and its
numbers are bit-identical; it then cuts the same boxes back out. Patches of one frame may overlap:
they are written from the same frame state and cut from the same canvas, so overlaps always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ffray.faces.paste import warps_footprint
from ffray.faces.types import Face


@dataclass
class Patches:
    """All patches of one chunk: `frame` (P,) frame number in the chunk, `box` (P, 4) x1, y1, x2, y2 in
    the upright frame, `pixels` every patch's (h, w, 3) uint8 bytes one after another (one flat array
    travels as one Arrow buffer, not P objects)."""

    frame: np.ndarray
    box: np.ndarray
    pixels: np.ndarray
    changed: np.ndarray | None = None  # np.packbits of one flag per patch pixel: a face stage changed it

    COLUMNS = ("patch_frame", "patch_box", "patch_pixels", "patch_changed")

    def __post_init__(self):
        if self.changed is None:
            self.changed = np.zeros((len(self.pixels) // 3 + 7) // 8, np.uint8)

    @classmethod
    def empty(cls) -> Patches:
        return cls(np.zeros(0, np.int32), np.zeros((0, 4), np.int32), np.zeros(0, np.uint8))

    def changed_mask(self, k: int, offsets: np.ndarray | None = None) -> np.ndarray:
        """Patch k's (h, w) bool mask of the pixels a face stage changed."""
        offsets = self.offsets() if offsets is None else offsets
        x1, y1, x2, y2 = (int(v) for v in self.box[k])
        start, end = offsets[k] // 3, offsets[k + 1] // 3  # pixel numbers: bits of `changed`
        flags = np.unpackbits(self.changed[start // 8:(end + 7) // 8]).view(bool)  # only this patch's bytes
        return flags[start % 8:start % 8 + end - start].reshape(y2 - y1, x2 - x1)

    def __len__(self) -> int:
        return len(self.frame)

    def offsets(self) -> np.ndarray:
        sizes = (self.box[:, 2] - self.box[:, 0]) * (self.box[:, 3] - self.box[:, 1]) * 3
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def image(self, k: int, offsets: np.ndarray | None = None) -> np.ndarray:
        """Patch k as an (h, w, 3) view of `pixels`."""
        offsets = self.offsets() if offsets is None else offsets
        x1, y1, x2, y2 = (int(v) for v in self.box[k])
        return self.pixels[offsets[k]:offsets[k + 1]].reshape(y2 - y1, x2 - x1, 3)

    def of_frame(self, j: int) -> list[int]:
        return [k for k in range(len(self)) if int(self.frame[k]) == j]

    def columns(self) -> dict[str, np.ndarray]:
        return {"patch_frame": self.frame, "patch_box": self.box, "patch_pixels": self.pixels,
                "patch_changed": self.changed}

    @classmethod
    def from_columns(cls, values: dict[str, np.ndarray]) -> Patches:
        return cls(np.asarray(values["patch_frame"], np.int32).reshape(-1),
                   np.asarray(values["patch_box"], np.int32).reshape(-1, 4),
                   np.asarray(values["patch_pixels"], np.uint8).reshape(-1),
                   np.asarray(values["patch_changed"], np.uint8).reshape(-1))

    def with_pixels(self, pixels: np.ndarray) -> Patches:
        """The same patches holding `pixels`, with the pixels that differ from these added to `changed`."""
        channels = (pixels != self.pixels).view(np.uint8).reshape(-1, 3)
        differs = channels[:, 0] | channels[:, 1] | channels[:, 2]  # ~10x np.any(axis=1) over 3 channels
        changed = np.packbits(differs) | self.changed
        return Patches(self.frame, self.box, pixels, changed)

    @classmethod
    def concat(cls, parts: Sequence[Patches]) -> Patches:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.frame for p in parts]), np.concatenate([p.box for p in parts]),
                   np.concatenate([p.pixels for p in parts]))  # nothing changed yet: flags start at zero


def patch_boxes(frame_shape: tuple[int, ...], faces: Sequence[Face],
                warps: Callable[[Face], list[tuple[str, int]]]) -> list[tuple[int, int, int, int]]:
    """One box per face (same order). A face whose landmarks are degenerate gets the whole frame: the
    stages leave it alone or fail on it exactly as on a whole frame."""
    height, width = frame_shape[:2]
    boxes = []
    for face in faces:
        box = warps_footprint(frame_shape, face.landmark_5_68, warps(face))
        boxes.append(box if box is not None else (0, 0, width, height))
    return boxes


def cut_patches(frames: Sequence[np.ndarray], boxes: Sequence[Sequence[tuple[int, int, int, int]]],
                first: int = 0) -> Patches:
    """`boxes[j]`: the boxes of `frames[j]`, chunk frame number `first + j` (upright frames)."""
    images = [[frame[y1:y2, x1:x2] for x1, y1, x2, y2 in frame_boxes] for frame, frame_boxes in zip(frames, boxes,
                                                                                                     strict=True)]
    return patches_of_images(images, boxes, first)


def patches_of_images(images: Sequence[Sequence[np.ndarray]], boxes: Sequence[Sequence[tuple[int, int, int, int]]],
                      first: int = 0) -> Patches:
    """Patches from each box's pixels already cut: `images[j][k]` is box `boxes[j][k]` of chunk frame
    `first + j` (upright)."""
    frame_ids, flat_boxes, parts = [], [], []
    for j, (frame_images, frame_boxes) in enumerate(zip(images, boxes, strict=True)):
        for image, box in zip(frame_images, frame_boxes, strict=True):
            x1, y1, x2, y2 = box
            if image.shape[:2] != (y2 - y1, x2 - x1):
                raise ValueError(f"patch {box} of frame {first + j} has pixels of shape {image.shape}")
            frame_ids.append(first + j)
            flat_boxes.append(tuple(box))
            parts.append(image.reshape(-1))
    if not parts:
        return Patches.empty()
    return Patches(np.array(frame_ids, np.int32), np.array(flat_boxes, np.int32).reshape(-1, 4),
                   np.concatenate(parts))


class Canvas:
    """Reusable full-size frame buffers for the face stages. Only patch boxes are ever written or read;
    after each use they are zeroed again, so what a stage computes never depends on an earlier chunk
    (a retried chunk gives the same bytes)."""

    def __init__(self):
        self._buffers: dict[tuple[int, int], list[np.ndarray]] = {}

    def _take(self, shape: tuple[int, int], count: int) -> list[np.ndarray]:
        pool = self._buffers.setdefault(shape, [])
        while len(pool) < count:
            pool.append(np.zeros((*shape, 3), np.uint8))  # zero pages: memory only where patches land
        return pool[:count]

    def load(self, shape: tuple[int, int], patches: Patches, frames: Sequence[int]) -> list[np.ndarray]:
        """One buffer per chunk frame in `frames`, holding that frame's patches."""
        buffers = self._take(shape, len(frames))
        offsets = patches.offsets()
        for buffer, j in zip(buffers, frames, strict=True):
            for k in patches.of_frame(j):
                x1, y1, x2, y2 = (int(v) for v in patches.box[k])
                buffer[y1:y2, x1:x2] = patches.image(k, offsets)
        return buffers

    def store(self, buffers: Sequence[np.ndarray], patches: Patches, frames: Sequence[int],
              into: np.ndarray) -> None:
        """Cut each frame's patch boxes from its buffer into `into` (a pixels array laid out like
        `patches.pixels`), then zero those boxes."""
        offsets = patches.offsets()
        for buffer, j in zip(buffers, frames, strict=True):
            ks = patches.of_frame(j)
            for k in ks:
                x1, y1, x2, y2 = (int(v) for v in patches.box[k])
                into[offsets[k]:offsets[k + 1]] = buffer[y1:y2, x1:x2].reshape(-1)
            for k in ks:
                x1, y1, x2, y2 = (int(v) for v in patches.box[k])
                buffer[y1:y2, x1:x2] = 0


def apply_patches(frame: np.ndarray, patches: Patches, j: int, to_frame: Callable[[np.ndarray, tuple], tuple],
                  offsets: np.ndarray | None = None) -> None:
    """Write frame j's patches into `frame` in place. `to_frame(image, box)` maps an upright patch and
    its box to the frame's orientation (identity for upright frames)."""
    offsets = patches.offsets() if offsets is None else offsets
    for k in patches.of_frame(j):
        image, (x1, y1, x2, y2) = to_frame(patches.image(k, offsets), tuple(int(v) for v in patches.box[k]))
        frame[y1:y2, x1:x2] = image
