"""`ffray analyse`: warm the template cache (analysis_cache.py) for a library of target videos ahead of
time, on the same Ray pipeline as a swap job with only its detector pool: every chunk is decoded and
analysed once and its faces stored; chunks already cached are skipped. Later `ffray swap` / `batch` jobs
on these targets, with any sources, run no detector model on them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ffray.errors import FfrayError
from ffray.faces.options import FaceOptions
from ffray.pipeline.config import FACE_STAGES, PipelineConfig
from ffray.pipeline.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class AnalyseResult:
    videos: int = 0
    chunks: int = 0
    cached_before: int = 0
    analysed: int = 0
    faces: int = 0
    failures: list[str] = field(default_factory=list)  # "TARGET: why", one per video or chunk


def run_analyse(targets: Sequence[str], options: FaceOptions, config: PipelineConfig, *,
                address: str | None = None, progress: Progress | None = None, quiet: bool = False,
                local_cpus: float | None = None, local_gpus: float | None = None,
                connect_timeout: float = 60.0) -> AnalyseResult:
    import ray

    from ffray.media import plan_chunks, probe
    from ffray.pipeline import preflight
    from ffray.pipeline.analysis_cache import AnalysisCache, analysis_key, needs_embeddings
    from ffray.pipeline.connect import connect_ray
    from ffray.pipeline.datasource import ChunkTask
    from ffray.pipeline.driver import (
        _Analysis,
        _configure_data_context,
        _execution_kwargs,
        _slim_info,
        analysis_model_hashes,
        build_dataset,
        result_rows,
    )
    from ffray.pipeline.stages import JobTable, VideoJob
    from ffray.pipeline.storage import work_root

    progress = progress or Progress(quiet=True)
    config.validate()
    options.check_pack_supports_filters()
    preflight.check_model_names(options)
    preflight.check_work_dir(config.work_dir)
    root = work_root(config.work_dir)
    analysis = _Analysis(options, config)
    analysis.analyser  # noqa: B018  (loads and verifies the analysis models here, before Ray)
    hashes = analysis_model_hashes(options, config)
    cache = AnalysisCache(root)
    embeddings = needs_embeddings(options)
    result = AnalyseResult()
    videos: dict[str, VideoJob] = {}
    tasks: list[ChunkTask] = []
    for target in targets:
        try:
            info = probe(target)
        except FfrayError as exc:
            result.failures.append(str(exc))
            continue
        key = analysis_key(info.content_hash, options, hashes)
        chunks = plan_chunks(info, config.chunk_frames)
        result.videos += 1
        result.chunks += len(chunks)
        todo = [c for c in chunks if cache.load(key, c.id, c.end - c.start, embeddings) is None]
        result.cached_before += len(chunks) - len(todo)
        if todo:
            videos[key] = VideoJob(key, target, info.rotation, "", info=_slim_info(info))
            tasks += [ChunkTask(key, target, c, info.coded_width * info.coded_height * 3) for c in todo]
            progress.add(key, target.rsplit("/", 1)[-1], sum(c.end - c.start for c in todo))
    if not tasks:
        return result
    table = JobTable(job_id="analyse", face_options=options.to_dict(), videos=videos, sources={},
                     model_batch={s: config.stage(s).model_batch_size for s in FACE_STAGES},
                     store_settings=config.store_settings(), cache_root=root,
                     analysis_keys={k: k for k in videos})
    progress.set_phase(f"starting Ray ({'connecting to ' + address if address else 'local'})")
    connect_ray(address, config, quiet=quiet, num_cpus=local_cpus, num_gpus=local_gpus, timeout_s=connect_timeout)
    try:
        resources = ray.cluster_resources()
        effective = config.resolved(float(resources.get("GPU", 0)), float(resources.get("CPU", 0)), ("detector",))
        table.execution = {s: _execution_kwargs(effective, s) for s in FACE_STAGES}
        _configure_data_context(effective, quiet)
        progress.set_phase("")
        ds = build_dataset(tasks, table, effective, with_enhancer=False, analyse_only=True)
        for row in result_rows(ds):
            if row["error"]:
                result.failures.append(str(row["error"]))
                continue
            result.analysed += 1
            result.faces += int(row["faces"])
            progress.advance(str(row["video_key"]), int(row["end"]) - int(row["start"]))
    finally:
        ray.shutdown()
        progress.close()
    return result
