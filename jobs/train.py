"""Ray job: train the sketch/photo encoders with Ray Train.

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train.py --config configs/demo.yaml --set data.root=s3://bucket/doodles
"""

import sys

from ray_sbir.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
