"""Ray job: index a QuickDraw dataset (one <class>.ndjson per category, simplified or raw) with the sketch encoder.

    RAY_AUTH_MODE=token ray job submit --working-dir . --runtime-env-json '{"env_vars": {"FSSPEC_GS_TOKEN": "anon"}}' \
        -- python jobs/index_quickdraw.py --prefix gs://quickdraw_dataset/full/simplified --checkpoint s3://bucket/runs/qd \
        --out s3://bucket/index/quickdraw --concurrency 40 --use-gpu --actors-per-gpu 5   # one 8-GPU node

Google's public bucket is read anonymously (FSSPEC_GS_TOKEN=anon in the job's environment reaches every worker;
gcsfs on every node: `bash scripts/install.sh --extras gcs`). Resumable: re-running with the same --out, inputs and
checkpoint skips the chunks already written; another checkpoint or other inputs rebuild the index.
"""

import sys

from ray_sbir.cli import main

if __name__ == "__main__":  # the same options as `ray-sbir index-quickdraw` (checked before Ray starts)
    sys.exit(main(["index-quickdraw", *sys.argv[1:]]))
