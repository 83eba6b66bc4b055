"""A worker node removed mid-job (a spot node reclaimed): Ray re-runs the lost work on the surviving node
and the output is bit-identical to an uninterrupted run."""

from __future__ import annotations

import threading
import time

import pytest
from pipeline_helpers import finished_chunk_records, small_config, wait_for_finished_chunks

from ffray.pipeline.driver import VideoRequest, run_swap

# Ray Data warns about its own deprecated DataContext fields whenever a context is copied to workers
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    temp = tmp_path_factory.mktemp("ray-cluster")
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 0, "object_store_memory": 300 * 2**20, "temp_dir": str(temp),
        "include_dashboard": False})
    workers = [c.add_node(num_cpus=2, num_gpus=2, object_store_memory=300 * 2**20) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def test_worker_node_removed_mid_job(cluster, tmp_path, fault_reference):
    import ray

    c, workers = cluster
    video, source, options, reference = fault_reference
    # GPU stages can only live on the two GPU workers; pools may grow so the survivor can take over
    config = small_config(tmp_path / "work", chunk_frames=16, gpus=(0.25, 0.5, 0.25))
    output = tmp_path / "node-loss.mp4"
    outcome = {}

    def job():
        try:
            outcome["result"] = run_swap([VideoRequest(str(video), str(output), (str(source),))], options, config)
        except BaseException as exc:  # surfaced below
            outcome["error"] = exc

    runner = threading.Thread(target=job)
    runner.start()
    try:
        wait_for_finished_chunks(tmp_path / "work", 1)
        victim = workers[1]
        c.remove_node(victim, allow_graceful=False)
        gpus_left = None
        for _ in range(100):  # the lost node drops out of the cluster's resources
            gpus_left = ray.cluster_resources().get("GPU", 0)
            if gpus_left <= 2:
                break
            time.sleep(0.5)
    finally:
        runner.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    (res,) = outcome["result"].videos
    assert res.status == "done", res.error
    assert gpus_left == 2
    assert output.read_bytes() == reference.read_bytes()
    assert len(finished_chunk_records(tmp_path / "work")) == res.chunks
    assert outcome["result"].report["totals"]["chunks_processed_this_run"] == res.chunks  # each chunk once
