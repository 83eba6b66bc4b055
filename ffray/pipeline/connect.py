"""Joining or starting Ray, with a bounded wait and one clear line when a cluster cannot be used.

`ray.init(address=...)` retries a dead or unauthorised GCS without limit (a warning every few seconds),
so the driver first asks the GCS itself, with one gRPC call that needs no credentials: no answer means
nothing is there, UNAUTHENTICATED means the cluster wants a token. ray.init then runs under the same
deadline (default 60 s, --connect-timeout)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ffray.errors import InputError
from ffray.pipeline.config import STAGES, PipelineConfig
from ffray.pipeline.ray_messages import quiet_ray_notices

DEFAULT_CONNECT_TIMEOUT_S = 60.0
_TOKEN_HELP = ("set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, a file holding it) to the cluster's token, which "
               "`ray get-auth-token` prints on its head node, then rerun")


def connect_ray(address: str | None, config: PipelineConfig, *, quiet: bool = False,
                num_cpus: float | None = None, num_gpus: float | None = None,
                temp_dir: str | None = None, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> bool:
    """Join or start Ray; True when this call started it (and the caller should shut it down).

    A local Ray gets at least as many logical CPUs as the pools' minimum sizes need: logical CPUs are
    counters, and too few deadlock the pipeline on small machines rather than fail. Joining a cluster
    that does not answer within `timeout_s`, or that needs a token we lack, is an InputError (exit 2)."""
    import ray

    if ray.is_initialized():
        return False
    quiet_ray_notices()
    common: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": logging.WARNING,
                              "configure_logging": True, "job_config": _job_config()}
    if address in (None, "", "local"):
        need = config.read_num_cpus + sum(config.stage(s).num_cpus * config.stage(s).min_actors for s in STAGES)
        cpus = num_cpus if num_cpus is not None else max(float(os.cpu_count() or 1), need + 1)
        kwargs = {"address": "local", "num_cpus": int(np.ceil(cpus)), "include_dashboard": False, **common}
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
        ray.init(**kwargs)
        return True
    deadline = time.monotonic() + timeout_s
    gcs = gcs_address(address)
    needs_token = check_gcs(gcs, address, deadline) if gcs is not None else False
    _init_within(address, common, deadline, timeout_s, needs_token)
    return True


def _job_config():
    """Workers import the ffray and actors packages this driver imported. Ray puts the driver's working
    directory first on every worker's sys.path; started from a folder that holds a folder named `ffray`
    (the parent of a checkout), that folder would be imported as a namespace package instead of an
    editable install, which lives outside sys.path. Naming the packages' real roots fixes that."""
    from ray.job_config import JobConfig

    import actors
    import ffray

    roots = dict.fromkeys(str(Path(m.__file__).resolve().parent.parent) for m in (ffray, actors))
    return JobConfig(_py_driver_sys_path=list(roots))


def gcs_address(address: str) -> str | None:
    """HOST:PORT of the GCS behind `address` ('auto' resolved from RAY_ADDRESS or this machine's running
    cluster); None for Ray Client (ray://) addresses, which have no GCS port to ask."""
    if address.startswith("ray://"):
        return None
    if "://" in address:
        raise InputError(f"--address {address}: give the cluster's GCS address HOST:PORT (port 6379 by default), "
                         "'auto', or ray://HOST:10001; http://HOST:8265 is the job submission address")
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die

        try:
            return canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as exc:
            if "multiple" in str(exc).lower():  # e.g. a killed driver's local cluster still winding down
                raise InputError(f"--address auto: {str(exc).splitlines()[0].split('. Please')[0]}; give "
                                 "--address HOST:PORT (or set RAY_ADDRESS)") from None
            raise InputError("--address auto: no running Ray cluster found on this machine or in RAY_ADDRESS; "
                             "start one with `ray start --head`, or give --address HOST:PORT") from None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address {address}: expected HOST:PORT, 'auto' or ray://HOST:PORT")
    return address


def ray_token() -> tuple[str | None, str]:
    """(token, where it came from): RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or the file
    `ray start` and a local ray.init() write (~/.ray/auth_token); Ray looks in the same places."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None, str(path)
    except OSError:
        return None, str(path)


def check_gcs(gcs: str, address: str, deadline: float) -> bool:
    """Ask the GCS for its cluster id (with our token, once it asks for one) until it answers or the
    deadline passes; True when it wants a token (ours was accepted)."""
    import grpc

    last, metadata = "", None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InputError(f"--address {address}: no Ray cluster answered at {gcs} ({last or 'no answer'}); "
                             "check the address and that `ray start --head` runs there "
                             "(--connect-timeout to wait longer)")
        with grpc.insecure_channel(gcs) as channel:
            call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId",
                                       request_serializer=lambda b: b, response_deserializer=lambda b: b)
            try:
                call(b"", timeout=min(5.0, remaining), metadata=metadata)
                return metadata is not None
            except grpc.RpcError as exc:
                code = exc.code()
                if code != grpc.StatusCode.UNAUTHENTICATED:
                    last = code.name.lower() if code else str(exc)
                elif metadata is None:
                    token, where = ray_token()
                    if token is None:
                        raise InputError(f"--address {address}: the Ray cluster at {gcs} requires token "
                                         f"authentication; {_TOKEN_HELP}") from None
                    metadata = (("authorization", f"Bearer {token}"),)
                    continue  # ask again at once, with the token
                else:
                    raise InputError(f"--address {address}: the Ray cluster at {gcs} does not accept the token "
                                     f"in {where}; {_TOKEN_HELP}") from None
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _init_within(address: str, common: dict, deadline: float, timeout_s: float, needs_token: bool) -> None:
    import ray

    outcome: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(address=address, **common)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    # a daemon thread: ray.init cannot be cancelled, and a hung one must not keep the process alive
    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise InputError(f"--address {address}: the Ray cluster did not accept this driver within {timeout_s:g} s "
                         "(--connect-timeout to wait longer)")
    exc = outcome.get("error")
    if exc is None:
        return
    text = str(exc)
    if needs_token or "auth" in text.lower() or "token" in text.lower():
        raise InputError(f"--address {address}: the Ray cluster refused this driver's token; {_TOKEN_HELP}") from None
    if isinstance(exc, (ConnectionError, TimeoutError, RuntimeError)):
        first = text.splitlines()[0] if text else type(exc).__name__
        raise InputError(f"--address {address}: cannot join the Ray cluster ({first})") from None
    raise exc
