"""Line reading from S3 as the QuickDraw indexer and the catalog do it, on a local S3 server (moto, loopback).

A QuickDraw class file on S3 is ~20-150 MB. ``ray_sbir.distributed.index_quickdraw.read_chunk_lines`` and
``ray_sbir.data.quickdraw.read_ndjson`` read it with ``readline()`` / iteration on the s3fs file object, whose
``readline`` (fsspec ``AbstractBufferedFile.readuntil``) asks for a whole block (s3fs default: 50 MiB) per line
and copies it. This bench times, on one ``--mib`` MiB object built from a real QuickDraw sample file:

1. ``read_chunk_lines`` on one 8 MiB chunk (the indexer, as shipped);
2. ``read_ndjson`` from the start of the object (the catalog, as shipped);
3. the same chunk through ``io.BufferedReader(s3fs file, 1 MiB)`` with the block size set to the chunk (C-level
   readline, one ranged GET): the proposed fix;
4. the same chunk as one ``cat_file`` range + in-memory split: the other proposed fix.

Each of 1 and 2 stops after ``--seconds``. Needs ``moto_server`` (dev dependency).

    python bench/bench_s3_readline.py
    python bench/bench_s3_readline.py --tiny      # seconds: a 1 MiB object from tests/fixtures/quickdraw
"""

from __future__ import annotations

import io
import os
import sys
import time

from common import REPO, bench_parser, parse_args, start_moto, stop_process

SAMPLE = os.path.join(REPO, "..", "shared", "data", "quickdraw-sample", "cat.ndjson")
FIXTURE = os.path.join(REPO, "tests", "fixtures", "quickdraw", "cat.ndjson")  # 10 drawings, in the repository


def _count_lines(lines, seconds: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for _ in lines:
        n += 1
        if time.perf_counter() - t0 > seconds:
            break
    return n, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--mib", type=int, default=64, help="object size (a real class file is ~20-150 MB)")
    ap.add_argument("--seconds", type=float, default=15.0, help="time limit of each as-shipped reader")
    ap.add_argument("--sample", default=SAMPLE)
    ap.add_argument("--chunk-bytes", type=int, default=None, help="the indexer's chunk size (default: its own, 8 MiB)")
    args = parse_args(ap, argv, tiny={"mib": 1, "seconds": 1.0, "sample": FIXTURE, "chunk_bytes": 256 << 10})

    proc, _ = start_moto("bench", "bench")
    try:
        from ray_sbir import fs
        from ray_sbir.data.quickdraw import read_ndjson
        from ray_sbir.distributed.index_quickdraw import DEFAULT_CHUNK_BYTES, plan_chunks, read_chunk_lines

        s3, _ = fs.filesystem("s3://qdbench/x")
        s3.mkdir("qdbench")
        with open(args.sample, "rb") as f:
            body = f.read()
        s3.pipe("qdbench/qd/cat.ndjson", body * ((args.mib << 20) // len(body) + 1))
        size = s3.size("qdbench/qd/cat.ndjson")
        chunk_bytes = args.chunk_bytes or DEFAULT_CHUNK_BYTES
        chunks = plan_chunks("s3://qdbench/qd", chunk_bytes)
        if len(chunks) < 2:
            ap.error(f"--mib {args.mib} makes one chunk of --chunk-bytes {chunk_bytes}: the timed chunk must not be "
                     "the first (the readers start one byte before it)")
        c = chunks[min(3, len(chunks) - 1)]
        print(f"object {size / 2**20:.1f} MiB, {len(chunks)} chunks of {chunk_bytes / 2**20:g} MiB; "
              f"chunk {c.chunk_idx} timed", flush=True)

        n, dt = _count_lines(read_chunk_lines(c), args.seconds)
        print(f"read_chunk_lines (as shipped):   {n:6d} lines in {dt:5.1f} s = {n / dt:9.0f} lines/s", flush=True)
        n, dt = _count_lines(read_ndjson("s3://qdbench/qd/cat.ndjson"), args.seconds)
        print(f"read_ndjson (as shipped):        {n:6d} lines in {dt:5.1f} s = {n / dt:9.0f} lines/s", flush=True)

        t0 = time.perf_counter()
        n = 0
        with s3.open("qdbench/qd/cat.ndjson", "rb", block_size=c.end - c.start + (1 << 20)) as raw:
            f = io.BufferedReader(raw, buffer_size=1 << 20)
            f.seek(c.start - 1)
            pos = c.start - 1 + len(f.readline())
            while pos < c.end:
                line = f.readline()
                if not line:
                    break
                n += 1
                pos += len(line)
            requested = raw.cache.total_requested_bytes
        dt = time.perf_counter() - t0
        print(f"BufferedReader (fix):            {n:6d} lines in {dt:5.2f} s = {n / dt:9.0f} lines/s, "
              f"{requested / 2**20:.1f} MiB requested", flush=True)

        t0 = time.perf_counter()
        data = s3.cat_file("qdbench/qd/cat.ndjson", start=c.start - 1, end=min(size, c.end + (1 << 20)))
        buf = io.BytesIO(data)
        pos = c.start - 1 + len(buf.readline())
        n = 0
        while pos < c.end:
            line = buf.readline()
            if not line:
                break
            n += 1
            pos += len(line)
        dt = time.perf_counter() - t0
        print(f"one range GET + split (fix):     {n:6d} lines in {dt:5.2f} s = {n / dt:9.0f} lines/s", flush=True)
    finally:
        stop_process(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
