"""Binary codes of a trained *float* model, beside the float ranking: how much of its mAP Hamming search keeps, and
how much two-stage search (Hamming candidates re-scored by the float rows) recovers.

The codes are the signs of a random rotation of the float embedding (SimHash, Charikar STOC 2002: for unit
vectors the expected Hamming distance of sign(R x) is proportional to the angle between them, so Hamming
ranking approximates cosine ranking, better with more bits); at ``bits = D`` the rotation is left out and the
code is the sign of the embedding itself. Nothing is trained. Two-stage is the library's own stage
(:class:`ray_sbir.search.Rescored`) over a Hamming index (:func:`ray_sbir.search.build_index`) whose
``vectors`` are the float rows: what ``hamming_candidates`` runs for a binary index, with the float model's
vectors as the stored floats instead of a hash model's relaxation. Every (bits, candidates) setting is measured
on the held-out classes and on the validation classes (to choose on), with the bytes each item needs in memory.

    python bench/bench_hash_codes.py --checkpoint bench_out/runs_s16/sketchy/checkpoint_epoch_0011 \\
        --data ../shared/data/sketchy-seen104 --unseen configs/sketchy_dev_unseen.txt
    python bench/bench_hash_codes.py --tiny
"""

from __future__ import annotations

import os

import numpy as np
from bench_expansion import add_checkpoint_args, embed_split, load_checkpoint
from common import REPO, bench_parser, environment, parse_args, write_result

from ray_sbir.data.plan import plan_dataset
from ray_sbir.eval.metrics import retrieval_metrics
from ray_sbir.search import EmbeddingKind, Rescored, build_index


class ProjectedCodes:
    """A Hamming index over ``sign(x @ rotation)`` that answers ``vectors`` with the float rows: queries are
    rotated the same way before the Hamming search, so :class:`Rescored` over it scores the raw floats."""

    def __init__(self, floats: np.ndarray, rotation: np.ndarray | None):
        self.floats, self.rotation = floats, rotation
        bits = floats.shape[1] if rotation is None else rotation.shape[1]
        self.hamming = build_index(EmbeddingKind("binary", bits, False), self._rotate(floats))

    def _rotate(self, x: np.ndarray) -> np.ndarray:
        return x if self.rotation is None else np.asarray(x, np.float32) @ self.rotation

    def __len__(self) -> int:
        return len(self.floats)

    def search(self, queries, k: int):
        return self.hamming.search(self._rotate(queries), k)

    def vectors(self, rows) -> np.ndarray:
        return self.floats[np.asarray(rows)]


def rotation(dim: int, bits: int, seed: int) -> np.ndarray | None:
    if bits == dim:
        return None
    if bits > dim:
        raise ValueError(f"{bits} bits from a {dim}-d embedding: at most {dim}")
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q[:, :bits].astype(np.float32)


def map_all(index, split) -> float:
    (q, ql), (_, gl) = split["sketch"], split["photo"]
    return round(float(retrieval_metrics(q, ql, None, gl, index=index, ks=(100,), map_ks=(200,),
                                         recall_ks=(100,)).map_all), 4)


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    add_checkpoint_args(p)  # --checkpoint: a float model's
    p.add_argument("--bits", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--candidates", type=int, nargs="+", default=[0, 50, 100, 200],
                   help="0: Hamming ranking alone; N: two-stage, the top N re-scored by the floats")
    p.add_argument("--rotation-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = parse_args(p, tiny={"checkpoint": "untrained", "config": os.path.join(REPO, "configs", "tiny.yaml"),
                               "unseen": "random:2", "bits": [16, 32], "candidates": [0, 4]})
    model, cfg = load_checkpoint(p, args, "bench_hash_codes")
    if EmbeddingKind.of_model(model).binary:
        p.error("--checkpoint must be a float model (a hash model's codes: bench/bench_expansion.py)")
    plan = plan_dataset(cfg)
    splits = {name: embed_split(plan, classes, cfg, model, [False])[False]
              for name, classes in (("val", plan.split.val), ("unseen", plan.split.unseen))}
    dim = splits["val"]["photo"][0].shape[1]
    floats = {name: build_index(EmbeddingKind("float", dim, True), s["photo"][0]) for name, s in splits.items()}
    ref = {name: map_all(floats[name], s) for name, s in splits.items()}
    rows = [{"bits": None, "candidates": None, "bytes_per_item": 4 * dim, **ref}]
    for bits in args.bits:
        rot = rotation(dim, bits, args.rotation_seed)
        for cand in args.candidates:
            res = {}
            for name, s in splits.items():
                index = ProjectedCodes(s["photo"][0], rot)
                res[name] = map_all(Rescored(index, cand) if cand else index, s)
            # in memory: the packed code, plus the float row where candidates are re-scored
            rows.append({"bits": bits, "candidates": cand, "bytes_per_item": bits // 8 + (4 * dim if cand else 0),
                         **res})
    print("\n| ranking | bytes per item in memory | val mAP@all | held-out mAP@all | of the float model's |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        name = (f"float {dim}-d" if r["bits"] is None else
                f"{r['bits']}-bit codes, " + (f"two-stage {r['candidates']}" if r["candidates"] else "Hamming"))
        print(f"| {name} | {r['bytes_per_item']} | {r['val']:.4f} | {r['unseen']:.4f} | "
              f"{r['unseen'] / ref['unseen']:.3f} |")
    write_result(args, {"checkpoint": args.checkpoint, "config": args.config, "rows": rows,
                        "environment": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
