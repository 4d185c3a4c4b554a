"""Exact Hamming search (``ray_sbir.search.hamming``) against FAISS ``IndexBinaryFlat`` on the same codes, in one run.

For each gallery size, code length and query batch: both answer the same top-k; the distances must be
identical, and the ids too wherever the k-th distance is not tied (FAISS does not promise an order among equal
distances; ours is lower row first). Prints queries/s of each, their ratio, and memory per item, plus the
footprint of a 50M-drawing gallery for each storage option. No Ray, no GPU needed (``--device cuda`` times
the torch path on a GPU; FAISS stays on the CPU there).

    python bench/bench_hamming.py --n 1000000 --bits 64 128 --queries 1 16 256 --k 100 --threads 2
    python bench/bench_hamming.py --tiny       # seconds: 5000 codes
"""

from __future__ import annotations

import json

import numpy as np
import torch
from common import best_of, bench_parser, environment, parse_args, write_result

from ray_sbir.search.hamming import HammingShard, code_words


def same_answers(ours, theirs) -> bool:
    (d1, r1), (d2, r2) = ours, theirs
    if not np.array_equal(d1, d2.astype(np.int32)):
        return False
    for i in range(len(d1)):
        kth = d1[i, -1]
        inner = d1[i] < kth  # rows strictly inside the k-th distance: the same set in both
        if set(r1[i][inner]) != set(r2[i][d2[i] < kth]):
            return False
    return True


def footprint(n: int = 50_000_000) -> list[dict]:
    gib = 1024**3
    rows = [("float32, 256-d (exact float search)", 256 * 4), ("float16, 256-d", 256 * 2)]
    rows += [(f"{b}-bit codes (Hamming)", b // 8) for b in (64, 128)]
    # what a binary index stores for two-stage search: the codes and their float32 relaxation (K floats)
    rows += [("64-bit codes + their 64-d float32 relaxation (two-stage re-scoring)", 8 + 64 * 4)]
    return [{"storage": name, "bytes_per_item": b, "GiB_for_50M": round(n * b / gib, 1)} for name, b in rows]


def main() -> None:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128])
    p.add_argument("--queries", type=int, nargs="+", default=[1, 16, 256])
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = parse_args(p, tiny={"n": 5000, "bits": [64, 128], "queries": [1, 16], "k": 10, "repeats": 1})
    try:
        import faiss
    except ImportError:  # e.g. a GPU machine without it: time ours alone
        faiss = None

    torch.set_num_threads(args.threads)
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    results = []
    for bits in args.bits:
        words = code_words(bits)
        codes = rng.integers(0, 2**63, size=(args.n, words), dtype=np.uint64, endpoint=True)
        if bits % 64:
            codes[:, -1] &= np.uint64((1 << (bits % 64)) - 1)
        ours = HammingShard(codes, bits, device=args.device)
        index = None
        if faiss is not None:
            index = faiss.IndexBinaryFlat(words * 64)
            index.add(codes.view(np.uint8))
        for q in args.queries:
            queries = codes[rng.integers(0, args.n, q)] ^ np.uint64(0b1011)  # near a gallery item, not on it
            t_ours, a = best_of(lambda: ours.search(queries, args.k), args.repeats)
            row = {"n": args.n, "bits": bits, "queries": q, "k": args.k, "device": args.device,
                   "ours_qps": round(q / t_ours, 1), "ours_ms": round(t_ours * 1e3, 2),
                   "bytes_per_item": ours.memory_bytes() / args.n}
            if index is not None:
                t_faiss, b = best_of(lambda: index.search(queries.view(np.uint8), args.k), args.repeats)
                row.update(faiss_qps=round(q / t_faiss, 1), faiss_ms=round(t_faiss * 1e3, 2),
                           ratio_ours_over_faiss=round(t_faiss / t_ours, 2), same_answers=same_answers(a, b))
            results.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"footprint_50M": footprint()}, indent=1))
    write_result(args, {"env": environment(threads=args.threads, faiss=getattr(faiss, "__version__", None)),
                        "runs": results, "footprint_50M": footprint()}, indent=1)


if __name__ == "__main__":
    main()
