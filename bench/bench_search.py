"""Exact search throughput: ray_sbir.search vs FAISS IndexFlatIP vs the machine's sgemm rate (CPU).

    python bench/bench_search.py [--n 1000000 --d 256 --q 256 --k 100 --repeats 5]

One run, everything on the same random L2-normalised gallery and queries, measurements interleaved
(sgemm, ours, FAISS, one after the other, ``--repeats`` times after a warm-up) and medians reported, so a
noisy shared machine affects all of them alike. Prints:

* queries/s of ours (``ShardedIndex``, one shard, CPU, float32) and of FAISS ``IndexFlatIP``, and the ratio;
* the sgemm rate: ``torch.mm`` GFLOP/s on the same shapes (q x d times d x n, both operand orders, best of
  them), the rate of our chunked matmul alone, and our achieved ``2*q*n*d / time`` as a fraction of both;
* where our time goes in one search: its wall time, the same chunked matmul alone (the rest is the candidate
  filter and the merges), and torch's profiler's self CPU time per operator of one profiled search;
* agreement: fraction of identical ids ours vs FAISS, and ours vs a float64 reference on a query subset,
  with every mismatch checked to be a near-tie (float64 scores within ``--tie-tol``);
* memory per indexed item for float32 and float16 storage, with ids and labels;
* optionally (``--sweep``) throughput per chunk size, and the ``topk`` strategy / float16 storage.

Needs ``faiss-cpu`` (``pip install faiss-cpu``); ``--no-faiss`` skips it. ``--tiny``: a 4096-item gallery, every
section (sweep and extras included) once.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch
from common import (best_of, bench_parser, command_line, elapsed, environment, finish_environment, parse_args,
                    write_result)

from ray_sbir import search as S


def make_data(n: int, d: int, q: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    g = torch.empty(n, d)
    for start in range(0, n, 1 << 18):  # in slices: no temporaries of the whole gallery
        part = torch.randn(min(1 << 18, n - start), d, generator=gen)
        g[start:start + part.shape[0]] = torch.nn.functional.normalize(part, dim=1)
    qs = torch.nn.functional.normalize(torch.randn(q, d, generator=gen), dim=1)
    return g.numpy(), qs.numpy()


def chunked_matmul(gt: torch.Tensor, qtt: torch.Tensor, rows: int, buf: torch.Tensor) -> None:
    """The scan's products alone: ``gallery[chunk] @ queries.T`` per chunk of ``rows``, into one buffer."""
    for start in range(0, gt.shape[0], rows):
        m = min(rows, gt.shape[0] - start)
        torch.mm(gt[start:start + m], qtt, out=buf[:m])


def profile_search(g, q, k, chunk_size, strategy="filter", top_ops: int = 8, repeats: int = 3) -> dict:
    """Where a search's time goes, through the library's public names only: the wall time of an
    ``ExactShard.search``, of the same chunked matmul alone (chunks of ``ExactShard.chunk_rows``, as the scan
    runs them; best of ``repeats`` each), the rest (``selection``: candidate filter, merges, bookkeeping), and
    torch's profiler's self CPU seconds per operator of one more search (``aten::mm`` is the matmul; the
    profiler adds its own overhead)."""
    shard = S.ExactShard(g, device="cpu", chunk_size=chunk_size, strategy=strategy)
    shard.search(q, k)  # warm-up: scratch buffers
    total, _ = best_of(lambda: shard.search(q, k), repeats)
    rows = shard.chunk_rows(len(q))
    gt, qtt = torch.from_numpy(g), torch.from_numpy(q).t()
    buf = torch.empty(min(rows, len(g)), len(q))
    matmul, _ = best_of(lambda: chunked_matmul(gt, qtt, rows, buf), repeats)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        shard.search(q, k)
    ops = sorted(((e.key, e.self_cpu_time_total) for e in prof.key_averages()), key=lambda kv: -kv[1])
    return {"matmul": round(matmul, 4), "selection": round(max(0.0, total - matmul), 4), "total": round(total, 4),
            "profiler_self_s": {name: round(us / 1e6, 4) for name, us in ops[:top_ops]}}


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
    p = bench_parser(__doc__)
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
    args = parse_args(p, argv, tiny={"n": 4096, "d": 32, "q": 64, "k": 10, "repeats": 1, "ref_queries": 4,
                                     "sweep": "1024,2048", "extras": True})

    if args.threads:
        torch.set_num_threads(args.threads)
    n, d, nq, k = args.n, args.d, args.q, args.k
    flops = 2.0 * nq * n * d
    env = environment(threads=torch.get_num_threads(), OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE"))
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
        chunked_matmul(gt, qtt, chunk, cbuf)

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
                times[name].append(elapsed(fn))
            print(f"repeat {r}: " + ", ".join(f"{nm} {ts[-1]:.3f}s" for nm, ts in times.items()), flush=True)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    full_out.clear()

    res: dict = {"command": command_line(__file__, argv),
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
                chunked_matmul(gt, qtt, c, cb)

            for _ in range(max(1, args.repeats // 2 + 1)):
                ts_mm.append(elapsed(mm_c))
                ts_ours.append(elapsed(lambda idx_c=idx_c: idx_c.search(q, k)))
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
            ts = [elapsed(lambda idx_x=idx_x: idx_x.search(q, k)) for _ in range(2)]
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
                chunked_matmul(gt, qst, c, cb)

            index.search(qs, k)
            ts_ours, ts_mm = [], []
            for _ in range(3):
                ts_mm.append(elapsed(mm_small))
                ts_ours.append(elapsed(lambda qs=qs: index.search(qs, k)))
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
    finish_environment(env)

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
    write_result(args, res)
    return res


if __name__ == "__main__":
    main()
