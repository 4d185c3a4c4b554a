"""Benchmark: reading the doodle dataset from S3 (a loopback S3 server) vs local disk, through the same code.

The dataset (generated doodle photos ``photo/<class>/*.png`` + sketches ``sketch/<class>.ndjson``) is written to
local disk, then uploaded file by file with ``ray_sbir.fs.write_bytes`` to a bucket of a ``moto_server`` started
on 127.0.0.1 (configured the standard AWS way, as ``tests/conftest.py``'s ``s3_server`` fixture does:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``; the local Ray
cluster starts afterwards, so its workers inherit them). Then, for the local root and the ``s3://`` root in turn
(``--repeats`` times, alternating; medians):

- **read_bytes**: every photo and ndjson file read with ``ray_sbir.fs.read_bytes`` (what ``decode_one`` and the
  catalog use), one after another in the driver: files/s and MB/s;
- **read_bytes x T**: the same with ``--threads`` threads (what concurrent readers could get);
- **catalog**: ``build_catalog(root)``: listing, reading and parsing the ndjson files, listing the photos;
- **ray_data**: ``ray_sbir.distributed.datasets.decoded_dataset(photos, "photo", spec).materialize()``: Ray Data tasks
  reading and decoding every photo (the path training and embedding take): images/s and source MB/s.

Two diagnostic passes on S3 show what the reader could do instead of ``fs.read_bytes`` (``open`` + ``read``:
a HEAD for the size, then a ranged GET): s3fs's ``cat_file`` (one GET per file) and ``cat`` over a list of
``DECODE_BATCH`` paths (the GETs of a decode batch issued concurrently on s3fs's event loop). Note: moto is a Python server on the same 2 cores, so S3 numbers here
are bound by its per-request CPU cost, not by a network; they show the per-request overhead of the code path.

    python bench/bench_s3_read.py
    python bench/bench_s3_read.py --per-class 60 --repeats 5 --threads 8
    python bench/bench_s3_read.py --tiny        # seconds of measuring: 3 classes x 2 items, one repeat
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from common import (bench_parser, command_line, ensure_doodles, environment, finish_environment, parse_args,
                    start_moto, start_ray, stop_process, tiny_workdir, write_result)

from ray_sbir import fs
from ray_sbir.data.catalog import build_catalog
from ray_sbir.data.decode import RenderSpec
from ray_sbir.distributed.datasets import DECODE_BATCH


def dataset_files(root: str) -> list[str]:
    return fs.list_files(fs.join(root, "photo"), (".png",)) + fs.list_files(fs.join(root, "sketch"), (".ndjson",))


def fresh(root: str) -> None:
    """Forget s3fs's listing cache, as a Ray Data worker that never listed the bucket would have none."""
    fsys, _ = fs.filesystem(root)
    fsys.invalidate_cache()


def read_all(uris: list[str], threads: int = 1) -> int:
    if threads <= 1:
        return sum(len(fs.read_bytes(u)) for u in uris)
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(lambda u: len(fs.read_bytes(u)), uris))


def cat_all(uris: list[str]) -> int:
    total = 0
    for u in uris:
        fsys, path = fs.filesystem(u)
        total += len(fsys.cat_file(path))
    return total


def cat_batches(uris: list[str], batch: int) -> int:
    """What a batched reader could do: one fsspec ``cat`` per decode batch (s3fs runs the GETs concurrently)."""
    total = 0
    for start in range(0, len(uris), batch):
        part = uris[start:start + batch]
        fsys, _ = fs.filesystem(part[0])
        out = fsys.cat([fs.filesystem(u)[1] for u in part], on_error="raise")
        total += sum(len(v) for v in out.values())
    return total


SERVER: dict = {"proc": None}  # psutil handle of moto_server, for its CPU time
LAST_CPU: dict = {}


def timed(fn):
    """Wall time of ``fn()``; the CPU seconds of this process and of the S3 server go to ``LAST_CPU``."""
    srv = SERVER["proc"]
    s0 = sum(srv.cpu_times()[:2]) if srv else 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    LAST_CPU.update(client=time.process_time() - c0, server=(sum(srv.cpu_times()[:2]) - s0) if srv else 0.0)
    return wall, out


def main(argv=None) -> dict:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "ray-sbir-bench", "s3_read"))
    p.add_argument("--classes", type=int, default=36)
    p.add_argument("--per-class", type=int, default=30, help="photos and sketches per class")
    p.add_argument("--photo-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=64, help="decode size of the Ray Data pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=8, help="threads of the read_bytes x T pass (0: skip)")
    p.add_argument("--num-cpus", type=int, default=2, help="logical CPUs of the local Ray cluster")
    p.add_argument("--bucket", default="ray-sbir-bench")
    args = parse_args(p, argv, tiny={"out": None, "classes": 3, "per_class": 2, "photo_size": 32, "image_size": 32,
                                     "repeats": 1, "threads": 2})
    args.out = args.out or tiny_workdir("bench_s3_read")

    local = ensure_doodles(os.path.join(args.out, f"doodles_{args.classes}x{args.per_class}_{args.photo_size}"),
                           classes=args.classes, per_class=args.per_class, photo_size=args.photo_size)

    proc, endpoint = start_moto()
    import psutil
    import ray

    SERVER["proc"] = psutil.Process(proc.pid)

    try:
        remote = f"s3://{args.bucket}/doodles"
        s3, _ = fs.filesystem(remote)
        s3.mkdir(args.bucket)
        local_files = [f for f in fs.list_files(local) if not os.path.basename(f).startswith(".")]
        t0 = time.perf_counter()
        up_bytes = 0
        for f in local_files:
            data = fs.read_bytes(f)
            fs.write_bytes(fs.join(remote, os.path.relpath(f, local)), data)
            up_bytes += len(data)
        upload_s = time.perf_counter() - t0
        print(f"uploaded {len(local_files)} files, {up_bytes / 1e6:.1f} MB to {remote} ({endpoint}) in "
              f"{upload_s:.1f}s", flush=True)

        start_ray(args.num_cpus, 512)
        from ray_sbir.distributed.datasets import decoded_dataset  # noqa: PLC0415

        spec = RenderSpec(args.image_size)
        roots = {"local": local, "s3": remote}
        files = {k: dataset_files(r) for k, r in roots.items()}
        assert len(files["local"]) == len(files["s3"]), (len(files["local"]), len(files["s3"]))
        n_files = len(files["local"])
        env = environment(files=n_files, photos=sum(f.endswith(".png") for f in files["local"]), MB=up_bytes / 1e6,
                          threads=args.threads, num_cpus=args.num_cpus, image_size=args.image_size)
        print(f"{env}", flush=True)

        # Warm-up: page cache for local files, connection pool + server code paths for S3, Ray workers.
        for k, r in roots.items():
            read_all(files[k][:20])
            decoded_dataset(build_catalog(r).select(modality="photo"), "photo", spec).materialize()

        keys = ["read_bytes", *(["read_bytes_threads"] if args.threads > 1 else []), "catalog", "ray_data"]
        times = {m: {k: [] for k in roots} for m in keys}
        times["cat_file"] = {"s3": []}
        times["cat_batch"] = {"s3": []}
        nbytes, n_photos, n_items = {}, {}, {}
        cpu: dict = {m: {k: [] for k in d} for m, d in times.items()}

        def note(m, k, t):
            times[m][k].append(t)
            cpu[m][k].append(dict(LAST_CPU))
        for rep in range(args.repeats):
            for k, r in roots.items():
                fresh(r)
                t, nbytes[k] = timed(lambda k=k: read_all(files[k]))
                note("read_bytes", k, t)
                if args.threads > 1:
                    fresh(r)
                    t, _ = timed(lambda k=k: read_all(files[k], args.threads))
                    note("read_bytes_threads", k, t)
                fresh(r)
                t, cat = timed(lambda r=r: build_catalog(r))
                note("catalog", k, t)
                n_items[k] = len(cat)
                photos = cat.select(modality="photo")
                n_photos[k] = len(photos)
                t, ds = timed(lambda photos=photos: decoded_dataset(photos, "photo", spec).materialize())
                note("ray_data", k, t)
                assert ds.count() == n_photos[k]
                if k == "s3":
                    fresh(r)
                    t, _ = timed(lambda: cat_all(files["s3"]))
                    note("cat_file", "s3", t)
                    fresh(r)
                    t, _ = timed(lambda: cat_batches(files["s3"], DECODE_BATCH))
                    note("cat_batch", "s3", t)
            print(f"repeat {rep}: " + "; ".join(f"{m} " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in d.items())
                                                 for m, d in times.items()), flush=True)
        assert nbytes["local"] == nbytes["s3"], nbytes
        photo_bytes = sum(os.path.getsize(f) for f in files["local"] if f.endswith(".png"))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_process(proc)
    finish_environment(env)

    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in times.items()}
    rates = {}
    for m in ("read_bytes", "read_bytes_threads"):
        if m in med:
            rates[m] = {k: {"files_per_s": n_files / v, "MB_per_s": nbytes[k] / v / 1e6} for k, v in med[m].items()}
    for m in ("cat_file", "cat_batch"):
        rates[m] = {"s3": {"files_per_s": n_files / med[m]["s3"], "MB_per_s": nbytes["s3"] / med[m]["s3"] / 1e6}}
    rates["catalog"] = {k: {"items_per_s": n_items[k] / v, "s": v} for k, v in med["catalog"].items()}
    rates["ray_data"] = {k: {"images_per_s": n_photos[k] / v, "MB_per_s": photo_bytes / v / 1e6}
                         for k, v in med["ray_data"].items()}
    ratios = {m: med[m]["local"] / med[m]["s3"] for m in keys}
    ratios["cat_file (s3) vs read_bytes (s3)"] = med["read_bytes"]["s3"] / med["cat_file"]["s3"]
    ratios["cat_batch (s3) vs read_bytes (s3)"] = med["read_bytes"]["s3"] / med["cat_batch"]["s3"]
    # Where the time goes on S3: CPU ms per file of the S3 server and of this process (the reader; for ray_data
    # the reading happens in Ray workers, so only the server's share is meaningful).
    per_file = {m: {k: {w: 1000 * statistics.median(c[w] for c in cs) / (n_files if m not in ("ray_data",)
                                                                             else max(n_photos[k], 1))
                        for w in ("client", "server")} for k, cs in d.items() if k == "s3"}
                for m, d in cpu.items() if m != "catalog"}
    res_cpu = {m: d["s3"] for m, d in per_file.items() if "s3" in d}
    res = {"command": command_line(__file__, argv),
           "env": env, "upload_s": upload_s, "median_s": med, "all_s": times, "rates": rates, "s3_over_local": ratios,
           "s3_cpu_ms_per_file": res_cpu}

    print("\n=== results ===")
    print(f"{env}")
    for m, d in rates.items():
        print(f"{m}: " + "; ".join(f"{k} " + ", ".join(f"{a} {b:.1f}" for a, b in v.items()) for k, v in d.items()))
    for m, v in ratios.items():
        label = m if " vs " in m else f"s3 / local ({m})"
        print(f"{label} = {v:.3f}")
    wall_ms = {m: 1000 * med[m]["s3"] / (n_photos["s3"] if m == "ray_data" else n_files) for m in res_cpu}
    print("S3 passes, ms per file: " + "; ".join(
        f"{m}: wall {wall_ms[m]:.2f}, S3 server CPU {v['server']:.2f}"
        + (f", reader CPU {v['client']:.2f}" if m != "ray_data" else "") for m, v in res_cpu.items()))
    print(f"loadavg start {env['loadavg_start']} end {env['loadavg_end']}")
    write_result(args, res)
    return res


if __name__ == "__main__":
    main()
