"""Does a learned similarity re-ranker help zero-shot sketch retrieval? Side by side in one run (no Ray needed).

From one trained encoder checkpoint (frozen), on the embedded benchmark's split (the checkpoint's own
``data`` settings, with ``--data`` as the root):

1. embeds the sketches and photos of the training classes (where re-rankers are trained), the held-out
   validation classes and the unseen classes;
2. trains, per seed, the re-rank heads exactly as ``train.task=rerank`` does (the same pair builder
   ``batch_pairs``, warm-up ``random_pairs`` and ``similarity_regression`` loss; the same optimiser settings
   as ``configs/rerank.yaml``), but from the precomputed embeddings instead of decoding images every step:
   ``mlp`` (Garcia & Vogiatzis: concatenated pair), ``mlp_sym`` (plus ``a * b`` and ``|a - b|``) and
   ``linear`` (cosine after a learned projection: the fair baseline, same pairs and targets);
3. scores the first stage (cosine) and each head re-ranking the top K (``--ks``) on the unseen classes, the
   validation classes and the training classes themselves (seen: does the head learn anything at all?), and
   with ``--quickdraw`` sketch-to-sketch on real QuickDraw drawings (the head applied to sketch pairs, which it
   was never trained on): mAP@all, mAP@200, P@100;
4. times the re-rank stage per query (one thread, K candidates), as the serving engine runs it.

    python bench/bench_rerank.py --encoder bench_out/ablation/runs/d2s_seed0/checkpoint_epoch_0007 \\
        --data bench_out/ablation/doodles --seeds 0 1 2 --ks 100 1000 --quickdraw tests/fixtures/quickdraw \\
        --json bench_out/rerank.json
    python bench/bench_rerank.py --tiny     # seconds: a random-init tiny.yaml encoder on 8 generated classes x 6
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time

import numpy as np
import torch
from common import REPO, bench_parser, ensure_doodles, environment, parse_args, tiny_workdir, write_result

from ray_sbir.checkpoint import load_model, read_meta
from ray_sbir.data.decode import decode_images, render_spec
from ray_sbir.data.images import to_model_input
from ray_sbir.data.plan import plan_dataset
from ray_sbir.eval.metrics import retrieval_metrics
from ray_sbir.losses import CompositeLoss, TermContext
from ray_sbir.models.similarity import create_similarity
from ray_sbir.search import ExactShard, Reranked
from ray_sbir.search.rerank import SimilarityScorer
from ray_sbir.training.rerank import batch_pairs, random_pairs

HEADS = {"mlp": dict(head="mlp", features="concat"), "mlp_sym": dict(head="mlp", features="symmetric"),
         "linear": dict(head="linear", features="concat")}


def tiny_encoder(work: str) -> tuple[str, str]:
    """``--tiny``'s inputs: a generated doodle dataset (8 classes x 6) and a random-init checkpoint of
    ``configs/tiny.yaml``'s model trained on nothing (the bench measures the re-rankers around a frozen encoder).
    Returns (checkpoint, data root)."""
    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.models import create_model

    data = ensure_doodles(os.path.join(work, "doodles"), classes=8, per_class=6, photo_size=32)
    cfg = load_config(os.path.join(REPO, "configs", "tiny.yaml"), [f"data.root={data}"])
    torch.manual_seed(0)
    checkpoint = os.path.join(work, "encoder")
    write_checkpoint(checkpoint, {"model": create_model(cfg.model).eval().state_dict()},
                     CheckpointMeta(epoch=0, config=cfg, classes=["bench"], metrics={}))
    return checkpoint, data


def embed(model, cfg, plan, classes: list[str], modality: str) -> tuple[np.ndarray, np.ndarray]:
    items = plan.items(classes, modality).items.to_pydict()
    spec = render_spec(cfg, modality)
    out = []
    for i in range(0, len(items["uri"]), 256):
        strokes = items["strokes"][i:i + 256] if "strokes" in items else None
        images, errors = decode_images(items["uri"][i:i + 256], strokes, modality, spec)
        assert not any(errors), errors[:3]
        with torch.inference_mode():
            out.append(model.encode(to_model_input(torch.from_numpy(images)), modality).float().numpy())
    return np.concatenate(out), np.asarray(items["label"])


def embed_quickdraw(model, cfg, folder: str, queries_per_class: int) -> dict:
    """Sketch-to-sketch on real drawings: per class, the first ``queries_per_class`` drawings query the others
    (one sketch encoder on both sides; a query is never in the gallery)."""
    import glob

    from ray_sbir.data.quickdraw import rasterize, read_ndjson

    spec = render_spec(cfg, "sketch")
    q_img, q_lab, g_img, g_lab = [], [], [], []
    for path in sorted(glob.glob(os.path.join(folder, "*.ndjson"))):
        drawings = list(read_ndjson(path))
        images = rasterize([d.strokes for d in drawings], size=spec.size, line_width=spec.line_width,
                           padding=spec.padding)
        q_img.append(images[:queries_per_class])
        g_img.append(images[queries_per_class:])
        q_lab += [drawings[0].word] * queries_per_class
        g_lab += [drawings[0].word] * (len(drawings) - queries_per_class)
    out = {}
    for name, imgs, labs in (("sketch", q_img, q_lab), ("photo", g_img, g_lab)):  # "photo": the gallery side
        with torch.inference_mode():
            x = to_model_input(torch.from_numpy(np.concatenate(imgs)))
            out[name] = (model.encode(x, "sketch").float().numpy(), np.asarray(labs))
    return out


def train_head(variant: str, pools: dict, seed: int, args) -> torch.nn.Module:
    """What RerankTask.forward computes, on precomputed embeddings: warm-up on random pairs, then every
    (sketch, photo) pair of a batch of B sketches with one positive and one negative photo each."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    (s_emb, s_lab), (p_emb, p_lab) = pools["sketch"], pools["photo"]
    dim = s_emb.shape[1]
    net = create_similarity(HEADS[variant]["head"], dim, hidden=args.hidden, features=HEADS[variant]["features"])
    loss = CompositeLoss({"similarity_regression": {"weight": 1.0, "margin": args.margin}}, TermContext(dim))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    by_class = {c: np.flatnonzero(p_lab == c) for c in np.unique(p_lab)}
    classes = np.array(sorted(by_class))
    s_t, p_t = torch.from_numpy(s_emb), torch.from_numpy(p_emb)
    for step in range(args.steps):
        if step < args.warmup * args.steps:
            a, b, cos = random_pairs(args.warmup_pairs, dim, gen)
            label = torch.zeros_like(cos)
        else:
            idx = rng.integers(0, len(s_emb), args.batch)
            labels = s_lab[idx]
            pos = [rng.choice(by_class[c]) for c in labels]
            neg_cls = [rng.choice(classes[classes != c]) for c in labels]
            neg = [rng.choice(by_class[c]) for c in neg_cls]
            lab_ids = {c: i for i, c in enumerate(classes)}
            sl = torch.tensor([lab_ids[c] for c in labels])
            pl = torch.tensor([lab_ids[c] for c in labels] + [lab_ids[c] for c in neg_cls])
            a, b, cos, label = batch_pairs(s_t[idx], p_t[np.concatenate([pos, neg])], sl, pl)
        terms = loss({"pair_score": net(a, b), "pair_cosine": cos, "pair_label": label}, step / args.steps)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    return net.eval()


def scores(q, ql, g, gl, rerank: tuple[SimilarityScorer, int] | None = None) -> dict:
    """Metrics of the cosine ranking, or with ``rerank = (scorer, K)`` of the same ranking with each query's
    top K re-scored by the head (:class:`ray_sbir.search.Reranked`, as evaluation and serving rank)."""
    index = None
    if rerank is not None:
        scorer, k = rerank
        index = Reranked(ExactShard(np.asarray(g, np.float32), device="cpu", dtype="float32"), scorer, k)
    m = retrieval_metrics(q, ql, g, gl, ks=(100,), map_ks=(200,), normalize=False, index=index)
    return {"mAP@all": m.map_all, "mAP@200": m.map_at[200], "P@100": m.precision_at[100]}


def main() -> None:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--encoder", help="the trained encoder checkpoint (required, except with --tiny)")
    p.add_argument("--data", help="the benchmark root the encoder was trained on (required, except with --tiny)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ks", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--warmup", type=float, default=0.2)
    p.add_argument("--warmup-pairs", type=int, default=512)
    p.add_argument("--quickdraw", help="folder of QuickDraw ndjson files (tests/fixtures/quickdraw): sketch-to-sketch "
                                       "retrieval on real drawings, 3 queries per class against the rest")
    args = parse_args(p, tiny={"seeds": [0], "ks": [10], "steps": 5, "batch": 8, "hidden": [32], "warmup_pairs": 64,
                               "quickdraw": os.path.join(REPO, "tests", "fixtures", "quickdraw")})
    if args.tiny and not (args.encoder and args.data):
        args.encoder, args.data = tiny_encoder(tiny_workdir("bench_rerank"))
    if not (args.encoder and args.data):
        p.error("--encoder and --data are required (or --tiny)")
    torch.set_num_threads(os.cpu_count() or 1)

    meta = read_meta(args.encoder)
    cfg = dataclasses.replace(meta.config, data=dataclasses.replace(meta.config.data, root=args.data))
    plan = plan_dataset(cfg)
    model, _ = load_model(args.encoder)
    t0 = time.perf_counter()
    sets = {"unseen": plan.split.unseen, "val": plan.split.val, "train": plan.split.train}
    emb = {name: {m: embed(model, cfg, plan, classes, m) for m in ("sketch", "photo")} for name, classes in sets.items()}
    if args.quickdraw:
        emb["quickdraw_s2s"] = embed_quickdraw(model, cfg, args.quickdraw, 3)
        sets["quickdraw_s2s"] = sorted(set(emb["quickdraw_s2s"]["sketch"][1]))
    print(json.dumps({"encoder": args.encoder, "embedded_s": round(time.perf_counter() - t0, 1),
                      **{f"{n}_items": {m: len(v[m][1]) for m in v} for n, v in emb.items()}}), flush=True)

    def evaluate(name: str, rerank=None) -> dict:
        (q, ql), (g, gl) = emb[name]["sketch"], emb[name]["photo"]
        return scores(q, ql, g, gl, rerank)

    rows = [{"variant": "cosine (first stage)", "seed": None, **{n: evaluate(n) for n in sets}}]
    print(json.dumps(rows[0]), flush=True)
    latency = {}
    for variant in args.heads:
        for seed in args.seeds:
            t1 = time.perf_counter()
            net = train_head(variant, emb["train"], seed, args)
            trained_s = time.perf_counter() - t1
            scorer = SimilarityScorer(net, net.dim, head=variant)
            for k in args.ks:
                row = {"variant": variant, "seed": seed, "K": k, "train_s": round(trained_s, 1),
                       **{n: evaluate(n, (scorer, k)) for n in sets}}
                rows.append(row)
                print(json.dumps(row), flush=True)
        # Added latency per query (one thread), as the serving engine's re-rank stage runs it.
        torch.set_num_threads(1)
        q = emb["unseen"]["sketch"][0][0]
        for k in args.ks:
            items = np.resize(emb["unseen"]["photo"][0], (k, q.shape[0])).astype(np.float32)
            times = []
            for _ in range(50):
                t1 = time.perf_counter()
                scorer.score(q, items)
                times.append(time.perf_counter() - t1)
            latency[f"{variant}@{k}"] = {"p50_ms": round(statistics.median(times) * 1e3, 3),
                                         "p99_ms": round(sorted(times)[int(0.99 * len(times))] * 1e3, 3)}
        torch.set_num_threads(os.cpu_count() or 1)
    print(json.dumps({"rerank_latency_per_query_1thread": latency}), flush=True)

    summary = {}
    for r in rows[1:]:
        key = f"{r['variant']} K={r['K']}"
        for split in sets:
            for metric in ("mAP@all", "mAP@200", "P@100"):
                summary.setdefault(key, {}).setdefault(split, {}).setdefault(metric, []).append(r[split][metric])
    table = {key: {split: {m: (round(statistics.mean(v), 4), round(statistics.pstdev(v), 4)) for m, v in ms.items()}
                   for split, ms in splits.items()} for key, splits in summary.items()}
    print(json.dumps({"mean_std_over_seeds": table}, indent=1), flush=True)
    write_result(args, {"args": vars(args), "env": environment(), "rows": rows, "latency": latency, "summary": table},
                 indent=1)


if __name__ == "__main__":
    main()
