"""What each pipeline stage does to a batch of chunk rows. Plain Python on numpy: the Ray actor classes
in `actors/` only load their component in `__init__` and call these functions.

A row is one chunk of one video (see datasource.py). Frames never travel: the detector decodes the
chunk, selects faces and cuts each selected face's patch (ffray.faces.patches); the swapper and
enhancer work on those patches; the writer decodes the chunk again, pastes the patches back and
encodes. Columns every row keeps from read to write: `video_key`, `chunk_id`, `chunk_index`, `start`,
`end`, `chunk_task`, `error` (empty string = fine), `error_kind`, and per stage S `S_s` (busy seconds),
`S_model_s` (of which in ONNX Runtime), `S_decode_s` (of which decoding), `S_calls` (share of one
call), `S_in`/`S_out` (bytes of the row entering/leaving S: what crosses the object store at that
boundary). A row whose `error` is set passes through every stage untouched, so a bad chunk fails its
video without stopping the dataset.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from ffray.errors import FfrayError
from ffray.faces.options import FaceOptions
from ffray.faces.patches import Canvas, Patches, cut_patches, patch_boxes, patches_of_images
from ffray.faces.types import FACE_COLUMNS, Face, pack_faces, unpack_faces
from ffray.media.convert import paste_bgr_into_yuv420

KEY_COLUMNS = ("video_key", "chunk_id", "chunk_index", "start", "end")
ERROR_COLUMNS = ("error", "error_kind")  # why a chunk failed ("" = fine), and as what (stages.error_kind)


@dataclass
class VideoJob:
    """Per-video parameters every stage can look up by `video_key` (small: no frames, no frame lists)."""

    video_key: str
    uri: str
    rotation: int  # clockwise degrees to display (VideoInfo.rotation)
    source_key: str
    reference: Face | None = None  # reference mode: the face to match, with its embedding
    info: Any = None  # VideoInfo without the per-frame lists: what the segment encoder needs
    segment_dir: str = ""
    encode: Any = None  # EncodeOptions for this video's segments (depends on the output container)
    segment_ext: str = ".mp4"
    source_yuv: bool = False  # the writer composes in the decoded YUV (media.encode.keeps_source_yuv)


@dataclass
class SourceSet:
    paths: tuple[str, ...]
    faces: tuple[Face, ...]  # the largest face of each source image, analysed once by the driver


@dataclass
class JobTable:
    """Given to every actor at construction. Kept small: weights load from paths inside the actor.
    `videos` is keyed by video key (driver.video_key): one entry however many requests share it."""

    job_id: str
    face_options: dict
    videos: dict[str, VideoJob]
    sources: dict[str, SourceSet]
    execution: dict[str, dict] = field(default_factory=dict)  # stage -> ExecutionOptions kwargs
    model_batch: dict[str, int] = field(default_factory=dict)  # stage -> frames per model call
    store_settings: dict = field(default_factory=dict)  # ModelStore kwargs (PipelineConfig.store_settings)
    live_board: str = ""  # name of the run's LiveBoard actor (live.py): where actors report; "" = nowhere
    cache_root: str = ""  # work root of the template cache (analysis_cache.py); "" = no cache
    analysis_keys: dict[str, str] = field(default_factory=dict)  # video key -> analysis key in the cache
    analyse_only: bool = False  # `ffray analyse`: the detector fills the cache and sends nothing on
    # video key -> folder of its tracked selection (faces to swap per chunk, decided by the driver over
    # the whole video: ffray.faces.track); the detector then only cuts their patches
    selections: dict[str, str] = field(default_factory=dict)

    @property
    def cuts_only(self) -> bool:
        """The detector stage only cuts patches of faces chosen beforehand (every video tracked): it runs
        no model, so its pool loads none and takes no GPU share."""
        return not self.analyse_only and bool(self.videos) and set(self.videos) <= set(self.selections)

    @property
    def options(self) -> FaceOptions:
        return FaceOptions.from_dict(self.face_options)

    def execution_options(self, stage: str):
        from ffray.models.sessions import ExecutionOptions

        return ExecutionOptions(**self.execution.get(stage, {}))

    def store(self):
        from ffray.models.store import ModelStore

        return ModelStore(**self.store_settings)


# --- orientation ---------------------------------------------------------------------------------


def to_display(image: np.ndarray, rotation: int) -> np.ndarray:
    """Coded -> upright (what a player shows): turn `rotation` degrees clockwise. Lossless."""
    k = (rotation // 90) % 4
    return image if k == 0 else np.ascontiguousarray(np.rot90(image, -k))


def to_coded(image: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return image if k == 0 else np.ascontiguousarray(np.rot90(image, k))


def coded_box(box: tuple[int, int, int, int], rotation: int, coded_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """An upright-frame box (x1, y1, x2, y2) in the coded frame of (height, width) `coded_shape`: where
    `to_coded` of the upright region's pixels lands."""
    x1, y1, x2, y2 = box
    height, width = coded_shape
    k = (rotation // 90) % 4
    if k == 1:  # upright rows are coded columns; upright columns run up the coded rows
        return y1, height - x2, y2, height - x1
    if k == 2:
        return width - x2, height - y2, width - x1, height - y1
    if k == 3:
        return width - y2, x1, width - y1, x2
    return box


# --- batch plumbing ------------------------------------------------------------------------------


def row_count(batch: dict[str, np.ndarray]) -> int:
    return len(batch["chunk_id"])


def row_nbytes(batch: dict[str, Any], i: int) -> int:
    total = 0
    for value in batch.values():
        item = value[i]
        total += item.nbytes if isinstance(item, np.ndarray) else np.asarray(item).nbytes
    return int(total)


def column(values: Sequence[np.ndarray]) -> np.ndarray:
    """One column from per-row arrays: stacked when shapes agree, else ragged (Arrow variable-shaped)."""
    arrays = [np.asarray(v) for v in values]
    if all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def frame_count(batch: dict[str, Any], i: int) -> int:
    return int(batch["end"][i]) - int(batch["start"][i])


def patches_of(batch: dict[str, Any], i: int) -> Patches:
    return Patches.from_columns({name: batch[name][i] for name in Patches.COLUMNS})


def faces_of(batch: dict[str, Any], i: int, frame_count: int) -> list[list[Face]]:
    packed = {name: np.asarray(batch[f"face_{name}" if name != "face_frame" else name][i])
              for name in FACE_COLUMNS}
    return unpack_faces(packed, frame_count)


def packed_face_columns(packed_rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {}
    for name in FACE_COLUMNS:
        key = name if name == "face_frame" else f"face_{name}"
        out[key] = column([p[name] for p in packed_rows])
    return out


def error_text(exc: BaseException) -> str:
    """What a user reads: an FfrayError's own message (it names the file); for an unexpected failure its
    type and the last frame of the traceback, so the report points at the code."""
    if isinstance(exc, FfrayError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return storage_error_text(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
    return f"internal error {type(exc).__name__}: {exc}{where}"


def storage_error_text(exc: OSError) -> str:
    """A full disk, a read-only or missing folder: the system's words and the folder, not a bug report
    (the file itself is often a hidden temporary name)."""
    import os

    from ffray.pipeline.storage import failure_reason

    reason = failure_reason(exc)
    where = os.path.dirname(str(exc.filename)) if exc.filename else ""
    return f"cannot write to {where}: {reason}" if where else reason


def error_kind(exc: BaseException) -> str:
    """input | model | processing: what the driver reports the video's failure as (its exit code)."""
    from ffray.errors import InputError, ModelError

    if isinstance(exc, ModelError):
        return "model"
    return "input" if isinstance(exc, InputError) else "processing"


def run_stage(stage: str, batch: dict[str, Any], per_row: Callable[[int], dict[str, Any]],
              models: dict[str, str], job_id: str = "") -> dict[str, Any]:
    """Apply `per_row(i) -> {column: value}` to each row, catch per-row failures into `error`, and add
    the stage's accounting columns. Columns not returned by `per_row` are kept as they came. The
    batch's numbers also go to Prometheus (metrics.py), labelled with `job_id`."""
    from ffray.models.sessions import model_seconds
    from ffray.pipeline.metrics import record_stage

    n = row_count(batch)
    started = time.perf_counter()
    model_started = model_seconds()
    results: list[dict[str, Any]] = []
    in_bytes = [row_nbytes(batch, i) for i in range(n)]
    for i in range(n):
        if str(batch["error"][i]):
            results.append({})
            continue
        try:
            results.append(per_row(i))
        except Exception as exc:  # a chunk that cannot be processed fails its video, not the dataset
            results.append({"error": error_text(exc), "error_kind": error_kind(exc)})
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {}
    keys = list(batch.keys())
    for r in results:
        keys += [k for k in r if k not in keys]
    for key in keys:
        values = [r[key] if key in r else _passthrough(batch, key, i, r) for i, r in enumerate(results)]
        out[key] = column(values) if key not in ERROR_COLUMNS else np.array([str(v) for v in values], dtype=object)
    out[f"{stage}_s"] = np.full(n, elapsed / max(n, 1))
    out[f"{stage}_model_s"] = np.full(n, (model_seconds() - model_started) / max(n, 1))
    out[f"{stage}_calls"] = np.full(n, 1.0 / max(n, 1))
    out[f"{stage}_in"] = np.array(in_bytes, dtype=np.int64)
    out[f"{stage}_models"] = np.array([json.dumps(models, sort_keys=True)] * n, dtype=object)
    out[f"{stage}_out"] = np.array([row_nbytes(out, i) for i in range(n)], dtype=np.int64)
    record_stage(stage, out, job_id, failed_before=batch["error"])
    return out


class StageStart:
    """What a pool actor loads in `__init__`, or why it could not. The driver checks every model before
    the first frame (preflight.py); what still fails on a worker (a path or provider that exists on the
    driver's node only, a GPU out of memory) fails the chunks that actor is given, each with the reason,
    instead of taking the whole dataset (every other video of the job) down with a traceback."""

    def __init__(self, stage: str, load: Callable[[], Any], live=None):
        self.stage = stage
        try:
            self.value, self.error = load(), None
        except Exception as exc:  # reported per chunk by failed_rows, as the kind of failure it was
            import socket

            from ffray.errors import InputError, ModelError, ProcessingError

            kind = {"model": ModelError, "input": InputError}.get(error_kind(exc), ProcessingError)
            self.value = None
            self.error = kind(f"{stage} could not start on {socket.gethostname()}: {error_text(exc)}")
        if live is not None:  # the driver's progress line says which pools are ready
            live.started(stage, str(self.error or ""))

    def failed_rows(self, batch: dict[str, Any]) -> dict[str, Any]:
        def fail(i: int) -> dict[str, Any]:
            raise self.error

        return run_stage(self.stage, batch, fail, {})


def _passthrough(batch: dict[str, Any], key: str, i: int, result: dict[str, Any]) -> Any:
    if key in batch:
        return batch[key][i]
    # a column this stage adds but did not produce for row i (error row): an empty placeholder
    if key in ("faces", "size"):
        return np.int64(0)
    if key.startswith("face_") or key == "face_frame":
        return _EMPTY_FACES[key]
    if key in Patches.COLUMNS:
        return Patches.empty().columns()[key]
    if key.endswith("_decode_s"):
        return 0.0
    if key.endswith("_cache_hits"):
        return np.int64(0)
    if key in ("segment", "sha256", "error_kind"):
        return ""
    raise KeyError(f"stage produced column {key!r} for some rows only")


_EMPTY_FACES = {("face_frame" if k == "face_frame" else f"face_{k}"): v for k, v in pack_faces([]).items()}


def model_batches(count: int, size: int):
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


# --- the face stages -------------------------------------------------------------------------------


class _Clock:
    """Seconds spent pulling items from iterators (a stage's decode time)."""

    def __init__(self):
        self.seconds = 0.0

    def timed(self, items):
        items = iter(items)
        while True:
            started = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                self.seconds += time.perf_counter() - started
                return
            self.seconds += time.perf_counter() - started
            yield item


def upright_shape(video: VideoJob) -> tuple[int, int]:
    """(height, width) of the video's frames turned upright, the space faces and patches live in."""
    height, width = video.info.coded_height, video.info.coded_width
    return (width, height) if (video.rotation // 90) % 2 else (height, width)


def detect_rows(batch: dict[str, Any], analyser, table: JobTable, distance=None) -> dict[str, Any]:
    """Detector stage: decode the chunk, analyse every frame (upright), select the faces to process,
    pack them, and cut each selected face's patch: nothing else of the frames leaves this stage."""
    from ffray.errors import ProcessingError
    from ffray.faces.packs import face_warps
    from ffray.faces.select import select_faces
    from ffray.pipeline.analysis_cache import AnalysisCache, FaceStore, needs_embeddings
    from ffray.pipeline.datasource import decode_frames, task_of

    options = table.options
    size = table.model_batch.get("detector", 8)
    dist = distance or getattr(analyser, "face_distance", None)  # no analyser: table.cuts_only
    warps = face_warps(options)

    cache = AnalysisCache(table.cache_root) if table.cache_root else None
    embeddings = needs_embeddings(options)

    def per_row(i: int) -> dict[str, Any]:
        video = table.videos[str(batch["video_key"][i])]
        source = table.sources.get(video.source_key)
        source_faces = source.faces if source is not None else None
        clock = _Clock()
        selected: list[list[Face]] = []
        parts: list[Patches] = []
        upright: list[np.ndarray] = []
        analysed: list[list[Face]] = []
        cache_key = table.analysis_keys.get(video.video_key) if cache is not None else None
        chunk_id = str(batch["chunk_id"][i])
        cached = cache.load(cache_key, chunk_id, frame_count(batch, i), embeddings) if cache_key else None
        chosen_faces = None
        if video.video_key in table.selections:
            chosen_faces = FaceStore(table.selections[video.video_key]).load("", chunk_id, frame_count(batch, i))
            if chosen_faces is None:
                raise ProcessingError(f"{video.uri}: chunk {chunk_id}: the tracked face selection is missing "
                                      f"from {table.selections[video.video_key]}; run the job again")

        if table.analyse_only and cached is not None:
            return {"faces": np.int64(sum(len(f) for f in cached)), "analysis_cache_hits": np.int64(1)}
        if chosen_faces is None and cached is not None:
            chosen_faces = [select_faces(f, options, reference=video.reference, distance=dist,
                                         source_faces=source_faces) for f in cached]
        if chosen_faces is not None:  # decided before decoding (tracked, or cached faces): only patches to cut
            patches = cut_chosen(task_of(batch, i), video, chosen_faces, warps, clock)
            return detector_columns(chosen_faces, patches, clock.seconds, hit=True)

        def analyse() -> None:
            faces = analyser.analyse(upright)
            analysed.extend(faces)
            if table.analyse_only:
                upright.clear()
                return
            chosen = [select_faces(f, options, reference=video.reference, distance=dist, source_faces=source_faces)
                      for f in faces]
            boxes = [patch_boxes(frame.shape, f, warps) for frame, f in zip(upright, chosen, strict=True)]
            parts.append(cut_patches(upright, boxes, first=len(selected)))
            selected.extend(chosen)
            upright.clear()

        for image, _ in clock.timed(decode_frames(task_of(batch, i))):
            upright.append(to_display(image, video.rotation))
            if len(upright) == size:
                analyse()
        if upright:
            analyse()
        if cache_key:
            cache.store(cache_key, chunk_id, analysed, embeddings)
        if table.analyse_only:
            return {"faces": np.int64(sum(len(f) for f in analysed)), "analysis_decode_s": clock.seconds}
        return detector_columns(selected, Patches.concat(parts), clock.seconds, hit=False)

    # the detector-only pass (`ffray analyse`, face tracking) is reported as its own stage, "analysis"
    stage = "analysis" if table.analyse_only else "detector"
    return run_stage(stage, batch, per_row, dict(getattr(analyser, "model_hashes", {}) or {}), table.job_id)


def cut_chosen(task, video: VideoJob, chosen: list[list[Face]], warps, clock: _Clock) -> Patches:
    """The patches of faces chosen before decoding: only their boxes are converted to BGR (the frames
    otherwise stay as decoded), and a chunk without a chosen face is not decoded at all."""
    from ffray.media.convert import regions_to_bgr
    from ffray.pipeline.datasource import decode_frames

    shape = upright_shape(video)
    boxes = [patch_boxes(shape, faces, warps) for faces in chosen]
    if not any(boxes):
        return Patches.empty()
    coded = (video.info.coded_height, video.info.coded_width)
    images: list[list[np.ndarray]] = [[] for _ in boxes]
    for j, (frame, _) in enumerate(clock.timed(decode_frames(task, raw=True))):
        if j < len(boxes) and boxes[j]:
            regions = regions_to_bgr(frame, [coded_box(b, video.rotation, coded) for b in boxes[j]])
            images[j] = [to_display(region, video.rotation) for region in regions]
    return patches_of_images(images, boxes)


def detector_columns(selected: list[list[Face]], patches: Patches, decode_s: float, hit: bool) -> dict[str, Any]:
    packed = pack_faces(selected)
    cols = {("face_frame" if k == "face_frame" else f"face_{k}"): v for k, v in packed.items()}
    cols["faces"] = np.int64(len(packed["face_frame"]))
    cols.update(patches.columns())
    cols["detector_decode_s"] = decode_s
    cols["detector_cache_hits"] = np.int64(hit)
    return cols


def _apply_to_patches(batch: dict[str, Any], i: int, table: JobTable, size: int, canvas: Canvas,
                      apply: Callable[[list[np.ndarray], list[list[Face]]], Any]) -> dict[str, Any]:
    """Run `apply(frames, faces)` (in place) on canvases holding the chunk's patches, frames in model
    batches of `size`, and return the new patch pixels."""
    video = table.videos[str(batch["video_key"][i])]
    patches = patches_of(batch, i)
    if not len(patches):
        return {}  # no selected face in the chunk: nothing to change
    faces = faces_of(batch, i, frame_count(batch, i))
    with_faces = [j for j, f in enumerate(faces) if f]
    pixels = np.empty_like(patches.pixels)
    shape = upright_shape(video)
    for idx in model_batches(len(with_faces), size):
        picked = [with_faces[k] for k in idx]
        buffers = canvas.load(shape, patches, picked)
        apply(buffers, [faces[j] for j in picked])
        canvas.store(buffers, patches, picked, pixels)
    changed = patches.with_pixels(pixels)
    return {"patch_pixels": pixels, "patch_changed": changed.changed}


class SourceCache:
    """Prepared source identities per source set, computed once per actor."""

    def __init__(self, swapper, table: JobTable, read_image: Callable[[str], np.ndarray]):
        self.swapper = swapper
        self.table = table
        self.read_image = read_image
        self.prepared: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key not in self.prepared:
            source = self.table.sources[key]
            images = [self.read_image(p) for p in source.paths]
            self.prepared[key] = self.swapper.prepare_source(images, list(source.faces))
        return self.prepared[key]


def swap_rows(batch: dict[str, Any], swapper, sources: SourceCache, table: JobTable,
              canvas: Canvas | None = None) -> dict[str, Any]:
    size = table.model_batch.get("swapper", 8)
    canvas = canvas or Canvas()

    def per_row(i: int) -> dict[str, Any]:
        video = table.videos[str(batch["video_key"][i])]
        source = sources.get(video.source_key)
        return _apply_to_patches(batch, i, table, size, canvas,
                                 lambda fr, fa: swapper.swap(fr, fa, source, inplace=True))

    return run_stage("swapper", batch, per_row, dict(getattr(swapper, "model_hashes", {}) or {}), table.job_id)


def enhance_rows(batch: dict[str, Any], enhancer, table: JobTable, canvas: Canvas | None = None) -> dict[str, Any]:
    size = table.model_batch.get("enhancer", 8)
    canvas = canvas or Canvas()

    def per_row(i: int) -> dict[str, Any]:
        return _apply_to_patches(batch, i, table, size, canvas,
                                 lambda fr, fa: enhancer.enhance(fr, fa, inplace=True))

    return run_stage("enhancer", batch, per_row, dict(getattr(enhancer, "model_hashes", {}) or {}), table.job_id)


def segment_path(segment_dir: str, chunk_index: int, chunk_id: str, ext: str) -> str:
    from ffray.pipeline.ledger import chunk_name
    from ffray.pipeline.storage import join

    return join(segment_dir, chunk_name(chunk_index, chunk_id) + ext)


RESULT_COLUMNS = (*KEY_COLUMNS, "error", "segment", "sha256", "size", "frames", "faces")


def write_rows(batch: dict[str, Any], table: JobTable, live=None) -> dict[str, Any]:
    """Segment writer: decode the chunk, paste its patches back, encode it to its deterministic segment
    path or URL (atomic) and keep only metadata. With `source_yuv` the decoded YUV frames are encoded as
    they are and only the pixels a face stage changed are converted and written into them. `live`
    (live.Reporter) hears the frames encoded so far, for per-frame progress."""
    from ffray.media.encode import SegmentWriter
    from ffray.media.io import split_uri
    from ffray.pipeline.datasource import decode_frames, task_of

    def per_row(i: int) -> dict[str, Any]:
        video = table.videos[str(batch["video_key"][i])]
        patches = patches_of(batch, i)
        offsets = patches.offsets()
        coded = (video.info.coded_height, video.info.coded_width)
        clock = _Clock()

        def coded_patches(j: int):
            for k in patches.of_frame(j):
                box = tuple(int(v) for v in patches.box[k])
                yield (to_coded(patches.image(k, offsets), video.rotation), coded_box(box, video.rotation, coded),
                       lambda k=k: to_coded(patches.changed_mask(k, offsets), video.rotation))

        dest = segment_path(video.segment_dir, int(batch["chunk_index"][i]), str(batch["chunk_id"][i]),
                            video.segment_ext)
        with SegmentWriter(dest, video.info, video.encode, source_yuv=video.source_yuv) as writer:
            for j, (frame, pts) in enumerate(clock.timed(decode_frames(task_of(batch, i), raw=video.source_yuv))):
                if not video.source_yuv:
                    for image, (x1, y1, x2, y2), _ in coded_patches(j):
                        frame[y1:y2, x1:x2] = image
                    writer.write(frame, pts)
                    if live is not None:
                        live.encoded(video.video_key, int(batch["chunk_index"][i]), j + 1)
                    continue
                pasted = list(coded_patches(j))
                if pasted:  # a copy: the decoder may still reference the frame's pixels
                    width, height = frame.width, frame.height
                    flat = frame.to_ndarray().reshape(-1)
                    for image, box, changed in pasted:
                        paste_bgr_into_yuv420(flat, width, height, box, image, changed(),
                                              int(frame.colorspace), int(frame.color_range))
                    frame = av.VideoFrame.from_ndarray(flat.reshape(height * 3 // 2, width), format="yuv420p")
                writer.write_frame(frame, pts)
                if live is not None:
                    live.encoded(video.video_key, int(batch["chunk_index"][i]), j + 1)
        seg = writer.result
        if seg.frames != frame_count(batch, i):
            raise RuntimeError(f"segment {dest}: wrote {seg.frames} of {frame_count(batch, i)} frames")
        fs, path = split_uri(dest)
        return {"segment": dest, "sha256": seg.sha256, "size": np.int64(fs.size(path)),
                "writer_decode_s": clock.seconds}

    out = run_stage("writer", batch, per_row, {}, table.job_id)
    n = row_count(batch)
    dropped = ("chunk_task", *Patches.COLUMNS)
    result: dict[str, Any] = {k: out[k] for k in out if k not in dropped
                              and not k.startswith("face_") and k != "face_frame"}
    result["frames"] = np.array([frame_count(batch, i) for i in range(n)], dtype=np.int64)
    for key in ("segment", "sha256"):
        result[key] = np.array([str(v) if v is not None else "" for v in out.get(key, [""] * n)], dtype=object)
    result["writer_out"] = np.array([row_nbytes(result, i) for i in range(n)], dtype=np.int64)
    return result
