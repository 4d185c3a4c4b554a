"""A small sketch encoder against its teacher (issue 16 item 4): speed of sketch encoding and held-out quality,
side by side in one run, for the teacher, the teacher's own weights at smaller sketch inputs (no training) and
distilled students (``train.task=distill``), each under the inference settings of
:class:`ray_sbir.models.inference.InferenceSettings` one by one (NCHW vs channels-last, bf16 autocast,
``torch.compile``, int8 dynamic quantisation of the linear layers).

Every sketch encoder searches the same gallery: the held-out classes' photos embedded once by the teacher's
photo encoder (a student keeps it, frozen, so the teacher's index serves it unchanged), plain and with the
config's training-free re-ranking (``search``: DBA + QE, as the endpoint runs them). Speed: milliseconds per
sketch at batch 1 on 1 thread (a serving replica's encoder: ``torch_threads: 1``), the median of
``--repeats`` calls, and sketches/s at batch 32 on ``--threads`` threads (a batch embedding job); the speedup
column is against the teacher under today's serving settings (fp32, channels-last). Quality: mAP@all of the
held-out sketches, and its ratio to the teacher's.

    python bench/sketchy_recipe.py --data ../shared/data/sketchy-seen104 --unseen configs/sketchy_dev_unseen.txt \\
        --variants student_128 --epochs 4 --save-best bench_out/ckpt        # a distilled student
    python bench/bench_student.py --teacher bench_out/ckpt/triplet_224_f4_seed0 \\
        --student student_128=bench_out/ckpt/student_128_seed0 --sizes 128 160 \\
        --data ../shared/data/sketchy-seen104 --unseen configs/sketchy_dev_unseen.txt --json bench_out/student.json
    python bench/bench_student.py --tiny
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch
from common import (REPO, bench_parser, decode_classes, ensure_doodles, environment, parse_args, tiny_workdir,
                    write_result)

from ray_sbir.config import load_config
from ray_sbir.data.decode import RenderSpec
from ray_sbir.data.plan import plan_dataset
from ray_sbir.eval.metrics import retrieval_metrics
from ray_sbir.models.inference import InferenceEncoder, InferenceSettings, bf16_supported
from ray_sbir.search import EmbeddingKind, ExpansionSettings, QueryExpanded, augment_database, build_index

SETTINGS = {
    "fp32_nchw": InferenceSettings(channels_last=False),
    "fp32": InferenceSettings(),                       # what the endpoint runs today
    "bf16": InferenceSettings(bf16=True),
    "int8_linear": InferenceSettings(int8_linear=True),
    "compile": InferenceSettings(compile=True),
    "bf16_compile": InferenceSettings(bf16=True, compile=True),
    # search.flip_average's query side (its cost per sketch; the quality column mirrors the sketches only, the
    # teacher's gallery here is embedded without it)
    "fp32_mirror": InferenceSettings(flip_average=True),
    "bf16_mirror": InferenceSettings(bf16=True, flip_average=True),
}
CHUNK = 32  # quality embeddings in fixed-size chunks: a compiled encoder sees the same two shapes as when timed


def embed_all(encode, images: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(images), CHUNK):
        chunk = images[i:i + CHUNK]
        pad = CHUNK - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        out.append(encode(chunk)[:CHUNK - pad])
    return np.concatenate(out)


def timing(encode, images: np.ndarray, repeats: int, threads: int) -> dict:
    torch.set_num_threads(1)
    for i in range(3):
        encode(images[i:i + 1])
    one = []
    for i in range(repeats):
        t = time.perf_counter()
        encode(images[i % len(images):i % len(images) + 1])
        one.append(time.perf_counter() - t)
    torch.set_num_threads(threads)
    batch = images[:CHUNK]
    encode(batch)
    t = time.perf_counter()
    rounds = max(1, repeats // 10)
    for _ in range(rounds):
        encode(batch)
    return {"ms_per_sketch_b1": statistics.median(one) * 1e3,
            "sketches_per_s_b32": rounds * len(batch) / (time.perf_counter() - t)}


def quality(queries: np.ndarray, labels: np.ndarray, galleries: dict, gallery_labels: np.ndarray) -> dict:
    out = {}
    for name, index in galleries.items():
        m = retrieval_metrics(queries, labels, None, gallery_labels, index=index, ks=(100,), map_ks=(200,),
                              recall_ks=(100,))
        out[name] = round(float(m.map_all), 4)
    return out


def load(checkpoint: str, tiny_cfg):
    if checkpoint == "untrained":
        from ray_sbir.models import create_model

        torch.manual_seed(0)
        return create_model(tiny_cfg.model).eval(), tiny_cfg
    from ray_sbir.checkpoint import load_model

    model, meta = load_model(checkpoint)
    return model.eval(), meta.config


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--teacher", help="the teacher's checkpoint folder ('untrained': the config's model)")
    p.add_argument("--student", action="append", default=[], help="NAME=CHECKPOINT of a distilled student")
    p.add_argument("--sizes", type=int, nargs="*", default=[128, 160],
                   help="sketch input sizes at which the teacher's own weights run (no training)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--config", default=os.path.join(REPO, "configs", "sketchy.yaml"),
                   help="where the dataset layout and the re-ranking settings (search) come from")
    p.add_argument("--data", help="dataset root (a Sketchy-layout folder; --tiny: generated doodles)")
    p.add_argument("--unseen", default=os.path.join(REPO, "configs", "sketchy_dev_unseen.txt"))
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = parse_args(p, tiny={"teacher": "untrained", "config": os.path.join(REPO, "configs", "tiny.yaml"),
                               "unseen": "random:2", "sizes": [24], "repeats": 10,
                               "settings": ["fp32_nchw", "fp32", "bf16", "int8_linear"]})
    if args.tiny:
        args.data = args.data or ensure_doodles(os.path.join(tiny_workdir("bench_student"), "doodles"), classes=8,
                                                per_class=6, photo_size=32)
    if not (args.data and args.teacher):
        p.error("--data and --teacher are required (or --tiny)")
    torch.set_num_threads(args.threads)
    base = load_config(args.config, [f"data.root={args.data}", f"data.unseen={args.unseen}"])
    teacher, tcfg = load(args.teacher, base)
    cfg = load_config(args.config, [f"data.root={args.data}", f"data.unseen={args.unseen}",
                                    f"data.seed={tcfg.data.seed}"])
    plan = plan_dataset(cfg)
    classes = plan.split.unseen
    photo_spec = RenderSpec(tcfg.model.encoder_config("photo").image_size, cfg.data.line_width, cfg.data.padding)
    photos, photo_labels = decode_classes(plan, classes, "photo", photo_spec)
    gallery = embed_all(InferenceEncoder(teacher, "photo"), photos)
    kind = EmbeddingKind.of_model(teacher)
    dba = ExpansionSettings(cfg.search.dba_n, cfg.search.dba_alpha)
    rows = augment_database(build_index(kind, gallery), gallery, dba) if dba.on else gallery
    galleries = {"plain": build_index(kind, gallery),
                 "reranked": QueryExpanded(build_index(kind, rows), cfg.search.query_expansion_n,
                                           cfg.search.query_expansion_alpha)
                 if cfg.search.query_expansion_n else build_index(kind, rows)}
    print(f"{len(classes)} held-out classes, {len(photos)} photos embedded by the teacher; re-ranking: DBA "
          f"{dba.to_dict()}, QE n={cfg.search.query_expansion_n}; bf16 native here: "
          f"{bf16_supported(torch.device('cpu'))}", flush=True)

    teacher_size = tcfg.model.sketch.image_size
    encoders = [("teacher", teacher, teacher_size)]
    encoders += [(f"teacher weights at {s} px", teacher, s) for s in args.sizes if s != teacher_size]
    for spec in args.student:
        name, _, path = spec.partition("=")
        model, scfg = load(path, base)
        encoders.append((name, model, scfg.model.sketch.image_size))
    results = []
    for name, model, size in encoders:
        sketches, labels = decode_classes(plan, classes, "sketch", RenderSpec(size, cfg.data.line_width, cfg.data.padding))
        for setting in args.settings:
            t0 = time.perf_counter()
            encode = InferenceEncoder(model, "sketch", SETTINGS[setting])
            emb = embed_all(encode, sketches)
            row = {"encoder": name, "size": size, "settings": setting, "label": SETTINGS[setting].label(),
                   "params_m": round(sum(p.numel() for p in model.encoder("sketch").parameters()) / 1e6, 2),
                   "map": quality(emb, labels, galleries, photo_labels),
                   **timing(encode, sketches, args.repeats, args.threads)}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(row)
            print(f"  {name} {size}px {row['label']}: {row['ms_per_sketch_b1']:.2f} ms/sketch, "
                  f"{row['sketches_per_s_b32']:.0f}/s at 32, mAP {row['map']}", flush=True)

    ref = next(r for r in results if r["encoder"] == "teacher" and r["settings"] == "fp32")
    print("\n| sketch encoder | input | inference | ms/sketch (batch 1, 1 thread) | speedup | sketches/s (batch 32, "
          f"{args.threads} threads) | held-out mAP@all | with DBA+QE | of the teacher's |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        r["speedup"] = round(ref["ms_per_sketch_b1"] / r["ms_per_sketch_b1"], 2)
        r["map_ratio"] = round(r["map"]["reranked"] / ref["map"]["reranked"], 3) if ref["map"]["reranked"] else None
        print(f"| {r['encoder']} | {r['size']} px | {r['label']} | {r['ms_per_sketch_b1']:.2f} | {r['speedup']:.2f}x | "
              f"{r['sketches_per_s_b32']:.0f} | {r['map']['plain']:.4f} | {r['map']['reranked']:.4f} | "
              f"{r['map_ratio']} |")
    write_result(args, {"teacher": args.teacher, "students": args.student, "results": results,
                        "environment": environment(bf16_native=bf16_supported(torch.device("cpu")))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
