"""Scale check for large-scale QuickDraw indexing (``ray_sbir.distributed.index_quickdraw.index_quickdraw``).

1. **generate** a QuickDraw-format dataset of ``--drawings`` drawings (default 1,000,000): one ``<class>.ndjson``
   per category of ``../shared/data/quickdraw-sample`` (344 categories), in Google's *simplified* format (integer
   coordinates, aligned top-left, longer side 255). Every drawing is a real sample drawing of its class under a
   random affine transform (rotation, scale, shear) with per-point jitter and, now and then, a stroke left out,
   re-normalised as the simplified format is. ``--malformed`` bad lines (broken JSON, empty drawing, string
   coordinate, missing key_id) are spread over the files. Deterministic (seeded); a finished dataset is reused.
2. **profile** one core, no Ray (``torch.set_num_threads(1)``): parse, rasterise, encode and Parquet-write rates
   per drawing (best of ``--profile-repeats`` passes), the encoder's FLOPs per drawing
   (``torch.utils.flop_counter``), and one chunk through the indexer's own actor class (``ChunkIndexer``)
   in-process: what one actor on one core does. Then one *full-size* (``--chunk-bytes``) chunk in a fresh
   process: the time and peak RSS one actor needs per chunk, and the bytes per row of a full-size shard.
3. **index** with the real indexer on a local Ray cluster (``ray.init(address="local")``), as
   ``jobs/index_quickdraw.py`` does, the model from ``--config`` (untrained: weights do not change the cost),
   while :mod:`bench._memwatch` samples every 0.5 s the RSS summed over the driver and all Ray processes and the
   object store's usage, tagged with the progress (shards written / chunks).
4. **verify** the output: rows = drawings - malformed lines, one shard per chunk, manifest and failure list
   present and consistent, key_ids unique, no temporary files left.

    nice -n 10 python bench/bench_quickdraw_scale.py --drawings 1000000                       # tiny.yaml model
    nice -n 10 python bench/bench_quickdraw_scale.py --drawings 50000 --config configs/demo.yaml \\
        --set model.sketch.pretrained_weights=null --data /tmp/qd_scale/data50k --out /tmp/qd_scale/index50k
    python bench/bench_quickdraw_scale.py --tiny    # seconds of measuring: 300 drawings made from tests/fixtures/quickdraw
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import time
from multiprocessing import Pool

import numpy as np
from _memwatch import MemWatch, MiB
from common import REPO, best_of, bench_parser, environment, parse_args, start_ray, tiny_workdir, write_result

SAMPLE = os.path.join(REPO, "..", "shared", "data", "quickdraw-sample")
FIXTURE = os.path.join(REPO, "tests", "fixtures", "quickdraw")  # 36 classes x 10 drawings, in the repository
MARKER = "_generated.json"  # leading "_": not an .ndjson, ignored by the indexer

def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def index_chunk(indexer, chunk) -> dict:
    """One chunk through ``ChunkIndexer``'s public call (a Ray Data batch of one chunk row): its summary row."""
    out = indexer({"file_idx": np.array([chunk.file_idx]), "chunk_idx": np.array([chunk.chunk_idx]),
                   "uri": np.array([chunk.uri], dtype=object), "start": np.array([chunk.start]),
                   "end": np.array([chunk.end])})
    return {k: v[0].item() if isinstance(v[0], np.generic) else v[0] for k, v in out.items()}


# --------------------------------------------------------------------------------------------- generation

_SOURCES: dict[str, list[dict]] = {}


def _load_sources(sample: str) -> dict[str, list[dict]]:
    out = {}
    for name in sorted(os.listdir(sample)):
        if not name.endswith(".ndjson"):
            continue
        with open(os.path.join(sample, name), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for r in rows:
            r["_strokes"] = [np.asarray(s[:2], dtype=np.float64).T for s in r["drawing"]]
        out[name[: -len(".ndjson")]] = rows
    return out


def _perturb(strokes: list[np.ndarray], rng: np.random.Generator) -> list[list[list[int]]]:
    if len(strokes) >= 3 and rng.random() < 0.1:  # a stroke left out now and then
        drop = int(rng.integers(len(strokes)))
        strokes = strokes[:drop] + strokes[drop + 1:]
    lens = [len(s) for s in strokes]
    pts = np.concatenate(strokes)
    pts = pts - (pts.min(0) + pts.max(0)) / 2
    th, sh = rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15)
    sx, sy = rng.uniform(0.8, 1.2, 2)
    c, s = math.cos(th), math.sin(th)
    a = np.array([[c, -s], [s, c]]) @ np.array([[sx, sh], [0.0, sy]])
    pts = pts @ a.T + rng.normal(0.0, 1.5, pts.shape)
    pts -= pts.min(0)
    ext = float(pts.max())
    pts = np.clip(np.rint(pts * (255.0 / ext if ext > 0 else 1.0)), 0, 255).astype(np.int64)
    out, i = [], 0
    for n in lens:
        p = pts[i: i + n]
        i += n
        out.append([p[:, 0].tolist(), p[:, 1].tolist()])
    return out


_BAD = [
    lambda w, k: '{"word":"%s","key_id":"%s","drawing":[[[1,2,3],[4,5' % (w, k),  # truncated JSON
    lambda w, k: '{"word":"%s","key_id":"%s","drawing":[]}' % (w, k),  # empty drawing
    lambda w, k: '{"word":"%s","key_id":"%s","drawing":[[[1,"2"],[3,4]]]}' % (w, k),  # string coordinate
    lambda w, k: '{"word":"%s","drawing":[[[1,2],[3,4]]]}' % w,  # no key_id
]


def _write_class(job: tuple) -> tuple[str, int, int, int]:
    ci, cls, n, bad_kinds, out, seed = job
    rows = _SOURCES[cls]
    rng = np.random.default_rng([seed, ci])
    tmp = os.path.join(out, f".{cls}.ndjson.tmp")
    good = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(n):
            src = rows[int(rng.integers(len(rows)))]
            obj = {"word": cls, "countrycode": src.get("countrycode", "US"), "timestamp": src.get("timestamp", ""),
                   "recognized": bool(src.get("recognized", True)), "key_id": str(5_000_000_000_000_000 + ci * 10_000_000 + i),
                   "drawing": _perturb(src["_strokes"], rng)}
            f.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
            f.write("\n")
            good += 1
            if i == n // 2:
                f.writelines(_BAD[kind](cls, f"bad{ci}_{j}") + "\n" for j, kind in enumerate(bad_kinds))
    size = os.path.getsize(tmp)
    os.replace(tmp, os.path.join(out, f"{cls}.ndjson"))
    return cls, good, len(bad_kinds), size


def generate(out: str, drawings: int, malformed: int, seed: int, procs: int, sample: str = SAMPLE) -> dict:
    params = {"drawings": drawings, "malformed": malformed, "seed": seed, "version": 1}
    marker = os.path.join(out, MARKER)
    if os.path.exists(marker):
        info = _read_json(marker)
        if info["params"] == params:
            print(f"[gen] reusing {out}: {info['drawings']} drawings, {info['malformed']} malformed, "
                  f"{info['bytes'] / MiB:.0f} MiB", flush=True)
            return info
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    global _SOURCES
    _SOURCES = _load_sources(sample)
    classes = sorted(_SOURCES)
    per = [drawings // len(classes) + (1 if i < drawings % len(classes) else 0) for i in range(len(classes))]
    bad = {i: [] for i in range(len(classes))}
    for j in range(malformed):
        bad[(j * len(classes)) // max(malformed, 1)].append(j % len(_BAD))
    jobs = [(i, c, per[i], bad[i], out, seed) for i, c in enumerate(classes)]
    t0 = time.time()
    with Pool(procs) as pool:  # fork: workers inherit _SOURCES
        res = pool.map(_write_class, jobs, chunksize=4)
    info = {"params": params, "classes": len(classes), "drawings": sum(r[1] for r in res),
            "malformed": sum(r[2] for r in res), "bytes": sum(r[3] for r in res),
            "seconds": round(time.time() - t0, 1), "per_class": {r[0]: r[1] for r in res}}
    _write_text(marker, json.dumps(info))
    print(f"[gen] wrote {info['drawings']} drawings + {info['malformed']} malformed lines in {len(classes)} files, "
          f"{info['bytes'] / MiB:.0f} MiB, {info['seconds']} s", flush=True)
    return info


# ---------------------------------------------------------------------------------------------- profiling


def profile(data: str, cfg, chunk_bytes: int, batch_size: int, n: int, encode_n: int, repeats: int,
            use_gpu: bool = False) -> dict:
    """Single-core stage rates (drawings/s, best of ``repeats``) and the encoder's FLOPs per drawing; with
    ``use_gpu`` the encoder is timed on CUDA (as ``ChunkIndexer`` runs it: fp32, batches of ``batch_size``)."""
    import pyarrow.parquet as pq
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ray_sbir.data import quickdraw
    from ray_sbir.data.decode import render_spec
    from ray_sbir.data.images import to_model_input
    from ray_sbir.distributed.embed import UNTRAINED, ModelSource
    from ray_sbir.index import DICTIONARY_COLUMNS, item_table
    from ray_sbir.distributed.index_quickdraw import ChunkIndexer, plan_chunks

    torch.set_num_threads(1)
    d = render_spec(cfg, "sketch")  # the sketch encoder's input size and the stroke rendering
    files = sorted(f for f in os.listdir(data) if f.endswith(".ndjson"))
    lines, per_file = [], -(-n // len(files))  # the first lines of every class, n in all
    for name in files:
        with open(os.path.join(data, name), "rb") as f:
            lines += [line for _, line in zip(range(per_file), f)]
    lines = lines[:n]
    bytes_per_line = sum(len(x) for x in lines) / len(lines)

    def best(fn, repeats=repeats):
        """Best of ``repeats`` timings: the machine is shared, the best pass is the least disturbed."""
        return best_of(fn, repeats)

    def parse_all():
        out = []
        for line in lines:
            try:
                out.append(quickdraw.parse_line(line))
            except quickdraw.MalformedDrawing:
                pass
        return out

    t_parse, drawings = best(parse_all)
    strokes = [dr.strokes for dr in drawings]
    quickdraw.rasterize(strokes[:batch_size], size=d.size, line_width=d.line_width, padding=d.padding)
    t_raster, images = best(lambda: np.concatenate([
        quickdraw.rasterize(strokes[i: i + batch_size], size=d.size, line_width=d.line_width, padding=d.padding)
        for i in range(0, len(strokes), batch_size)]))

    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    model = ModelSource(UNTRAINED, cfg.model).load(device).keep_only("sketch")
    m = min(encode_n, len(images))
    with torch.no_grad():
        model.encode(to_model_input(torch.from_numpy(images[:batch_size]), device), "sketch")  # warm-up
        flops = FlopCounterMode(display=False)
        with flops:
            model.encode(to_model_input(torch.from_numpy(images[:8]), device), "sketch")
        flops_per = flops.get_total_flops() / 8
        # .cpu() synchronises, as ChunkIndexer's .float().cpu().numpy() does
        t_encode, embs = best(lambda: [
            model.encode(to_model_input(torch.from_numpy(images[i: i + batch_size]), device), "sketch")
            .float().cpu().numpy()
            for i in range(0, m, batch_size)])
    emb = np.concatenate(embs)
    emb = np.concatenate([emb] * (len(drawings) // len(emb) + 1))[: len(drawings)]

    def write():  # the shard the indexer writes (ray_sbir.index), into memory instead of storage
        keys = [x.key_id for x in drawings]
        table = item_table(keys, ["bench.ndjson"] * len(keys), [x.word for x in drawings], "sketch", emb,
                           key_id=keys, countrycode=[x.countrycode for x in drawings],
                           recognized=[bool(x.recognized) for x in drawings],
                           source_offset=list(range(len(keys))), source_length=[1] * len(keys))
        buf = io.BytesIO()
        pq.write_table(table, buf, use_dictionary=DICTIONARY_COLUMNS)
        return buf

    t_write, _ = best(write)
    params = sum(p.numel() for p in model.parameters())

    # One real chunk through the indexer's actor class, in this process, on this one thread.
    chunk = plan_chunks(data, chunk_bytes)[0]
    import tempfile

    tmp = os.path.join(tempfile.mkdtemp(prefix="qd_profile_"), "index")  # never inside --data
    indexer = ChunkIndexer(ModelSource(UNTRAINED, cfg.model), tmp, d.size, d.line_width, d.padding, batch_size)

    def one_chunk():
        shutil.rmtree(tmp, ignore_errors=True)  # else the second pass would skip the written shard
        return index_chunk(indexer, chunk)

    t_chunk, row = best(one_chunk, max(1, repeats - 1))
    shutil.rmtree(os.path.dirname(tmp), ignore_errors=True)

    res = {
        "model": f"{cfg.model.name}/{cfg.model.sketch.backbone} embed_dim={cfg.model.embed_dim}", "device": str(device),
        "image_size": d.size, "params": params,
        "gflops_per_drawing": round(flops_per / 1e9, 5),
        "bytes_per_ndjson_line": round(bytes_per_line, 1),
        "parse_per_s": round(len(lines) / t_parse),
        "rasterize_per_s": round(len(strokes) / t_raster),
        # on CPU: one thread; on CUDA: the GPU fed by one process
        "encode_per_s": round(m / t_encode, 1),
        "encode_gflops_per_s": round(m * flops_per / t_encode / 1e9, 1),
        "table_write_per_s": round(len(drawings) / t_write),
        "chunk_indexer_1core_per_s": round(row["rows"] / t_chunk, 1),
        "chunk_rows": row["rows"],
    }
    res["cpu_side_per_s"] = round(1 / (1 / res["parse_per_s"] + 1 / res["rasterize_per_s"] + 1 / res["table_write_per_s"]))
    print("[profile] " + json.dumps(res), flush=True)
    return res


def full_chunk_memory(data: str, cfg, chunk_bytes: int, batch_size: int, use_gpu: bool = False) -> dict:
    """One *full-size* chunk through ``ChunkIndexer`` in a fresh process: its peak RSS is what one indexer actor
    needs on top of its model, whatever the dataset size. The generated class files are smaller than a chunk
    (~1.4 MB at 1M drawings; real QuickDraw files are ~20-150 MB), so lines of several classes are concatenated
    into one file of ``chunk_bytes`` (a real file has one class per file; the label does not change the cost)."""
    import resource
    import tempfile

    import torch

    from ray_sbir.data.decode import render_spec
    from ray_sbir.distributed.embed import UNTRAINED, ModelSource
    from ray_sbir.distributed.index_quickdraw import ChunkIndexer, plan_chunks

    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="qd_fullchunk_")
    src = os.path.join(work, "data")
    os.makedirs(src)
    size = 0
    with open(os.path.join(src, "mixed.ndjson"), "wb") as out:
        for name in sorted(f for f in os.listdir(data) if f.endswith(".ndjson")):
            with open(os.path.join(data, name), "rb") as f:
                for line in f:
                    out.write(line)
                    size += len(line)
                    if size >= chunk_bytes:
                        break
            if size >= chunk_bytes:
                break
    d = render_spec(cfg, "sketch")
    indexer = ChunkIndexer(ModelSource(UNTRAINED, cfg.model), os.path.join(work, "index"), d.size,
                           d.line_width, d.padding, batch_size, use_gpu=use_gpu)
    chunk = plan_chunks(src, chunk_bytes)[0]

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    t0 = time.perf_counter()
    row = index_chunk(indexer, chunk)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    shard = os.path.join(work, "index", chunk.shard_name)
    res = {"chunk_mib": round((chunk.end - chunk.start) / MiB, 2), "rows": row["rows"],
           "seconds_1core": round(seconds, 1), "rss_before_mib": round(before / MiB, 1),
           "peak_rss_mib": round(peak / MiB, 1), "chunk_cost_mib": round((peak - before) / MiB, 1),
           "shard_mib": round(os.path.getsize(shard) / MiB, 2),
           "shard_bytes_per_row": round(os.path.getsize(shard) / max(row["rows"], 1), 1)}
    shutil.rmtree(work, ignore_errors=True)
    print("[full-chunk] " + json.dumps(res), flush=True)
    return res


# ---------------------------------------------------------------------------------------------- indexing


def verify(out: str, gen: dict, res, n_chunks: int) -> dict:
    import pyarrow.parquet as pq

    names = sorted(os.listdir(out))
    shards = [f for f in names if f.endswith(".parquet") and not f.startswith((".", "_"))]
    tmp_left = [f for f in names if f.endswith(".tmp")]
    manifest = _read_json(os.path.join(out, "_manifest.json"))
    failures = _read_json(os.path.join(out, "_failures.json"))
    shard_rows = sum(pq.read_metadata(os.path.join(out, f)).num_rows for f in shards)
    keys = pq.read_table(out, columns=["key_id"])["key_id"]
    labels = pq.read_table(out, columns=["label"])["label"].value_counts().to_pylist()
    per_label = {d["values"]: d["counts"] for d in labels}
    shard_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in shards)
    checks = {
        "rows == drawings - malformed": res.rows == gen["drawings"] and manifest["count"] == gen["drawings"],
        "sum of shard rows == manifest count": shard_rows == manifest["count"],
        "one shard per chunk": len(shards) == n_chunks == res.chunks,
        "manifest lists every shard": sorted(manifest["files"]) == shards,
        "malformed lines all reported": len(failures) == manifest["failures"] == gen["malformed"],
        "key_ids unique": len(keys.unique()) == len(keys),
        "rows per class as generated": per_label == gen["per_class"],
        "no temporary files left": not tmp_left,
    }
    return {"checks": checks, "ok": all(checks.values()), "shards": len(shards), "rows": shard_rows,
            "failures": len(failures), "shard_bytes": shard_bytes,
            "bytes_per_row": round(shard_bytes / max(shard_rows, 1), 1), "dim": manifest["dim"]}


def index(args, cfg, gen: dict) -> dict:
    from ray_sbir.data.decode import render_spec
    from ray_sbir.distributed.embed import UNTRAINED, ModelSource
    from ray_sbir.distributed.index_quickdraw import index_quickdraw, plan_chunks

    shutil.rmtree(args.out, ignore_errors=True)
    n_chunks = len(plan_chunks(args.data, args.chunk_bytes))

    def progress() -> float:
        try:
            return sum(1 for f in os.listdir(args.out) if f.endswith(".parquet") and f[0] not in "._") / n_chunks
        except FileNotFoundError:
            return 0.0

    watch = MemWatch(interval=0.5, progress=progress).start()
    before = watch.sample()
    ray = start_ray(args.cpus, args.object_store_mb)
    try:
        d = render_spec(cfg, "sketch")
        t0 = time.time()
        res = index_quickdraw(args.data, ModelSource(UNTRAINED, cfg.model), args.out, size=d.size,
                              line_width=d.line_width, padding=d.padding, chunk_bytes=args.chunk_bytes,
                              concurrency=args.concurrency, batch_size=args.batch_size, use_gpu=args.use_gpu)
        wall = time.time() - t0
    finally:
        watch.stop()
        ray.shutdown()
    # Tail after the end of the job, for a fair "100%" window the driver is sampled once more
    out = {"wall_s": round(wall, 1), "index_seconds": round(res.seconds, 1), "rows": res.rows,
           "drawings_per_s": round(res.rows / wall, 1), "chunks": res.chunks, "chunks_skipped": res.chunks_skipped,
           "malformed": len(res.failures), "driver_rss_before_ray_mib": round(before.rss / MiB, 1),
           "memory": watch.summary(), "memory_by_progress": watch.by_progress()}
    out["verify"] = verify(args.out, gen, res, n_chunks)
    if args.samples_out:
        write_result(args, [s.__dict__ for s in watch.samples], path=args.samples_out, indent=None)
    return out


def main(argv=None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--drawings", type=int, default=1_000_000)
    ap.add_argument("--malformed", type=int, default=8, help="bad lines spread over the files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", default=SAMPLE, help="the real drawings the generated ones are made from")
    ap.add_argument("--data", default="/tmp/qd_scale/data")
    ap.add_argument("--out", default="/tmp/qd_scale/index")
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "tiny.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--cpus", type=int, default=2, help="logical CPUs of the local Ray cluster")
    ap.add_argument("--concurrency", type=int, default=2, help="indexer actors")
    ap.add_argument("--object-store-mb", type=int, default=512)
    ap.add_argument("--chunk-bytes", type=int, default=None, help="default: the indexer's (8 MiB)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--use-gpu", action="store_true", help="encode on CUDA (profile and index_quickdraw(use_gpu=True))")
    ap.add_argument("--gen-procs", type=int, default=2)
    ap.add_argument("--profile-drawings", type=int, default=20000)
    ap.add_argument("--profile-encode", type=int, default=2048, help="drawings encoded in the profile")
    ap.add_argument("--profile-data", default=None,
                    help="profile on these ndjson files instead of --data (e.g. ../shared/data/quickdraw-sample)")
    ap.add_argument("--profile-repeats", type=int, default=3, help="best of this many passes per stage")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: profile,fullchunk,index")
    ap.add_argument("--samples-out", default=None, help="write every memory sample here (JSON)")
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--clean", action="store_true", help="remove --data and --out at the end")
    args = parse_args(ap, argv, tiny={"drawings": 300, "malformed": 4, "sample": FIXTURE, "data": None, "out": None,
                                      "concurrency": 1, "object_store_mb": 100, "chunk_bytes": 64 << 10,
                                      "batch_size": 32, "profile_drawings": 100, "profile_encode": 32,
                                      "profile_repeats": 1})
    if args.data is None or args.out is None:
        work = tiny_workdir("bench_quickdraw_scale")
        args.data, args.out = args.data or os.path.join(work, "data"), args.out or os.path.join(work, "index")

    from ray_sbir.config import load_config
    from ray_sbir.logs import setup_logging
    from ray_sbir.distributed.index_quickdraw import DEFAULT_CHUNK_BYTES

    setup_logging()  # the indexer's progress lines
    args.chunk_bytes = args.chunk_bytes or DEFAULT_CHUNK_BYTES
    cfg = load_config(args.config, args.set)
    skip = set(filter(None, args.skip.split(",")))
    result = {"args": {k: v for k, v in vars(args).items()}, "env": environment(), "load_avg_start": os.getloadavg()}
    gen = generate(args.data, args.drawings, args.malformed, args.seed, args.gen_procs, args.sample)
    result["generate"] = {k: v for k, v in gen.items() if k != "per_class"}
    if "profile" not in skip:
        # In a child process, so the models and arrays it loads do not inflate the driver's memory below.
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(1) as pool:
            result["profile"] = pool.apply(profile, (args.profile_data or args.data, cfg, args.chunk_bytes, args.batch_size,
                                                     args.profile_drawings, args.profile_encode,
                                                     args.profile_repeats, args.use_gpu))
    if "fullchunk" not in skip:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(1) as pool:
            result["full_chunk"] = pool.apply(full_chunk_memory, (args.data, cfg, args.chunk_bytes, args.batch_size,
                                                                  args.use_gpu))
    if "index" not in skip:
        result["index"] = index(args, cfg, gen)
    result["load_avg_end"] = os.getloadavg()
    write_result(args, result, indent=1, echo=True)
    if args.clean:
        shutil.rmtree(args.data, ignore_errors=True)
        shutil.rmtree(args.out, ignore_errors=True)
    return 0 if "index" in skip or result["index"]["verify"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
