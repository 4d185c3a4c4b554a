"""Ray job: zero-shot evaluation on the unseen classes (report.json, retrieval grid and PR curve PNGs).

    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/evaluate.py \
        --config configs/demo.yaml --checkpoint s3://bucket/runs/demo --out s3://bucket/eval
"""

import sys

from ray_sbir.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
