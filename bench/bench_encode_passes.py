"""Encoder throughput on a CPU by forward-pass size: one pass over the whole batch against passes of the library's
pixel budget (:data:`ray_sbir.models.inference.CPU_PASS_PIXELS`, what :func:`~ray_sbir.models.inference.encode`
runs), side by side in one run, for each preset's sketch encoder (random init or a checkpoint: the timing does
not depend on the weights), batch size and thread count; with and without mirror averaging (two views a sketch).

    python bench/bench_encode_passes.py --models sketchy demo sketchy_lite2 --batches 1 4 16 32 --threads 1 2
    python bench/bench_encode_passes.py --checkpoint bench_out/ckpt/triplet_224_f4_seed0 --batches 16
    python bench/bench_encode_passes.py --tiny
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from common import REPO, bench_parser, environment, parse_args, write_result

from ray_sbir.data.images import to_model_input
from ray_sbir.models import inference


def load_encoder(name: str, checkpoint: str | None):
    """The sketch encoder of a preset (random init, no weights read) or of a checkpoint, and its input size."""
    if checkpoint:
        from ray_sbir.checkpoint import load_model

        model, meta = load_model(checkpoint, "cpu")
        return model.keep_only("sketch").eval(), int(meta.config.model.sketch.image_size)
    from ray_sbir.config import load_config
    from ray_sbir.models import create_model

    path = os.path.join(REPO, "configs", f"{name}.yaml")
    overrides = ["model.sketch.pretrained_weights=null"]
    cfg = load_config(path, overrides)
    if cfg.model.photo is not None:
        cfg = load_config(path, [*overrides, "model.photo.pretrained_weights=null"])
    return create_model(cfg.model).keep_only("sketch").eval(), int(cfg.model.sketch.image_size)


def rate(model, x: torch.Tensor, flip: bool, whole: bool, seconds: float) -> float:
    """Sketches per second of ``encode`` over ``x``, in one pass (``whole``) or the library's passes."""
    saved = inference.CPU_PASS_PIXELS
    if whole:
        inference.CPU_PASS_PIXELS = 1 << 62
    try:
        with torch.inference_mode():
            for _ in range(2):
                inference.encode(model, x, "sketch", flip_average=flip)
            t0, n = time.perf_counter(), 0
            while n == 0 or time.perf_counter() - t0 < seconds:
                inference.encode(model, x, "sketch", flip_average=flip)
                n += len(x)
            return n / (time.perf_counter() - t0)
    finally:
        inference.CPU_PASS_PIXELS = saved


def sweep_pass_sizes(model, size: int, sizes: list[int], threads: int, seconds: float) -> dict[int, float]:
    """Sketches/s of a batch of 16 encoded in passes of exactly ``n`` images, for each ``n`` of ``sizes``."""
    torch.set_num_threads(threads)
    x = to_model_input(torch.from_numpy(np.random.default_rng(1).integers(0, 256, (16, size, size), dtype=np.uint8)),
                       "cpu")
    saved, out = inference.CPU_PASS_PIXELS, {}
    try:
        for n in sizes:
            inference.CPU_PASS_PIXELS = n * size * size
            out[n] = rate(model, x, False, False, seconds)
    finally:
        inference.CPU_PASS_PIXELS = saved
    return out


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--models", nargs="+", default=["sketchy", "demo", "sketchy_lite2"],
                   help="presets in configs/ whose sketch encoder is timed (random init)")
    p.add_argument("--checkpoint", help="time this checkpoint's sketch encoder instead")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--flip", choices=("off", "on", "both"), default="both", help="mirror averaging")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    p.add_argument("--sweep", type=int, nargs="*", default=[],
                   help="also time a batch of 16 (no mirror) in passes of exactly these many images: where the "
                        "budget comes from")
    args = parse_args(p, tiny={"models": ["tiny"], "batches": [8], "threads": [1], "flip": "on", "seconds": 0.2})
    flips = {"off": [False], "on": [True], "both": [False, True]}[args.flip]
    names = [os.path.basename(args.checkpoint.rstrip("/"))] if args.checkpoint else args.models
    rows = []
    print("| encoder | input | threads | mirror | batch | pass limit (images) | sketches/s, one pass | sketches/s, passes "
          "| ratio |\n|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for name in names:
        model, size = load_encoder(name, args.checkpoint)
        images = np.random.default_rng(0).integers(0, 256, (max(args.batches), size, size), dtype=np.uint8)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for flip in flips:
                for batch in args.batches:
                    x = to_model_input(torch.from_numpy(images[:batch]), "cpu")
                    one = rate(model, x, flip, True, args.seconds)
                    split = rate(model, x, flip, False, args.seconds)
                    row = {"encoder": name, "size": size, "threads": threads, "flip": flip, "batch": batch,
                           "images_per_pass": inference.images_per_pass(x), "one_pass": round(one, 1),
                           "passes": round(split, 1), "ratio": round(split / one, 2)}
                    rows.append(row)
                    print(f"| {name} | {size} | {threads} | {'yes' if flip else 'no'} | {batch} | "
                          f"{row['images_per_pass']} | {one:.1f} | {split:.1f} | {split / one:.2f}x |", flush=True)
        if args.sweep:
            sweep = sweep_pass_sizes(model, size, args.sweep, args.threads[0], args.seconds)
            rows.append({"encoder": name, "size": size, "threads": args.threads[0], "sweep": sweep})
            print(f"{name}, {size} px, {args.threads[0]} thread(s), batch 16 in passes of N images: "
                  + ", ".join(f"N={n}: {r:.1f}/s" for n, r in sweep.items()), flush=True)
    write_result(args, {"rows": rows, "cpu_pass_pixels": inference.CPU_PASS_PIXELS, "environment": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
