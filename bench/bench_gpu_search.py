"""Exact float search against the memory bandwidth and a naive reference, in plain PyTorch (no Ray): one run.

For each gallery size and query batch it times, on the same device and tensors,

- ``ExactShard.search`` (``ray_sbir.search``) with each ``--shard`` setting: ``direct`` (the CUDA default: one
  product and a tie-repaired top-k per chunk) and ``filter`` (the CPU default: chunked scan, running top-k),
- the reference ``torch.topk(queries @ gallery.T, k)`` (one matmul, one top-k; ties not ordered),

checks that both return the same scores (and the same ids where the k-th score is not tied), and relates
each time to the device's measured copy bandwidth: a query batch reads the gallery once, so
``gallery bytes / time`` against the copy rate (``tensor.copy_``: read + write, so reads alone can go up
to twice that figure) says how close to memory-bound the scan runs. On a GPU the gallery is float16
(``ExactShard``'s default there), on a CPU float32.

    python bench/bench_gpu_search.py --n 1000000 10000000 --queries 1 16 256 1024 --k 100      # on a GPU
    python bench/bench_gpu_search.py --n 200000 --queries 1 16 --k 100 --device cpu             # anywhere
    python bench/bench_gpu_search.py --tiny     # seconds: 2048 items, on CUDA when there is one, else the CPU
"""

from __future__ import annotations

import json

import torch
from common import MiB, best_of, bench_parser, environment, parse_args, write_result

from ray_sbir.search import ExactShard


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Best of ``repeats`` after a warm-up call (kernels, buffers), each call synchronised."""
    return best_of(fn, repeats, warmup=True, sync=lambda: sync(device))


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int) -> float:
    """Bytes read + written per second by ``dst.copy_(src)``."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).uniform_()
    dst = torch.empty_like(src)
    t, _ = timed(lambda: dst.copy_(src), device, repeats)
    return 2 * nbytes / t


def main() -> None:
    p = bench_parser(__doc__, json_out=True, json_help="write the rows here too")
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, nargs="+", default=[1, 16, 256, 1024])
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shard", nargs="+", default=["direct:auto", "filter:auto"],
                   help="ExactShard settings to time, each strategy:chunk_rows (chunk 'auto' = the default)")
    p.add_argument("--copy-mib", type=int, default=None,
                   help="bytes copied to measure the copy bandwidth (default: 2048 MiB on CUDA, 256 MiB on a CPU)")
    args = parse_args(p, tiny={"n": [2048], "dim": 32, "queries": [1, 4], "k": 10, "repeats": 1, "copy_mib": 16})
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    copy_mib = args.copy_mib or (2048 if device.type == "cuda" else 256)
    bw = copy_bandwidth(device, copy_mib * MiB, args.repeats)
    print(json.dumps({"device": str(device), "copy_bandwidth_GBps": round(bw / 1e9, 1),
                      "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}), flush=True)
    rows = []
    torch.manual_seed(0)
    for n in args.n:
        # drawn on the device: 10M x 256 float32 is 10 GB, slow to draw on a CPU and to copy over
        gallery = torch.nn.functional.normalize(torch.randn(n, args.dim, device=device), dim=1).to(dtype)
        gallery_bytes = gallery.numel() * gallery.element_size()
        for q in args.queries:
            queries = torch.nn.functional.normalize(torch.randn(q, args.dim), dim=1)
            qd = queries.to(device, dtype)

            def reference():
                return torch.topk((qd @ gallery.T).float(), min(args.k, n), dim=1)

            t_ref, (s2, i2) = timed(reference, device, args.repeats)
            s2, i2 = s2.cpu(), i2.cpu()
            untied = (s2[:, -2] - s2[:, -1]).abs() > 1e-3
            for setting in args.shard:
                strategy, _, chunk = setting.partition(":")
                shard = ExactShard(gallery, device=device, dtype=dtype, strategy=strategy,
                                   chunk_size=None if chunk in ("", "auto") else int(chunk))
                t_shard, (s1, i1) = timed(lambda: shard.search(queries, args.k), device, args.repeats)
                s1, i1 = torch.as_tensor(s1).cpu(), torch.as_tensor(i1).cpu()
                row = {"n": n, "dim": args.dim, "queries": q, "k": args.k, "dtype": str(dtype).split(".")[-1],
                       "shard": setting, "exact_shard_ms": round(t_shard * 1e3, 3), "mm_topk_ms": round(t_ref * 1e3, 3),
                       "speedup_vs_mm_topk": round(t_ref / t_shard, 2),
                       "exact_shard_read_GBps": round(gallery_bytes / t_shard / 1e9, 1),
                       "fraction_of_copy_bandwidth": round(gallery_bytes / t_shard / bw, 3),
                       "same_scores": bool(torch.allclose(s1, s2, atol=1e-3)),
                       "same_ids_where_untied": bool(all(set(i1[r].tolist()) == set(i2[r].tolist())
                                                         for r in range(q) if untied[r]))}
                rows.append(row)
                print(json.dumps(row), flush=True)
                del shard
        del gallery
    write_result(args, {"env": environment(device=str(device)), "copy_bandwidth_Bps": bw, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
