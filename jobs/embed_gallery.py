"""Ray job: embed a gallery (photos or sketches) into a Parquet index with a checkpoint's encoder.

    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/embed_gallery.py \
        --config configs/demo.yaml --checkpoint s3://bucket/runs/demo --out s3://bucket/index
"""

import sys

from ray_sbir.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
