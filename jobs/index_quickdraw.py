"""Ray job: index a QuickDraw dataset (one <class>.ndjson per category, simplified or raw) with the sketch encoder.

    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/index_quickdraw.py \
        --prefix s3://quickdraw_dataset/full/simplified --checkpoint s3://bucket/runs/qd/checkpoint_epoch_0009 \
        --out s3://bucket/index/quickdraw --concurrency 40 --use-gpu --actors-per-gpu 5   # one 8-GPU node

Resumable: re-running with the same --out, inputs and checkpoint skips the chunks already written; another
checkpoint or other inputs rebuild the index.
"""

import argparse
import json
import sys

from ray_sbir.checkpoint import read_meta
from ray_sbir.data.decode import render_spec
from ray_sbir.distributed.embed import ModelSource
from ray_sbir.distributed.index_quickdraw import DEFAULT_CHUNK_BYTES, index_quickdraw
from ray_sbir.logs import setup_logging
from ray_sbir.distributed.runtime import init_ray


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", required=True, help="folder/prefix holding <class>.ndjson files")
    p.add_argument("--checkpoint", required=True, help="training checkpoint folder (local or s3://)")
    p.add_argument("--out", required=True, help="index folder to write (local or s3://)")
    p.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES)
    p.add_argument("--concurrency", type=int, default=1, help="encoder actors")
    p.add_argument("--actors-per-gpu", type=int, default=1,
                   help="with --use-gpu: actors sharing one GPU, each parsing on its own CPU (about 5 keep a "
                        "GPU busy)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-actor", type=float, default=1,
                   help="CPUs per encoder actor for parsing and rasterising (GPU actors: several, e.g. 4)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug lines and Ray's own messages")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    init_ray()
    spec = render_spec(read_meta(args.checkpoint).config, "sketch")
    res = index_quickdraw(args.prefix, ModelSource(args.checkpoint), args.out, size=spec.size,
                          line_width=spec.line_width, padding=spec.padding, chunk_bytes=args.chunk_bytes,
                          concurrency=args.concurrency, batch_size=args.batch_size, use_gpu=args.use_gpu,
                          cpus_per_actor=args.cpus_per_actor, actors_per_gpu=args.actors_per_gpu)
    print(json.dumps({"index": res.index_uri, "drawings": res.rows, "chunks": res.chunks,
                      "chunks_skipped": res.chunks_skipped, "malformed": len(res.failures),
                      "drawings_per_second": round(res.drawings_per_second, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
