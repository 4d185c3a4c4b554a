"""Ten million rows on one small machine: exact float search against a float model's own sign codes searched
two-stage (Hamming over the codes, the first N rows re-scored by the floats), in one process, one after another.

The gallery: ``--rows`` unit vectors of ``--dim`` dims clustered as embeddings of many classes are: ``--clusters``
centres drawn uniformly on the sphere, each row a centre plus isotropic Gaussian noise of the same norm (so a row's
cosine to its centre is about 0.71, two rows of one cluster about 0.5, of two clusters about 0), stored as float16
(5.1 GB at 10M x 256). Queries: ``--queries`` fresh draws of the same distribution. Ground truth: the exact top-100
by float32 inner product over the stored rows.

For every configuration: build time, resident memory of the process (VmRSS, and RssAnon: what a memory-mapped
file's pages do not count in) once it holds only that configuration, p50/p99 latency of 1 and of 16 queries per
call (``--repeats`` calls; one thread per process: ``--threads``), and recall@100 against the ground truth:

* float32 exact and float16 exact (:class:`~ray_sbir.search.exact.ExactShard`);
* sign codes of ``--bits`` bits with every N of ``--candidates`` re-scored by the float16 rows in memory, and at
  the first bits with the float16 rows memory-mapped from a ``.npy`` file (``--mmap``).

    python bench/bench_ten_million.py --json bench_out/ten_million.json
    python bench/bench_ten_million.py --tiny
"""

from __future__ import annotations

import gc
import os
import statistics
import time

import numpy as np
import torch
from common import bench_parser, environment, parse_args, tiny_workdir, write_result

from ray_sbir.search import EmbeddingKind, Rescored
from ray_sbir.search.exact import ExactShard
from ray_sbir.search.hamming import HammingScores, HammingShard

CHUNK = 1 << 18


def memory() -> dict:
    """The process's resident memory: VmRSS and RssAnon in GiB (Linux ``/proc/self/status``)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon"):
                out[key] = round(int(line.split()[1]) / 2**20, 2)
    return out


def clustered(rows: int, dim: int, clusters: int, draw_seed: int) -> np.ndarray:
    """``(rows, dim)`` float16 unit rows: a centre (the same ``clusters`` centres for every call) plus noise of
    the same norm each, drawn from ``draw_seed``."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(draw_seed)
    out = np.empty((rows, dim), np.float16)
    for a in range(0, rows, CHUNK):
        m = min(CHUNK, rows - a)
        x = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        out[a:a + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def ground_truth(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` rows by float32 inner product, chunk by chunk."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_r = np.zeros((len(queries), 0), np.int64)
    for a in range(0, len(gallery), CHUNK):
        s = queries @ np.asarray(gallery[a:a + CHUNK], np.float32).T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        best_r = np.concatenate([best_r, top + a], 1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_r, keep, 1)
    return best_r


def measure(name: str, index, queries: np.ndarray, truth: np.ndarray, repeats: int, built_s: float, **extra) -> dict:
    def lat(batch: int) -> tuple[float, float]:
        times = []
        index.search(queries[:batch], 100)  # warm
        for i in range(repeats):
            q = queries[(i * batch) % len(queries):][:batch]
            t = time.perf_counter()
            index.search(q, 100)
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times), float(np.percentile(times, 99))

    p50_1, p99_1 = lat(1)
    p50_16, p99_16 = lat(16)
    _, rows = index.search(queries, 100)
    recall = float(np.mean([len(set(r) & set(t)) / len(t) for r, t in zip(rows.tolist(), truth.tolist())]))
    row = {"index": name, **extra, "build_s": round(built_s, 1), **memory(), "p50_1_ms": round(p50_1, 2),
           "p99_1_ms": round(p99_1, 2), "p50_16_ms": round(p50_16, 2), "p99_16_ms": round(p99_16, 2),
           "recall@100": round(recall, 4)}
    print(f"| {name} | {extra.get('candidates', '-')} | {row['build_s']} | {row.get('VmRSS')} | "
          f"{row.get('RssAnon')} | {row['p50_1_ms']} | {row['p99_1_ms']} | {row['p50_16_ms']} | "
          f"{row['p99_16_ms']} | {row['recall@100']:.4f} |", flush=True)
    return row


def coded(gallery, kind: EmbeddingKind, threads: int) -> tuple[HammingScores, float]:
    t = time.perf_counter()
    codes = kind.codes(gallery)
    index = HammingScores(HammingShard(codes, kind.bits, num_threads=threads), gallery, encode=kind.codes)
    return index, time.perf_counter() - t


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--clusters", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--bits", type=int, nargs="+", default=[128, 256])
    p.add_argument("--candidates", type=int, nargs="+", default=[100, 500, 1000, 2000, 5000])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-exact", action="store_true", help="leave out the float32 and float16 exact scans")
    p.add_argument("--workdir", default="", help="where the memory-mapped float16 file goes (default: a temp dir)")
    args = parse_args(p, tiny={"rows": 50_000, "dim": 32, "clusters": 500, "queries": 16, "bits": [64],
                               "candidates": [100, 500], "repeats": 3})
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    gallery = clustered(args.rows, args.dim, args.clusters, 0)
    queries = np.asarray(clustered(args.queries, args.dim, args.clusters, 1), np.float32)  # new draws
    made = time.perf_counter() - t
    truth = ground_truth(gallery, queries, 100)
    print(f"{args.rows:,} x {args.dim} float16 rows in {args.clusters:,} clusters made in {made:.0f} s "
          f"({gallery.nbytes / 2**30:.2f} GiB); ground truth in {time.perf_counter() - t - made:.0f} s; {memory()}")
    print("\n| index | N re-scored | build s | VmRSS GiB | RssAnon GiB | p50 1 q ms | p99 1 q ms | p50 16 q ms | "
          "p99 16 q ms | recall@100 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    base = EmbeddingKind("float", args.dim)
    for bits in args.bits:
        index, built = coded(gallery, base.with_sign_codes(bits), args.threads)
        for n in args.candidates:
            rows.append(measure(f"codes {bits} + rescore (float16 in memory)", Rescored(index, n), queries, truth,
                                args.repeats, built, bits=bits, candidates=n))
        del index
        gc.collect()
    # The floats memory-mapped instead: only the rows a query re-scores are read.
    path = os.path.join(args.workdir or tiny_workdir("bench_ten_million"), "gallery_f16.npy")
    np.save(path, gallery)
    del gallery
    gc.collect()
    mapped = np.load(path, mmap_mode="r")
    index, built = coded(mapped, base.with_sign_codes(args.bits[0]), args.threads)
    for n in args.candidates:
        rows.append(measure(f"codes {args.bits[0]} + rescore (float16 mapped)", Rescored(index, n), queries, truth,
                            args.repeats, built, bits=args.bits[0], candidates=n))
    del index
    gc.collect()
    if not args.skip_exact:
        for dtype in ("float16", "float32"):
            t = time.perf_counter()
            exact = ExactShard(np.asarray(mapped, np.float16 if dtype == "float16" else np.float32), dtype=dtype,
                               num_threads=args.threads)
            rows.append(measure(f"exact {dtype}", exact, queries, truth, max(3, args.repeats // 4),
                                time.perf_counter() - t))
            del exact
            gc.collect()
    del mapped
    os.remove(path)
    write_result(args, {"rows": args.rows, "dim": args.dim, "clusters": args.clusters, "queries": args.queries,
                        "results": rows, "environment": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
