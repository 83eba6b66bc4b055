"""Ray job entrypoint for a manifest of videos (CSV or JSONL, as `ffray batch`):

    ray job submit --working-dir . -- python jobs/swap_batch.py manifest.jsonl --work-dir /shared/ffray-work

Exit code 0 only if every row succeeded (the job then shows SUCCEEDED); failed rows are listed in the job
logs with their reason while the other rows complete.
A deterministic `--submission-id` (e.g. from the manifest's hash) makes an accidental double submission
fail instead of running twice (Ray refuses a known id); to resume after a failure, `ray job delete` that id
(or pick a new one) and submit again: the work dir's ledger skips every finished chunk.
"""

import sys

from ffray.cli import cluster_main

if __name__ == "__main__":
    sys.exit(cluster_main("batch", sys.argv[1:]))
