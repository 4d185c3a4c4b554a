"""A float model's own codes (``ray-sbir embed --codes BITS``): how much of the float pipeline's quality two-stage
search keeps, on a trained checkpoint's held-out classes.

Queries (the held-out classes' sketches) and gallery (their photos) are embedded once, as ``ray-sbir evaluate``
does with the checkpoint's rendering (``--flip on``: with mirror averaging, as the presets). Then, through the
library's own stages (:func:`ray_sbir.search.build_index` with the kind's sign codes, the
:class:`~ray_sbir.search.Rescored` stage, query expansion and database-side augmentation as an index records
them), mAP@all of:

* the float pipeline: exact inner product (``first stage``), and with ``--dba-n`` / ``--qe-n`` (the preset's
  re-ranking; DBA's vectors are coded as the index writer codes them);
* codes: Hamming alone (N = 0) and two-stage for every N of ``--candidates``, at every ``--bits``, for each
  rotation seed of ``--seeds`` (mean and spread), with the same re-ranking on top.

Each row prints the ratio to the float pipeline with the same re-ranking.

    python bench/bench_sign_codes.py --checkpoint bench_out/runs_lite2/sketchy_lite2 \\
        --config configs/sketchy_lite2.yaml --data ../shared/data/sketchy-seen104 --json bench_out/codes.json
    python bench/bench_sign_codes.py --tiny
"""

from __future__ import annotations

import itertools
import os
import statistics
import time

from bench_expansion import add_checkpoint_args, embed_split, load_checkpoint
from common import REPO, bench_parser, environment, parse_args, write_result

from ray_sbir.data.plan import plan_dataset
from ray_sbir.eval.metrics import retrieval_metrics
from ray_sbir.search import EmbeddingKind, ExpansionSettings, QueryExpanded, augment_database, build_index


def mean_ap(split: dict, kind: EmbeddingKind, candidates: int, qe: ExpansionSettings, dba: ExpansionSettings) -> float:
    """mAP@all of one pipeline: ``kind``'s index (coded or not; ``candidates`` > 0 re-scored by the floats) over
    the gallery (DBA'd by that same index when ``dba`` is on), queries expanded when ``qe`` is on."""
    (q, ql), (g, gl) = split["sketch"], split["photo"]
    if dba.on:
        g = augment_database(build_index(kind, g, hamming_candidates=candidates), g, dba)
    index = build_index(kind, g, hamming_candidates=candidates)
    index = QueryExpanded(index, qe.n, qe.alpha) if qe.on else index
    return float(retrieval_metrics(q, ql, None, gl, index=index, ks=(100,), map_ks=(200,), recall_ks=(100,)).map_all)


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    add_checkpoint_args(p)
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--candidates", type=int, nargs="+", default=[0, 10, 25, 50, 100, 200],
                   help="rows re-scored by the floats (0: Hamming ranking alone)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the rotation")
    p.add_argument("--qe-n", type=int, default=20)
    p.add_argument("--dba-n", type=int, default=10)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--flip", choices=("off", "on"), default="on")
    p.add_argument("--threads", type=int, default=2)
    args = parse_args(p, tiny={"checkpoint": "untrained", "config": os.path.join(REPO, "configs", "tiny.yaml"),
                               "unseen": "random:2", "bits": [16], "candidates": [0, 5], "seeds": [0],
                               "qe_n": 2, "dba_n": 1})
    model, cfg = load_checkpoint(p, args, "bench_sign_codes")
    base = EmbeddingKind.of_model(model)
    if base.binary:
        p.error("a hashing model's checkpoint: its index holds codes of its own (bench_expansion measures them)")
    plan = plan_dataset(cfg)
    t0 = time.perf_counter()
    flip = args.flip == "on"
    split = embed_split(plan, plan.split.unseen, cfg, model, [flip])[flip]
    print(f"embedded {len(plan.split.unseen)} held-out classes ({len(split['sketch'][1])} sketches, "
          f"{len(split['photo'][1])} photos) in {time.perf_counter() - t0:.0f}s", flush=True)
    off = ExpansionSettings()
    rerankings = {"first stage": (off, off),
                  f"DBA {args.dba_n} + QE {args.qe_n}": (ExpansionSettings(args.qe_n, args.alpha),
                                                         ExpansionSettings(args.dba_n, args.alpha))}
    floats = {name: mean_ap(split, base, 0, qe, dba) for name, (qe, dba) in rerankings.items()}
    rows = []
    print("\n| re-ranking | index | bits | N re-scored | held-out mAP@all (mean over seeds) | spread | of float |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, (qe, dba) in rerankings.items():
        print(f"| {name} | float | - | - | {floats[name]:.4f} | | 1.000 |")
        for bits, n in itertools.product(args.bits, args.candidates):
            maps = [mean_ap(split, base.with_sign_codes(bits, seed, max(n, 1)), n, qe, dba) for seed in args.seeds]
            mean = statistics.fmean(maps)
            row = {"reranking": name, "bits": bits, "candidates": n, "maps": [round(m, 4) for m in maps],
                   "mean": round(mean, 4), "ratio": round(mean / floats[name], 4)}
            rows.append(row)
            print(f"| {name} | codes | {bits} | {n or 'Hamming alone'} | {mean:.4f} | "
                  f"{max(maps) - min(maps):.4f} | {row['ratio']:.3f} |", flush=True)
    write_result(args, {"checkpoint": args.checkpoint, "flip_average": flip, "float": floats, "codes": rows,
                        "environment": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
