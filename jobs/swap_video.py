"""Ray job entrypoint for one video:

    ray job submit --working-dir . -- python jobs/swap_video.py --source A.jpg --target in.mp4 --output out.mp4 \
        --work-dir /shared/ffray-work [any `ffray swap` option]

It joins the cluster the job runs on (`--address auto` unless given). Resubmitting the same command
resumes from the work dir's ledger. Paths must be reachable from every node (shared filesystem or URLs).
A deterministic `--submission-id` (e.g. from the manifest's hash) makes an accidental double submission
fail instead of running twice (Ray refuses a known id); to resume after a failure, `ray job delete` that id
(or pick a new one) and submit again: the work dir's ledger skips every finished chunk.
"""

import sys

from ffray.cli import cluster_main

if __name__ == "__main__":
    sys.exit(cluster_main("swap", sys.argv[1:]))
