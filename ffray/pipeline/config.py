"""Every knob of the distributed pipeline in one place: defaults < config file < command-line flags.

A config file (TOML, YAML or JSON) has two optional sections:

    [pipeline]               # PipelineConfig fields
    chunk_frames = 48
    work_dir = "/shared/ffray-work"
    [pipeline.swapper]       # StageConfig fields, per stage: detector, swapper, enhancer, writer
    max_actors = 4
    num_gpus = 0.5
    [face]                   # FaceOptions fields (ffray.faces.options)
    pack = "facefusion"
    face_swapper_model = "inswapper_128"
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ffray.cli.models import add_store_arguments
from ffray.errors import InputError

FACE_STAGES = ("detector", "swapper", "enhancer")
STAGES = (*FACE_STAGES, "writer")
# GPU share a face stage asks for when the cluster has GPUs and the user set none (swapping is the
# heaviest model: it gets the largest share).
AUTO_GPU_SHARE = {"detector": 0.25, "swapper": 0.5, "enhancer": 0.25, "writer": 0.0}


@dataclass(frozen=True)
class StageConfig:
    min_actors: int = 1
    max_actors: int | None = None  # None = auto: as many as the cluster can hold (see resolved())
    num_gpus: float | None = None  # None = auto: AUTO_GPU_SHARE when the cluster has GPUs, else 0
    num_cpus: float = 1.0
    batch_size: int = 1  # chunks per actor call (Ray batch size)
    model_batch_size: int = 8  # frames (detector) / frames with faces (swapper, enhancer) per model call

    def validate(self, name: str) -> None:
        if self.min_actors < 1 or (self.max_actors is not None and self.max_actors < self.min_actors):
            raise InputError(f"--{name}-actors: need 1 <= min <= max, got {self.min_actors}..{self.max_actors}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise InputError(f"--{name}-gpus: must be >= 0, got {self.num_gpus}")
        if self.num_gpus is not None and self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise InputError(f"--{name}-gpus: a share above 1 must be a whole number, got {self.num_gpus}")
        if self.num_cpus < 0:
            raise InputError(f"--{name}-cpus: must be >= 0, got {self.num_cpus}")
        if self.batch_size < 1 or self.model_batch_size < 1:
            raise InputError(f"--{name}-batch / --{name}-model-batch: must be >= 1")


def _default_writer() -> StageConfig:
    return StageConfig(num_gpus=0.0, num_cpus=1.0)


@dataclass(frozen=True)
class PipelineConfig:
    chunk_frames: int = 48  # frames per chunk: the unit of work, of checkpointing and of lost work on a crash
    detector: StageConfig = field(default_factory=StageConfig)
    swapper: StageConfig = field(default_factory=StageConfig)
    enhancer: StageConfig = field(default_factory=StageConfig)
    writer: StageConfig = field(default_factory=_default_writer)
    read_num_cpus: float = 1.0  # per decode task
    # ONNX Runtime providers in order of preference; () = auto: cuda then cpu in GPU stages, cpu elsewhere
    providers: tuple[str, ...] = ()
    intra_op_threads: int = 0  # ONNX Runtime CPU threads per actor, 0 = ORT default
    encoder: str | None = None  # None = the output container's default (EncodeOptions.for_output)
    quality: int = 80
    preset: str = "veryfast"
    # segments from the decoded YUV with only face pixels converted, where the source is 8-bit 4:2:0
    # (media.encode.keeps_source_yuv); False: every frame through BGR and out BT.709, as FaceFusion does
    source_yuv: bool = True
    work_dir: str = "ffray-work"  # segments + chunk records; on a cluster: a shared path or an fsspec URL (s3://...)
    model_cache_dir: str | None = None
    model_source: str | None = None
    commercial_only: bool = False  # refuse models whose licence forbids commercial use
    # > 0: each pool waits this long for its first actors before the next pool starts (Ray Data's
    # wait_for_min_actors_s), failing instead of waiting on a cluster that cannot place them; <= 0 (the
    # default): all pools start at once, their model loads overlap, and check_placeable has already
    # refused actors no node can hold
    wait_for_min_actors_s: float = -1
    overwrite: bool = False  # replace existing outputs this job did not write (never part of a video key)
    # seconds a chunk lease lasts unrenewed: how long a job waits for the chunks of a dead concurrent job
    # (ffray/pipeline/lease.py; never part of a video key)
    lease_ttl_s: float = 60.0
    # synthetic-media labels (ffray/label.py; never part of a video key): every output carries the
    # container tags; a JSON sidecar on request; a C2PA manifest when a certificate chain and key are given
    sidecar: bool = False
    # reuse a target's face analysis across jobs (ffray/pipeline/analysis_cache.py); never in a video key
    template_cache: bool = True
    sign_cert: str | None = None
    sign_key: str | None = None

    def store_settings(self) -> dict[str, Any]:
        """ModelStore keyword arguments: the driver and every actor resolve models the same way."""
        return {"cache_dir": self.model_cache_dir, "source": self.model_source,
                "commercial_only": self.commercial_only}

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)

    def validate(self) -> None:
        if self.chunk_frames < 1:
            raise InputError(f"--chunk-frames: must be >= 1, got {self.chunk_frames}")
        for name in STAGES:
            self.stage(name).validate(name)
        if self.read_num_cpus <= 0:
            raise InputError("read_num_cpus: must be > 0")
        if self.lease_ttl_s <= 0:
            raise InputError(f"lease_ttl_s: must be > 0, got {self.lease_ttl_s}")
        check_providers(self.providers, "--providers")
        from ffray.media.encode import NVENC_ENCODERS

        if self.encoder in NVENC_ENCODERS and not self.writer.num_gpus:
            raise InputError(f"--encoder {self.encoder}: NVENC runs on the GPU; give the writer pool a GPU share "
                             "(--writer-gpus 0.1, say) on nodes whose GPUs have NVENC (A100/H100 have none)")
        if bool(self.sign_cert) != bool(self.sign_key):
            raise InputError("--sign-cert and --sign-key go together: give both or neither")

    def resolved(self, cluster_gpus: float, cluster_cpus: float | None = None,
                 stages: tuple[str, ...] = STAGES) -> PipelineConfig:
        """The config with every auto value decided for a cluster with `cluster_gpus` GPUs and
        `cluster_cpus` CPUs, running `stages`.

        Auto GPU shares: AUTO_GPU_SHARE when the cluster has GPUs, else 0. Auto pool maximum: a GPU stage
        may grow to as many actors as there are sets of all GPU stages' shares in the cluster (4 GPUs and
        shares 0.25/0.5/0.25: 4 of each); a CPU stage to as many as there are sets of all CPU requests.
        Pools start at `min_actors` and Ray's autoscaler grows them while they are busy."""
        updates: dict[str, StageConfig] = {}
        for name in STAGES:
            st = self.stage(name)
            if st.num_gpus is None:
                st = replace(st, num_gpus=AUTO_GPU_SHARE[name] if cluster_gpus > 0 else 0.0)
            updates[name] = st
        used = [updates[n] for n in stages]
        gpu_set = sum(st.num_gpus or 0 for st in used)
        cpu_set = self.read_num_cpus + sum(st.num_cpus for st in used)
        for name in STAGES:
            st = updates[name]
            if st.max_actors is not None:
                continue
            if (st.num_gpus or 0) > 0 and gpu_set > 0:
                fits = int(cluster_gpus // gpu_set)
            elif cluster_cpus is not None and cpu_set > 0:
                fits = int(cluster_cpus // cpu_set)
            else:
                fits = st.min_actors
            updates[name] = replace(st, max_actors=max(st.min_actors, fits))
        return replace(self, **updates)

    def providers_for(self, stage: StageConfig) -> tuple[str, ...]:
        if self.providers:
            return self.providers
        return ("cuda", "cpu") if (stage.num_gpus or 0) > 0 else ("cpu",)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> PipelineConfig:
        """`where` (the config file) starts every error message."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{where}: unknown pipeline option(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in STAGES:
                base = getattr(cls(), key)
                stage_known = {f.name for f in fields(StageConfig)}
                bad = set(value) - stage_known
                if bad:
                    raise InputError(f"{where}: unknown option(s) for stage {key}: {', '.join(sorted(bad))}")
                values[key] = replace(base, **value)
            elif key == "providers":
                # one provider may be written as a string; tuple("cuda") would split it into letters
                if not isinstance(value, (str, list, tuple)):
                    raise InputError(f"{where}: providers: expected a list such as [\"cuda\", \"cpu\"], got {value!r}")
                values[key] = (value,) if isinstance(value, str) else tuple(value)
                check_providers(values[key], f"{where}: providers")
            else:
                values[key] = value
        return cls(**values)


def check_providers(providers: tuple[str, ...], where: str) -> None:
    """InputError for a provider ONNX Runtime sessions do not know (a config file is not checked by
    argparse's choices; found here, not as a traceback in every actor)."""
    from ffray.models.sessions import PROVIDER_NAMES

    for provider in providers:
        if provider not in PROVIDER_NAMES:
            raise InputError(f"{where}: unknown execution provider {provider!r} "
                             f"(choose from {', '.join(PROVIDER_NAMES)})")


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """{"pipeline": {...}, "face": {...}} from a TOML, YAML or JSON file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"{p}: cannot read config file ({exc.strerror or exc})") from exc
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise InputError(f"{p}: config file must end in .toml, .yaml, .yml or .json")
    except InputError:
        raise
    except Exception as exc:  # the parsers raise their own error types
        raise InputError(f"{p}: not a valid {suffix[1:]} config file ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{p}: config file must hold a table/mapping at the top level")
    unknown = set(data) - {"pipeline", "face"}
    if unknown:
        raise InputError(f"{p}: unknown section(s) {', '.join(sorted(unknown))} (expected pipeline, face)")
    return {"pipeline": data.get("pipeline") or {}, "face": data.get("face") or {}}


# --- command line ----------------------------------------------------------------------------------


def _actors(text: str) -> tuple[int, int]:
    try:
        if "-" in text or ":" in text:
            lo, hi = text.replace(":", "-").split("-", 1)
            return int(lo), int(hi)
        n = int(text)
        return n, n
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Stage and job flags. Every default is None so that only flags the user gave override the config."""
    g = parser.add_argument_group("pipeline options (override the config file)")
    g.add_argument("--config", metavar="FILE", help="TOML/YAML/JSON file with [pipeline] and [face] sections")
    g.add_argument("--work-dir", metavar="DIR|URL", help="finished segments and their records, kept per video "
                   "and reused by any later job with the same video and settings: a shared path or an fsspec "
                   "URL such as s3://bucket/prefix on a cluster; default ./ffray-work")
    g.add_argument("--chunk-frames", type=int, metavar="N", help="frames per chunk (default 48)")
    g.add_argument("--providers", nargs="+", choices=["tensorrt", "cuda", "cpu"],
                   help="ONNX Runtime providers in order (default: cuda,cpu in GPU stages, else cpu)")
    g.add_argument("--intra-op-threads", type=int, metavar="N")
    g.add_argument("--encoder", metavar="NAME", help="video encoder (default: the output container's)")
    g.add_argument("--quality", type=int, metavar="0-100")
    g.add_argument("--preset", metavar="NAME")
    g.add_argument("--read-cpus", type=float, dest="read_num_cpus", metavar="F")
    g.add_argument("--no-template-cache", action="store_false", dest="template_cache", default=None,
                   help="analyse the target again instead of reusing the faces an earlier job found in it "
                   "(kept in <work-dir>/analysis, shared by every job on the same target and analysis settings)")
    g.add_argument("--convert-whole-frames", action="store_false", dest="source_yuv", default=None,
                   help="convert every frame to BGR and back (BT.709 output, FaceFusion's way) instead of "
                   "converting only the face pixels of 8-bit 4:2:0 sources and keeping the rest as decoded")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing output that this job did not write (default: refuse it; an "
                   "output identical to what this job wrote before counts as already done)")
    add_store_arguments(g, short_names=False)
    lab = parser.add_argument_group("labels (every output is tagged as synthetic in its container)")
    lab.add_argument("--sidecar", action="store_true", default=None,
                     help="also write OUTPUT.ffray.json: job, target and sources, models and their sha256, options")
    lab.add_argument("--sign-cert", metavar="PEM", help="certificate chain (end-entity first, CA-issued) to sign "
                     "mp4/m4v/mov/avi outputs with a C2PA manifest; with --sign-key")
    lab.add_argument("--sign-key", metavar="PEM", help="private key of --sign-cert")
    for stage in STAGES:
        g.add_argument(f"--{stage}-actors", type=_actors, metavar="N|MIN-MAX", help=f"{stage} actor pool size")
        g.add_argument(f"--{stage}-gpus", type=float, metavar="F", help=f"GPU share per {stage} actor")
        g.add_argument(f"--{stage}-cpus", type=float, metavar="F", help=f"CPUs per {stage} actor")
        g.add_argument(f"--{stage}-batch", type=int, metavar="N", help=f"chunks per {stage} call")
        if stage != "writer":
            g.add_argument(f"--{stage}-model-batch", type=int, metavar="N",
                           help=f"frames/faces per {stage} model call")


def pipeline_config_from_args(args: argparse.Namespace, file_values: dict[str, Any] | None = None
                              ) -> PipelineConfig:
    cfg = PipelineConfig.from_dict(file_values or {}, where=getattr(args, "config", None) or "config")
    top = {}
    for name in ("work_dir", "chunk_frames", "intra_op_threads", "encoder", "quality", "preset",
                 "read_num_cpus", "source_yuv", "template_cache"):
        v = getattr(args, name, None)
        if v is not None:
            top[name] = v
    for flag, name in (("cache_dir", "model_cache_dir"), ("source", "model_source")):
        if getattr(args, flag, None) is not None:
            top[name] = getattr(args, flag)
    if getattr(args, "commercial_only", False):
        top["commercial_only"] = True
    if getattr(args, "overwrite", False):
        top["overwrite"] = True
    if getattr(args, "sidecar", False):
        top["sidecar"] = True
    for name in ("sign_cert", "sign_key"):
        if getattr(args, name, None):
            top[name] = getattr(args, name)
    if getattr(args, "providers", None):
        top["providers"] = tuple(args.providers)
    for stage in STAGES:
        st = cfg.stage(stage)
        upd: dict[str, Any] = {}
        actors = getattr(args, f"{stage}_actors", None)
        if actors is not None:
            upd["min_actors"], upd["max_actors"] = actors
        for flag, key in (("gpus", "num_gpus"), ("cpus", "num_cpus"), ("batch", "batch_size"),
                          ("model_batch", "model_batch_size")):
            v = getattr(args, f"{stage}_{flag}", None)
            if v is not None:
                upd[key] = v
        if upd:
            top[stage] = replace(st, **upd)
    cfg = replace(cfg, **top)
    cfg.validate()
    return cfg
