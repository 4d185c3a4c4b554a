"""Exact search throughput: ray_sbir.search vs FAISS IndexFlatIP vs the machine's sgemm rate (CPU).

    python bench/bench_search.py [--n 1000000 --d 256 --q 256 --k 100 --repeats 5]

One run, everything on the same random L2-normalised gallery and queries, measurements interleaved
(sgemm, ours, FAISS, one after the other, ``--repeats`` times after a warm-up) and medians reported, so a
noisy shared machine affects all of them alike. Prints:

* queries/s of ours (``ShardedIndex``, one shard, CPU, float32) and of FAISS ``IndexFlatIP``, and the ratio;
* the sgemm rate: ``torch.mm`` GFLOP/s on the same shapes (q x d times d x n, both operand orders, best of
  them), the rate of our chunked matmul alone, and our achieved ``2*q*n*d / time`` as a fraction of both;
* where our time goes (matmul / candidate filter / merge) in one profiled search;
* agreement: fraction of identical ids ours vs FAISS, and ours vs a float64 reference on a query subset,
  with every mismatch checked to be a near-tie (float64 scores within ``--tie-tol``);
* memory per indexed item for float32 and float16 storage, with ids and labels;
* optionally (``--sweep``) throughput per chunk size, and the ``topk`` strategy / float16 storage.

Needs ``faiss-cpu`` (``pip install faiss-cpu``); ``--no-faiss`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ray_sbir import search as S


def make_data(n: int, d: int, q: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    g = torch.empty(n, d)
    for start in range(0, n, 1 << 18):  # in slices: no temporaries of the whole gallery
        part = torch.randn(min(1 << 18, n - start), d, generator=gen)
        g[start:start + part.shape[0]] = torch.nn.functional.normalize(part, dim=1)
    qs = torch.nn.functional.normalize(torch.randn(q, d, generator=gen), dim=1)
    return g.numpy(), qs.numpy()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class ProfiledShard(S.ExactShard):
    """ExactShard that adds up the time spent in the matmul, the candidate filter and the merges."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.prof = {"matmul": 0.0, "filter": 0.0, "merge": 0.0}

    def _scores(self, *a):
        t0 = time.perf_counter()
        out = super()._scores(*a)
        self.prof["matmul"] += time.perf_counter() - t0
        return out

    def _candidates(self, *a):
        t0 = time.perf_counter()
        out = super()._candidates(*a)
        self.prof["filter"] += time.perf_counter() - t0
        return out


def profile_search(g, q, k, chunk_size, strategy="filter") -> dict:
    shard = ProfiledShard(g, device="cpu", chunk_size=chunk_size, strategy=strategy)
    shard.search(q, k)
    merge = S._merge_running

    def timed_merge(*a, **kw):
        t0 = time.perf_counter()
        out = merge(*a, **kw)
        shard.prof["merge"] += time.perf_counter() - t0
        return out

    S._merge_running = timed_merge
    try:
        shard.prof = dict.fromkeys(shard.prof, 0.0)
        total = timed(lambda: shard.search(q, k))
    finally:
        S._merge_running = merge
    prof = {key: round(v, 4) for key, v in shard.prof.items()}
    prof["other"] = round(total - sum(shard.prof.values()), 4)
    prof["total"] = round(total, 4)
    return prof


def reference_topk(g: np.ndarray, q: np.ndarray, k: int, block: int = 1 << 17) -> tuple[np.ndarray, np.ndarray]:
    """float64 top-k (ties by lower index), gallery in blocks."""
    q64 = q.astype(np.float64)
    best_s = np.full((len(q), 0), -np.inf)
    best_i = np.zeros((len(q), 0), np.int64)
    for start in range(0, len(g), block):
        s = q64 @ g[start:start + block].astype(np.float64).T
        idx = np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape)
        s = np.concatenate([best_s, s], 1)
        idx = np.concatenate([best_i, idx], 1)
        order = np.lexsort((idx, -s), axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(idx, order, 1)
    return best_s, best_i


def agreement(ids_a: np.ndarray, ids_b: np.ndarray, g: np.ndarray, q: np.ndarray, tol: float) -> dict:
    """Identical positions; for the others, whether the two items' float64 scores are within ``tol``."""
    same = ids_a == ids_b
    rows, cols = np.nonzero(~same)
    near = 0
    worst = 0.0
    for r, c in zip(rows, cols):
        qa = q[r].astype(np.float64)
        gap = abs(float(g[ids_a[r, c]].astype(np.float64) @ qa - g[ids_b[r, c]].astype(np.float64) @ qa))
        worst = max(worst, gap)
        near += gap <= tol
    return {"positions_identical": float(same.mean()), "queries_identical": float(same.all(axis=1).mean()),
            "mismatches": int((~same).sum()), "mismatches_near_ties": int(near), "max_mismatch_gap": worst,
            "same_sets": float(np.mean([set(a) == set(b) for a, b in zip(ids_a, ids_b)]))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--q", type=int, default=256)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunk-size", type=int, default=None, help="default: the library's CPU default")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-queries", type=int, default=16, help="queries checked against float64")
    p.add_argument("--tie-tol", type=float, default=2e-6, help="float64 score gap counted as a near-tie")
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--sweep", type=str, default="", help="comma-separated chunk sizes to time as well")
    p.add_argument("--extras", action="store_true", help="also time the topk strategy and float16 storage")
    p.add_argument("--json", type=str, default="", help="write the results here too")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    n, d, nq, k = args.n, args.d, args.q, args.k
    flops = 2.0 * nq * n * d
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
           platform.machine(), "cores": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
           "loadavg_start": os.getloadavg()}
    t0 = time.perf_counter()
    g, q = make_data(n, d, nq, args.seed)
    index = S.ShardedIndex(g, 1, device="cpu", chunk_size=args.chunk_size)
    chunk = index.shards[0].chunk_rows(nq)
    print(f"n={n} d={d} q={nq} k={k} chunk_size={chunk} repeats={args.repeats} {env}", flush=True)
    print(f"data: {time.perf_counter() - t0:.1f}s", flush=True)
    assert index.shards[0].embeddings.data_ptr() == torch.from_numpy(g).data_ptr()  # no copy
    gt, qt = torch.from_numpy(g), torch.from_numpy(q)
    full_out = {"q x n": torch.empty(nq, n), "n x q": torch.empty(n, nq)}  # 2 x q*n*4 bytes
    cbuf = torch.empty(chunk, nq)
    qtt = qt.t()

    def sgemm_qn():
        torch.mm(qt, gt.t(), out=full_out["q x n"])

    def sgemm_nq():
        torch.mm(gt, qtt, out=full_out["n x q"])

    def sgemm_chunked():  # our matmul alone: same chunks, same buffer, no selection
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            torch.mm(gt[start:start + m], qtt, out=cbuf[:m])

    faiss_index = None
    if not args.no_faiss:
        import faiss

        env["faiss"] = faiss.__version__
        if args.threads:
            faiss.omp_set_num_threads(args.threads)
        env["faiss_threads"] = faiss.omp_get_max_threads()
        faiss_index = faiss.IndexFlatIP(d)
        faiss_index.add(g)

    runs = {"sgemm q x n": sgemm_qn, "sgemm n x q": sgemm_nq, "sgemm chunked": sgemm_chunked,
            "ours": lambda: index.search(q, k)}
    if faiss_index is not None:
        runs["faiss"] = lambda: faiss_index.search(q, k)
    with torch.inference_mode():
        for name, fn in runs.items():  # warm-up
            fn()
        times = {name: [] for name in runs}
        for r in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
            print(f"repeat {r}: " + ", ".join(f"{nm} {ts[-1]:.3f}s" for nm, ts in times.items()), flush=True)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    full_out.clear()

    res: dict = {"command": "python bench/bench_search.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "n": n, "d": d, "q": nq, "k": k, "chunk_size": chunk, "repeats": args.repeats, "env": env,
                 "median_s": {a: round(b, 4) for a, b in med.items()},
                 "all_s": {a: [round(x, 4) for x in b] for a, b in times.items()}}
    sgemm_best = min(med["sgemm q x n"], med["sgemm n x q"])
    res["gflops"] = {"sgemm (best full mm)": flops / sgemm_best / 1e9,
                     "sgemm q x n": flops / med["sgemm q x n"] / 1e9,
                     "sgemm n x q": flops / med["sgemm n x q"] / 1e9,
                     "sgemm chunked": flops / med["sgemm chunked"] / 1e9, "ours": flops / med["ours"] / 1e9}
    res["qps"] = {"ours": nq / med["ours"]}
    res["ours_vs_sgemm"] = sgemm_best / med["ours"]
    res["ours_vs_chunked_sgemm"] = med["sgemm chunked"] / med["ours"]
    if faiss_index is not None:
        res["qps"]["faiss"] = nq / med["faiss"]
        res["gflops"]["faiss"] = flops / med["faiss"] / 1e9
        res["ours_vs_faiss"] = med["faiss"] / med["ours"]

    # Where the time goes (one profiled search, outside the interleaved loop).
    res["profile_s"] = profile_search(g, q, k, chunk)

    # Agreement.
    s_ours, i_ours = index.search(q, k)
    if faiss_index is not None:
        _, i_faiss = faiss_index.search(q, k)
        res["agreement_faiss"] = agreement(i_ours, i_faiss, g, q, args.tie_tol)
    nref = min(args.ref_queries, nq)
    if nref:
        ref_s, ref_i = reference_topk(g, q[:nref], k)
        res["agreement_float64"] = agreement(i_ours[:nref], ref_i, g, q[:nref], args.tie_tol)
        res["agreement_float64"]["max_score_error"] = float(np.abs(s_ours[:nref] - ref_s).max())

    if args.sweep:
        sweep = {}
        for c in [int(x) for x in args.sweep.split(",")]:
            idx_c = S.ShardedIndex(g, 1, device="cpu", chunk_size=c)
            idx_c.search(q, k)
            ts_ours, ts_mm = [], []
            cb = torch.empty(c, nq)

            def mm_c(c=c, cb=cb):
                for start in range(0, n, c):
                    m = min(c, n - start)
                    torch.mm(gt[start:start + m], qtt, out=cb[:m])

            for _ in range(max(1, args.repeats // 2 + 1)):
                ts_mm.append(timed(mm_c))
                ts_ours.append(timed(lambda idx_c=idx_c: idx_c.search(q, k)))
            sweep[c] = {"qps": nq / statistics.median(ts_ours),
                        "ours_vs_chunked_sgemm": statistics.median(ts_mm) / statistics.median(ts_ours),
                        "chunked_sgemm_gflops": flops / statistics.median(ts_mm) / 1e9}
            print(f"chunk {c}: {sweep[c]}", flush=True)
        res["chunk_sweep"] = sweep

    if args.extras:
        extra = {}
        for name, kw in (("topk strategy", {"strategy": "topk"}), ("float16 storage", {"dtype": "float16"})):
            idx_x = S.ShardedIndex(g, 1, device="cpu", chunk_size=args.chunk_size, **kw)
            idx_x.search(q, k)
            ts = [timed(lambda idx_x=idx_x: idx_x.search(q, k)) for _ in range(2)]
            same = float((idx_x.search(q, k)[1] == i_ours).mean())
            extra[name] = {"qps": nq / statistics.median(ts), "ids_identical_to_fp32": same}
            if name == "topk strategy":
                extra[name]["profile_s"] = profile_search(g, q, k, chunk, strategy="topk")
            print(f"{name}: {extra[name]}", flush=True)
            del idx_x
        for small in (1, 16, 64):  # small query batches (what a Serve replica sees), automatic chunk
            qs = q[:small]
            qst = torch.from_numpy(qs).t()
            c = index.shards[0].chunk_rows(small)
            cb = torch.empty(c, small)

            def mm_small(c=c, cb=cb, qst=qst):
                for start in range(0, n, c):
                    m = min(c, n - start)
                    torch.mm(gt[start:start + m], qst, out=cb[:m])

            index.search(qs, k)
            ts_ours, ts_mm = [], []
            for _ in range(3):
                ts_mm.append(timed(mm_small))
                ts_ours.append(timed(lambda qs=qs: index.search(qs, k)))
            extra[f"q={small}"] = {"chunk": c, "qps": small / statistics.median(ts_ours),
                                   "latency_s": statistics.median(ts_ours),
                                   "ours_vs_chunked_sgemm": statistics.median(ts_mm) / statistics.median(ts_ours)}
            print(f"q={small}: {extra[f'q={small}']}", flush=True)
        res["extras"] = extra

    # Memory per indexed item (embeddings + ids + labels), float32 and float16 storage.
    ids = [f"photo/{i:07d}" for i in range(n)]
    labels = [f"class_{i % 100:03d}" for i in range(n)]
    mem = {}
    for dt in ("float32", "float16"):
        m_idx = S.ShardedIndex(g, 1, device="cpu", dtype=dt, ids=ids, labels=labels)
        mem[dt] = {key: (round(v / n, 2) if key != "per_item" else round(v, 2))
                   for key, v in m_idx.memory_bytes().items()}
        del m_idx
    res["bytes_per_item"] = mem
    env["loadavg_end"] = os.getloadavg()

    print("\n=== results ===")
    print(f"median seconds: {res['median_s']}")
    print("GFLOP/s: " + ", ".join(f"{a} {b:.1f}" for a, b in res["gflops"].items()))
    print("queries/s: " + ", ".join(f"{a} {b:.1f}" for a, b in res["qps"].items()))
    if "ours_vs_faiss" in res:
        print(f"ours / FAISS throughput: {res['ours_vs_faiss']:.2f}x  (target >= 2.5x)")
    print(f"ours / sgemm rate: {res['ours_vs_sgemm']:.1%} of the best full torch.mm  (target >= 70%); "
          f"{res['ours_vs_chunked_sgemm']:.1%} of our chunked matmul alone")
    print(f"profile of one search (s): {res['profile_s']}")
    for key in ("agreement_faiss", "agreement_float64"):
        if key in res:
            print(f"{key}: {res[key]}")
    print(f"bytes per item: {mem}")
    print(f"loadavg start {env['loadavg_start']} end {env['loadavg_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
    return res


if __name__ == "__main__":
    main()
