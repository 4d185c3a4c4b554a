"""Benchmark: QuickDraw strokes -> images, with strokes carried as JSON text (before) or as arrays (after).

Before issue 15 (item 5) a catalog carried each drawing as compact ``[[xs],[ys]]`` JSON text (a ``string``
column) and serving wrote the posted strokes into a fake ndjson line for ``parse_line``: the strokes went
through JSON twice. Now the catalog's ``strokes`` column holds packed float32 ``(x, y, end)`` triples
(``list<float32>``, :func:`ray_sbir.data.quickdraw.pack_strokes`) that reach the rasteriser as arrays, and
serving validates the posted lists straight into arrays (:func:`ray_sbir.data.quickdraw.strokes_from_lists`).

The "before" side is a faithful copy of the removed code (``strokes_to_json`` / ``strokes_from_json`` /
``rasterize_strokes_json``, the old ``decode_images`` QuickDraw path and the old ``_sketch_from_json`` body),
run on the same drawings, with the same rasteriser, taking turns with the "after" side in every pass (best of
``--repeats``), so both see the same machine load. Three paths are timed:

- **training decode**: an Arrow catalog batch (as Ray Data's ``map_batches`` gets it: Arrow -> numpy batch via
  Ray's own conversion, then :func:`ray_sbir.data.decode.decode_batch`) -> uint8 images;
- **strokes -> rasteriser input**: the part of that path the change touches (JSON parse + per-stroke arrays +
  flattening, vs flattening the packed arrays), without the rasterisation itself;
- **serving**: one ``POST /search`` JSON body -> the query image (``RequestParser._sketch_from_json``).

Both sides' images are checked to be identical.

    python bench/bench_decode.py                 # all of ../shared/data/quickdraw-sample (else the test fixtures)
    python bench/bench_decode.py --tiny          # 48 fixture drawings, one pass
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import torch
from common import REPO, bench_parser, command_line, elapsed, environment, finish_environment, parse_args, write_result

from ray_sbir.data import quickdraw
from ray_sbir.data.catalog import build_catalog
from ray_sbir.data.decode import RenderSpec, decode_batch
from ray_sbir.serving.config import ServeConfig
from ray_sbir.serving.http import RequestParser

SHARED_DATA = os.path.join(REPO, "..", "shared", "data", "quickdraw-sample")
FIXTURES = os.path.join(REPO, "tests", "fixtures", "quickdraw")


# --- the removed JSON path, copied as it was (ray_sbir/data/images.py, decode.py, serving/http.py) ----------


def old_strokes_to_json(strokes: list[np.ndarray]) -> str:
    return json.dumps([[s[:, 0].tolist(), s[:, 1].tolist()] for s in strokes], separators=(",", ":"))


def old_strokes_from_json(text: str) -> list[np.ndarray]:
    return [np.stack([np.asarray(s[0], np.float32), np.asarray(s[1], np.float32)], axis=1) for s in json.loads(text)]


def old_rasterize_strokes_json(texts: list[str], size: int, line_width: float, padding: float) -> np.ndarray:
    return quickdraw.rasterize([old_strokes_from_json(t) for t in texts], size=size, line_width=line_width,
                               padding=padding)


def old_decode_batch(batch: dict, spec: RenderSpec) -> dict:
    """The old ``decode_batch`` for a batch of QuickDraw sketches (every row has strokes, none is bad)."""
    strokes = batch["strokes"]
    n = len(batch["uri"])
    images = np.empty((n, spec.size, spec.size), np.uint8)
    vector_rows = [i for i in range(n) if strokes[i]]
    images[vector_rows] = old_rasterize_strokes_json([strokes[i] for i in vector_rows], spec.size, spec.line_width,
                                                     spec.padding)
    out = {k: v for k, v in batch.items() if k != "strokes"}
    out["image"] = images
    out["error"] = np.asarray([""] * n, dtype=object)
    return out


def old_sketch_from_json(body: bytes, cfg: ServeConfig, spec: RenderSpec) -> np.ndarray:
    """The old ``RequestParser._sketch_from_json`` for a valid body: strokes re-serialised into a fake ndjson
    line for ``parse_line``."""
    obj = json.loads(body)
    strokes = obj["strokes"]
    if not isinstance(strokes, list) or not strokes or len(strokes) > cfg.max_strokes:
        raise ValueError("bad strokes")
    points = sum(len(s[0]) for s in strokes if isinstance(s, list) and s and isinstance(s[0], list))
    if points > cfg.max_points:
        raise ValueError("too many points")
    line = json.dumps({"word": "query", "key_id": "query", "drawing": strokes})
    drawing = quickdraw.parse_line(line, source="request", normalize=False)
    pts = np.concatenate(drawing.strokes, axis=0)
    if np.abs(pts).max() > cfg.max_coordinate:
        raise ValueError("out of range")
    return quickdraw.rasterize([drawing.strokes], size=spec.size, line_width=spec.line_width,
                               padding=spec.padding)[0]


# --- inputs --------------------------------------------------------------------------------------------------


def catalog_tables(data: str, limit: int | None) -> tuple[pa.Table, pa.Table]:
    """The QuickDraw catalog of ``data`` as it is now (``strokes``: packed ``list<float32>``) and as it was
    (``strokes``: JSON text), same rows."""
    table = build_catalog(data, layout="quickdraw").select(modality="sketch").items
    table = table.select(["item_id", "uri", "label", "modality", "strokes"])
    if limit:
        table = table.slice(0, limit)
    texts = [old_strokes_to_json(quickdraw.unpack_strokes(r))
             for r in table["strokes"].to_numpy(zero_copy_only=False)]
    old = table.set_column(table.schema.get_field_index("strokes"), "strokes", pa.array(texts, pa.string()))
    return table, old


def numpy_batches(table: pa.Table, batch: int) -> list:
    """``table`` cut into Arrow batches, as Ray Data blocks hand them to ``map_batches`` (the conversion to
    numpy is timed with the decode, as it runs in the task)."""
    return [table.slice(i, batch) for i in range(0, table.num_rows, batch)]


def to_numpy(block: pa.Table) -> dict:
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(block).to_batch_format("numpy")


# --- the bench -----------------------------------------------------------------------------------------------


def interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best seconds of each function over ``repeats`` passes, the functions taking turns in every pass."""
    best = {k: float("inf") for k in fns}
    outs = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            box = []
            best[name] = min(best[name], elapsed(lambda: box.append(fn())))
            outs[name] = box[0]
    return best, outs


def main(argv=None) -> dict:
    ap = bench_parser(__doc__, json_out=True)
    ap.add_argument("--data", default=None,
                    help="folder of <class>.ndjson files (default: ../shared/data/quickdraw-sample, else the "
                         "test fixtures)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N drawings")
    ap.add_argument("--batch", type=int, default=64, help="rows per decode batch (Ray Data's DECODE_BATCH)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--line-width", type=float, default=1.5)
    ap.add_argument("--padding", type=float, default=0.08)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=5, help="passes; the best of each side is reported")
    ap.add_argument("--serving-limit", type=int, default=2000, help="requests timed on the serving path")
    args = parse_args(ap, argv, tiny={"data": FIXTURES, "limit": 48, "repeats": 1, "serving_limit": 16})
    data = args.data or (SHARED_DATA if os.path.isdir(SHARED_DATA) else FIXTURES)
    torch.set_num_threads(args.threads)
    spec = RenderSpec(args.size, args.line_width, args.padding)

    new_table, old_table = catalog_tables(data, args.limit)
    n = new_table.num_rows
    new_blocks, old_blocks = numpy_batches(new_table, args.batch), numpy_batches(old_table, args.batch)
    pts = np.array([len(r) // 3 for r in new_table["strokes"].to_numpy(zero_copy_only=False)])
    print(f"{n} drawings from {os.path.relpath(data, REPO)} (points/drawing mean {pts.mean():.1f}, max {pts.max()}); "
          f"batch {args.batch}, {args.size} px, {args.threads} torch thread(s), best of {args.repeats}", flush=True)

    train_fns = {
        "before": lambda: np.concatenate([old_decode_batch(to_numpy(b), spec)["image"] for b in old_blocks]),
        "after": lambda: np.concatenate([decode_batch(to_numpy(b), modality="sketch", spec=spec)["image"]
                                         for b in new_blocks]),
    }
    old_cols = [to_numpy(b)["strokes"] for b in old_blocks]
    new_cols = [to_numpy(b)["strokes"] for b in new_blocks]
    flatten_fns = {
        "before": lambda: [quickdraw._flatten_batch([old_strokes_from_json(t) for t in c]) for c in old_cols],
        "after": lambda: [quickdraw._flatten_packed(c) for c in new_cols],
    }
    cfg = ServeConfig(checkpoint="-", index="-")
    parser = RequestParser(cfg, spec)
    bodies = [json.dumps({"strokes": [[np.rint(s[:, 0]).astype(int).tolist(), np.rint(s[:, 1]).astype(int).tolist()]
                                      for s in quickdraw.unpack_strokes(r)], "k": 20}).encode()
              for r in new_table["strokes"].to_numpy(zero_copy_only=False)[:args.serving_limit]]
    serve_fns = {
        "before": lambda: np.stack([old_sketch_from_json(b, cfg, spec) for b in bodies]),
        "after": lambda: np.stack([parser._sketch_from_json(b)[0] for b in bodies]),
    }

    env = environment(threads=args.threads, drawings=n)
    results = {}
    print(f"{'path':<30} {'before/s':>10} {'after/s':>10} {'ratio':>7}")
    for name, fns, count in [("training decode (batch path)", train_fns, n),
                             ("strokes -> rasteriser input", flatten_fns, n),
                             ("serving (JSON body -> image)", serve_fns, len(bodies))]:
        for fn in fns.values():  # warm-up (imports, torch kernels)
            fn()
        best, outs = interleaved(fns, args.repeats)
        if name != "strokes -> rasteriser input":
            assert np.array_equal(outs["before"], outs["after"]), f"{name}: the images differ"
        else:
            for a, b in zip(outs["before"], outs["after"]):
                assert all(np.array_equal(x, y) for x, y in zip(a, b)), "the rasteriser inputs differ"
        rate = {k: count / v for k, v in best.items()}
        results[name] = {"items": count, "before_per_s": rate["before"], "after_per_s": rate["after"],
                         "ratio": rate["after"] / rate["before"]}
        print(f"{name:<30} {rate['before']:>10.0f} {rate['after']:>10.0f} {rate['after'] / rate['before']:>6.2f}x",
              flush=True)
    result = {"bench": "decode", "command": command_line(__file__, argv), "data": os.path.relpath(data, REPO),
              "environment": finish_environment(env), "results": results}
    write_result(args, result)
    return result


if __name__ == "__main__":
    main()
