"""Filtered search latency: one query restricted by a row mask at 0.1%, 1%, 10%, 50% and 100% selectivity against
the unfiltered scan, over a ``--rows`` x ``--dim`` float gallery (exact inner product, one thread as a serving
replica runs) and over its ``--bits``-bit sign codes (Hamming, the compiled kernel).

The filter is applied inside the scan (:mod:`ray_sbir.search.filters`): below 25% of the rows the float shard
scores the selected rows alone (gathered), above it scans every row with the others' scores at -inf; the Hamming
shard gathers the selected codes. The mask itself is what ``RowFilter.mask`` makes of a label filter over the
rows' ``label`` column (its time is reported too). Every filtered answer is checked against brute force over the
selected rows.

    python bench/bench_filtered.py --json bench_out/filtered.json      # 1M x 256
    python bench/bench_filtered.py --tiny
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pyarrow as pa
import torch
from common import bench_parser, environment, parse_args, write_result

from ray_sbir.search import EmbeddingKind, build_index
from ray_sbir.search.filters import RowFilter, column_kinds


def timed(fn, repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--bits", type=int, default=128)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--selectivities", type=float, nargs="+", default=[0.001, 0.01, 0.1, 0.5, 1.0])
    args = parse_args(p, tiny={"rows": 20_000, "dim": 32, "repeats": 2})
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    query = emb[rng.integers(args.rows)][None] + 0.05
    # 1000 labels; a filter on the first m of them selects m/1000 of the rows.
    labels = pa.array([f"class{i:04d}" for i in rng.integers(0, 1000, args.rows)]).dictionary_encode()
    columns, kinds = {"label": labels}, column_kinds({"label": labels.type})
    kinds_of = {"float": EmbeddingKind("float", args.dim),
                f"sign codes {args.bits} (Hamming)": EmbeddingKind("float", args.dim).with_sign_codes(args.bits)}
    rows = []
    print("| index | selectivity | rows kept | mask ms | filtered p50 ms | unfiltered p50 ms | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, kind in kinds_of.items():
        index = build_index(kind, emb, num_threads=1)
        plain = timed(lambda: index.search(query, args.k), args.repeats)
        for sel in args.selectivities:
            f = RowFilter.parse({"label": [f"class{i:04d}" for i in range(round(sel * 1000))]}, kinds)
            t = time.perf_counter()
            mask = f.mask(columns, args.rows)
            mask_ms = (time.perf_counter() - t) * 1e3
            filtered = timed(lambda: index.search(query, args.k, mask), args.repeats)
            _, got = index.search(query, args.k, mask)
            kept = np.flatnonzero(mask)
            if not kind.coded:  # exact: brute force over the kept rows
                s = emb[kept] @ query[0]
                want = kept[np.lexsort((kept, -s))[:args.k]]
                assert np.array_equal(got[0], want), f"{name} at {sel}: not the exact filtered top-k"
            assert mask[got[0]].all() and len(got[0]) == min(args.k, len(kept))
            row = {"index": name, "selectivity": sel, "kept": int(len(kept)), "mask_ms": round(mask_ms, 2),
                   "filtered_ms": round(filtered, 3), "unfiltered_ms": round(plain, 3),
                   "ratio": round(filtered / plain, 3)}
            rows.append(row)
            print(f"| {name} | {sel:.1%} | {len(kept):,} | {mask_ms:.1f} | {filtered:.2f} | {plain:.2f} | "
                  f"{row['ratio']:.2f} |", flush=True)
    write_result(args, {"rows": args.rows, "dim": args.dim, "k": args.k, "results": rows,
                        "environment": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
