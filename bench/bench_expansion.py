"""Training-free re-ranking on a trained checkpoint: alpha query expansion (QE) and database-side augmentation
(DBA), through the library's own stages (:mod:`ray_sbir.search.expansion`, what ``ray-sbir evaluate`` and the
endpoint run), chosen on the validation classes and reported on the held-out ones.

For each setting of the grid (DBA n in ``--dba-n``, QE n in ``--qe-n``, alpha in ``--alphas``) the validation
classes' sketches search their photos; the best setting of each family (QE alone, DBA alone, DBA + QE) is picked
by validation mAP@all and only then measured on the held-out classes (never tuned on), beside no re-ranking.
The held-out gain of every grid setting is summarised too (how robust the choice is). ``--flip both`` (the
default) doubles the grid: every setting with and without mirror averaging of queries and gallery
(``search.flip_average``); ``--hamming-candidates 0 N ...`` ranks a binary model's codes by Hamming distance (0)
and two-stage (N > 0), each its own rows. Then the latency QE adds
per query: single queries over a synthetic ``--latency-rows`` x d float gallery, plain search vs the QE stage
(a second search plus the neighbours' vectors), one thread as a serving replica runs.

    python bench/bench_expansion.py --checkpoint bench_out/ckpt/base_seed0 --data ../shared/data/sketchy-seen104 \\
        --unseen configs/sketchy_dev_unseen.txt --json bench_out/expansion_seed0.json
    python bench/bench_expansion.py --tiny
"""

from __future__ import annotations

import itertools
import os
import statistics
import time

import numpy as np
import torch
from common import (REPO, bench_parser, decode_classes, ensure_doodles, environment, parse_args, tiny_workdir,
                    write_result)

from ray_sbir.config import load_config
from ray_sbir.data.decode import render_spec
from ray_sbir.data.images import to_model_input
from ray_sbir.data.plan import plan_dataset
from ray_sbir.eval.metrics import retrieval_metrics
from ray_sbir.models.inference import encode
from ray_sbir.search import EmbeddingKind, ExpansionSettings, QueryExpanded, Rescored, augment_database, build_index


@torch.no_grad()
def embed_split(plan, classes, cfg, model, flips, batch: int = 64) -> dict:
    """``{flip_average: {modality: (embeddings, labels)}}``, each image decoded once, encoded as the library's
    :func:`~ray_sbir.models.inference.encode` does (with and without the mirror average)."""
    out = {flip: {} for flip in flips}
    for modality in ("sketch", "photo"):
        images, labels = decode_classes(plan, classes, modality, render_spec(cfg, modality))
        for flip in flips:
            emb = [encode(model, to_model_input(torch.from_numpy(images[i:i + batch]), "cpu"), modality,
                          flip_average=flip).float() for i in range(0, len(images), batch)]
            out[flip][modality] = (torch.cat(emb).numpy(), labels)
    return out


def score(split: dict, kind: EmbeddingKind, qe: ExpansionSettings, dba: ExpansionSettings, cache: dict,
          candidates: int = 0) -> dict:
    """One setting on one split. ``candidates`` > 0 (a binary model): two-stage, each Hamming ranking's top
    ``candidates`` re-scored by the stored floats (:class:`~ray_sbir.search.Rescored`, as ``hamming_candidates``
    in evaluation and serving)."""
    (q, ql), (g, gl) = split["sketch"], split["photo"]
    if dba not in cache:
        cache[dba] = augment_database(build_index(kind, g), g, dba) if dba.on else g
    index = build_index(kind, cache[dba])
    index = Rescored(index, candidates) if candidates and kind.binary else index
    index = QueryExpanded(index, qe.n, qe.alpha) if qe.on else index
    m = retrieval_metrics(q, ql, None, gl, index=index, ks=(100,), map_ks=(200,), recall_ks=(100,))
    return {"map": round(float(m.map_all), 4), "p100": round(float(m.precision_at[100]), 4),
            "map200": round(float(m.map_at[200]), 4)}


def latency(rows: int, dim: int, n: int, alpha: float, repeats: int) -> dict:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((rows, dim), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    plain = build_index(EmbeddingKind("float", dim), g, num_threads=1)
    qe = QueryExpanded(plain, n, alpha)
    queries = g[rng.integers(0, rows, repeats)] + 0.1
    out = {}
    for name, index in (("plain", plain), ("query_expansion", qe)):
        index.search(queries[:1], 100)  # warm
        times = []
        for i in range(repeats):
            t = time.perf_counter()
            index.search(queries[i:i + 1], 100)
            times.append(time.perf_counter() - t)
        out[f"{name}_ms"] = round(statistics.median(times) * 1e3, 3)
    out["ratio"] = round(out["query_expansion_ms"] / out["plain_ms"], 2)
    return out


def add_checkpoint_args(p) -> None:
    """The options naming what is measured: a checkpoint (or ``untrained``), its config and the dataset."""
    p.add_argument("--checkpoint", help="checkpoint folder, or 'untrained' (the config's model, fresh head)")
    p.add_argument("--config", default=os.path.join(REPO, "configs", "sketchy.yaml"))
    p.add_argument("--data", help="dataset root (a Sketchy-layout folder; --tiny: generated doodles)")
    p.add_argument("--unseen", default=os.path.join(REPO, "configs", "sketchy_dev_unseen.txt"))
    p.add_argument("--seed", type=int, default=0, help="data.seed of an untrained model: which classes validate")


def load_checkpoint(p, args, name: str):
    """``(model, config)`` of :func:`add_checkpoint_args`' options (``--tiny``: generated doodles under the
    bench's work folder ``name``); a checkpoint's own ``data.seed`` decides its validation classes."""
    if args.tiny:
        args.data = args.data or ensure_doodles(os.path.join(tiny_workdir(name), "doodles"), classes=8, per_class=6,
                                                photo_size=32)
    if not (args.data and args.checkpoint):
        p.error("--data and --checkpoint are required (or --tiny)")
    torch.set_num_threads(args.threads)
    overrides = [f"data.root={args.data}", f"data.unseen={args.unseen}"]
    if args.checkpoint == "untrained":
        from ray_sbir.models import create_model

        torch.manual_seed(0)
        cfg = load_config(args.config, [*overrides, f"data.seed={args.seed}"])
        return create_model(cfg.model).eval(), cfg
    from ray_sbir.checkpoint import load_model

    model, meta = load_model(args.checkpoint)
    # Inputs rendered as the checkpoint was trained, as `ray-sbir evaluate` does: the config file's may be
    # another model's.
    return model, meta.apply_to(load_config(args.config, [*overrides, f"data.seed={meta.config.data.seed}"]))


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    add_checkpoint_args(p)
    p.add_argument("--qe-n", type=int, nargs="+", default=[1, 3, 5, 10, 20])
    p.add_argument("--dba-n", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--alphas", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--latency-rows", type=int, default=200_000)
    p.add_argument("--latency-repeats", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flip", choices=("off", "on", "both"), default="both",
                   help="mirror averaging (search.flip_average) of queries and gallery: off, on, or both in the grid")
    p.add_argument("--hamming-candidates", type=int, nargs="+", default=[0],
                   help="binary models: 0 ranks by Hamming distance; N > 0 is two-stage, the Hamming ranking's top "
                        "N re-scored by the stored floats (each value its own rows)")
    args = parse_args(p, tiny={"checkpoint": "untrained", "config": os.path.join(REPO, "configs", "tiny.yaml"),
                               "unseen": "random:2", "qe_n": [1, 3], "dba_n": [1], "alphas": [3.0],
                               "latency_rows": 2000, "latency_repeats": 3})
    model, cfg = load_checkpoint(p, args, "bench_expansion")
    kind = EmbeddingKind.of_model(model)
    plan = plan_dataset(cfg)
    t0 = time.perf_counter()
    flips = {"off": [False], "on": [True], "both": [False, True]}[args.flip]
    splits = {"val": embed_split(plan, plan.split.val, cfg, model, flips),
              "unseen": embed_split(plan, plan.split.unseen, cfg, model, flips)}
    print(f"embedded {len(plan.split.val)} validation and {len(plan.split.unseen)} held-out classes in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)

    off = ExpansionSettings()
    qes = [off] + [ExpansionSettings(n, a) for n, a in itertools.product(args.qe_n, args.alphas)]
    dbas = [off] + [ExpansionSettings(n, a) for n, a in itertools.product(args.dba_n, args.alphas)]
    caches = {(name, flip): {} for name in splits for flip in flips}
    candidates = sorted(set(args.hamming_candidates)) if kind.binary else [0]
    grid = []
    for cand, flip, dba, qe in itertools.product(candidates, flips, dbas, qes):
        row = {"candidates": cand, "flip": flip, "dba": dba.to_dict(), "qe": qe.to_dict(),
               **{name: score(split[flip], kind, qe, dba, caches[name, flip], cand)
                  for name, split in splits.items()}}
        grid.append(row)
    base = grid[0]
    families = {"none": lambda r: not r["dba"]["n"] and not r["qe"]["n"],
                "qe": lambda r: not r["dba"]["n"] and r["qe"]["n"],
                "dba": lambda r: r["dba"]["n"] and not r["qe"]["n"],
                "dba+qe": lambda r: r["dba"]["n"] and r["qe"]["n"]}
    families = {f"{f'two-stage {cand} + ' if cand else ''}{'mirror + ' if flip else ''}{name}":
                (lambda r, keep=keep, flip=flip, cand=cand: r["candidates"] == cand and r["flip"] == flip and keep(r))
                for cand in candidates for flip in flips for name, keep in families.items()}
    chosen = {name: max((r for r in grid if keep(r)), key=lambda r: r["val"]["map"]) for name, keep in families.items()}
    gains = [r["unseen"]["map"] - base["unseen"]["map"] for r in grid[1:]]
    qe_row = next(r for name, r in chosen.items() if name.endswith("qe") and "dba" not in name)
    lat = latency(args.latency_rows, int(kind.dim or splits["val"][flips[0]]["photo"][0].shape[1]),
                  qe_row["qe"]["n"] or 5, qe_row["qe"]["alpha"] or 3.0, args.latency_repeats)
    print("\n| re-ranking (chosen on validation) | DBA n, alpha | QE n, alpha | val mAP@all | held-out mAP@all | "
          "held-out mAP@200 | held-out P@100 | held-out gain |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, r in chosen.items():
        print(f"| {name} | {r['dba']['n']}, {r['dba']['alpha']:g} | {r['qe']['n']}, {r['qe']['alpha']:g} | "
              f"{r['val']['map']:.4f} | {r['unseen']['map']:.4f} | {r['unseen']['map200']:.4f} | "
              f"{r['unseen']['p100']:.4f} | {r['unseen']['map'] - base['unseen']['map']:+.4f} |")
    print(f"\nheld-out gain over the {len(gains)} grid settings: min {min(gains):+.4f}, median "
          f"{statistics.median(gains):+.4f}, max {max(gains):+.4f}; {sum(g > 0 for g in gains)} of {len(gains)} gain")
    print(f"latency per query over {args.latency_rows:,} rows (1 thread): plain {lat['plain_ms']} ms, with QE "
          f"{lat['query_expansion_ms']} ms ({lat['ratio']}x)")
    write_result(args, {"checkpoint": args.checkpoint, "config": args.config, "kind": kind.kind,
                        "hamming_candidates": args.hamming_candidates,
                        "chosen": chosen, "grid": grid, "latency": lat, "environment": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
