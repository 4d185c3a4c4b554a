"""Streaming with bounded memory: the training triplet stream through a small object store.

Starts its own local Ray cluster (``ray.init(address="local")``) with a small object store
(``--object-store-mb``, default 128 MiB), builds the training dataset exactly as ``ray_sbir.distributed.train.train`` does
(``plan_dataset`` -> seen classes -> ``ray_sbir.distributed.datasets.training_dataset``: shuffle, seeded uniforms, decode +
rasterise + augment in Ray Data tasks) on a generated doodle dataset, sized so that the decoded tensors total
``--factor`` (default 4) times the object store, and consumes it the way a Ray Train worker does:

- ``--consumer train`` (default): a real ``TorchTrainer`` (1 worker, ``DataConfig(datasets_to_split=["train"])``)
  whose loop iterates ``get_dataset_shard("train").iter_torch_batches(batch_size, drop_last=True, dtypes=None,
  device="cpu")`` as ``train_loop_per_worker`` does, optionally sleeping ``--step-ms`` per batch to stand in for
  a training step (a slow consumer is the hard case for memory: the producer runs ahead until backpressure);
- ``--consumer split``: the same iterator without Ray Train (``streaming_split(1)[0]``, in the driver).

Measured: time to the first batch vs the whole pass, and how much of the stream had been decoded when the first
batch arrived (a pass-through step appended to the pipeline, fused into the decode tasks, logs every block it
produces; ``--no-tap`` leaves it out): training starts long before the dataset is read. Also: bytes
streamed (sum of the batches' tensor bytes) and their ratio to the object store size, the object store's peak
usage, spilled and fallback bytes (raylet ``store_stats``), and the peak RSS summed over the driver and every Ray
process (see ``bench/_memwatch.py``), every 0.5 s.

    nice -n 10 python bench/bench_streaming.py                                   # 128 MiB store, 4x, 64 px
    nice -n 10 python bench/bench_streaming.py --step-ms 100                      # slow consumer
    python bench/bench_streaming.py --object-store-mb 80 --factor 3 --image-size 96 --set data.augment=false \
        --classes 6 --per-class 12 --consumer split --cpus 2 --json /tmp/s.json   # tests/distributed/test_datasets.py
    python bench/bench_streaming.py --tiny       # seconds of streaming: 64 triplets of 32 px, --consumer split
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

from _memwatch import MemWatch, MiB
from common import REPO, bench_parser, ensure_doodles, environment, parse_args, start_ray, write_result


def triplet_bytes(inputs) -> int:
    """Decoded bytes of one triplet as the loop receives it (``inputs``: the task's ``TaskInputs``): a uint8
    sketch [s, s] per sketch rendering, positive and negative [p, p, 3] (when the task takes photos), int64
    label and negative_label."""
    sketches = sum(spec.size * spec.size for spec in inputs.sketches.values())
    photos = 2 * inputs.photo_spec.size * inputs.photo_spec.size * 3 if inputs.photo_spec is not None else 0
    return sketches + photos + 8 + 8


def _batch_bytes(batch: dict) -> int:
    return sum(int(v.numel()) * v.element_size() for v in batch.values())


def _tap(table, *, path: str):
    """Pass-through appended to the pipeline (it fuses into the decode task): logs ``<time> <rows>`` per block
    produced, so the driver can tell how much of the stream had been decoded when the first batch arrived.
    Appends of one short line are atomic (O_APPEND), so concurrent tasks do not interleave."""
    with open(path, "a") as f:
        f.write(f"{time.time():.3f} {table.num_rows}\n")
    return table


def _production(path: str) -> list[tuple[float, int]]:
    """(time, cumulative rows decoded) from the tap's log."""
    out, total = [], 0
    try:
        with open(path) as f:
            rows = sorted((float(t), int(n)) for t, n in (line.split() for line in f if line.strip()))
    except FileNotFoundError:
        return []
    for t, n in rows:
        total += n
        out.append((t, total))
    return out


def _consume(iterator, batch_size: int, step_s: float, progress_file: str | None) -> dict:
    """Iterate like ``train_loop_per_worker``; returns wall-clock timestamps and byte counts."""
    t_start = time.time()
    t_first = None
    nbytes = rows = batches = 0
    for batch in iterator.iter_torch_batches(batch_size=batch_size, drop_last=True, dtypes=None, device="cpu"):
        if t_first is None:
            t_first = time.time()
        nbytes += _batch_bytes(batch)
        rows += len(batch["sketch"])
        batches += 1
        if step_s:
            time.sleep(step_s)  # stands in for forward/backward/step
        if progress_file and batches % 5 == 0:
            with open(progress_file + ".tmp", "w") as f:
                f.write(str(nbytes))
            os.replace(progress_file + ".tmp", progress_file)
    return {"t_start": t_start, "t_first": t_first or time.time(), "t_end": time.time(), "bytes": nbytes,
            "rows": rows, "batches": batches}


def _train_loop(config: dict) -> None:
    import ray.train

    out = _consume(ray.train.get_dataset_shard("train"), config["batch_size"], config["step_s"],
                   config["progress_file"])
    # Ray Train 2.x keeps metrics only with a checkpoint: hand the numbers back through a file (same node).
    with open(config["result_file"], "w") as f:
        json.dump(out, f)
    ray.train.report({"rows": out["rows"]})


def build_dataset(args, root: str, tap_file: str | None = None):
    """The training dataset of ``ray_sbir.distributed.train.train``: same config handling, split, task inputs and triplet
    pipeline. Returns (dataset, triplets, decoded bytes per triplet, info)."""
    from ray_sbir.config import load_config
    from ray_sbir.data.plan import plan_dataset
    from ray_sbir.data.samplers import create_sampler
    from ray_sbir.distributed.datasets import training_dataset
    from ray_sbir.training import task_class

    cfg = load_config(args.config, [f"data.root={root}", f"model.sketch.image_size={args.image_size}",
                                    "data.unseen=random:2", "data.val_classes=2", *args.set])
    task = task_class(cfg.train.task)
    cfg = task.prepare_config(cfg)
    plan = plan_dataset(cfg)
    classes = plan.split.train
    anchors, photos = plan.items(classes, "sketch"), plan.items(classes, "photo")
    inputs = task.inputs(cfg)
    per_triplet = triplet_bytes(inputs)
    n = args.triplets or math.ceil(args.factor * args.object_store_mb * MiB / per_triplet)
    # Whole batches only (drop_last=True): round up so the streamed bytes reach the target.
    n = math.ceil(n / args.batch_size) * args.batch_size
    ds = training_dataset(create_sampler(cfg), anchors, photos, classes, inputs.sketches, inputs.photo_spec,
                          seed=cfg.data.seed, augment=cfg.data.augment, items_per_epoch=n)
    if tap_file:
        ds = ds.map_batches(_tap, fn_kwargs={"path": tap_file}, batch_size=None, batch_format="pyarrow")
    return ds, n, per_triplet, {"train_classes": len(classes), "anchors": len(anchors), "photos": len(photos)}


def main(argv=None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--object-store-mb", type=int, default=128)
    ap.add_argument("--factor", type=float, default=4.0, help="decoded bytes to stream / object store size")
    ap.add_argument("--triplets", type=int, default=None, help="override the count derived from --factor")
    ap.add_argument("--image-size", type=int, default=64, help="sketch input size (model.sketch.image_size)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--step-ms", type=float, default=0.0, help="simulated training step per batch")
    ap.add_argument("--consumer", choices=["train", "split"], default="train")
    ap.add_argument("--cpus", type=int, default=3, help="logical CPUs of the local cluster (1 goes to the worker)")
    ap.add_argument("--classes", type=int, default=12, help="doodle classes generated (2 unseen, 2 val)")
    ap.add_argument("--per-class", type=int, default=30, help="sketches and photos per class")
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "tiny.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--no-tap", action="store_true", help="leave out the production log step")
    ap.add_argument("--workdir", default=None, help="default: a fresh temporary folder, removed at the end")
    ap.add_argument("--json", default=None, help="write the result here")
    args = parse_args(ap, argv, tiny={"object_store_mb": 80, "triplets": 64, "image_size": 32, "batch_size": 16,
                                      "consumer": "split", "cpus": 2, "classes": 6, "per_class": 4})

    from ray_sbir.logs import setup_logging

    setup_logging()  # the library's warnings (malformed records, skipped triplets)

    work = args.workdir or tempfile.mkdtemp(prefix="bench_streaming_")
    os.makedirs(work, exist_ok=True)
    root = os.path.join(work, "doodles")
    t0 = time.time()
    ensure_doodles(root, classes=args.classes, per_class=args.per_class, photo_size=max(args.image_size, 64))
    t_gen = time.time() - t0
    progress_file = os.path.join(work, "progress")
    result_file = os.path.join(work, "consumer.json")
    tap_file = os.path.join(work, "produced.log")
    for stale in (progress_file, result_file, tap_file):  # from an earlier run in the same --workdir
        if os.path.exists(stale):
            os.remove(stale)
    store = args.object_store_mb * MiB
    watch = MemWatch(interval=0.5)
    result: dict = {"args": vars(args), "env": environment(), "load_avg_start": os.getloadavg(),
                    "generate_s": round(t_gen, 1)}
    ray = start_ray(args.cpus, args.object_store_mb)
    try:
        ds, n, per_triplet, info = build_dataset(args, root, None if args.no_tap else tap_file)
        expected = n * per_triplet
        result.update(info, triplets=n, expected_bytes=expected)

        def progress() -> float:
            try:
                with open(progress_file) as f:
                    return int(f.read() or 0) / expected
            except (FileNotFoundError, ValueError):
                return 0.0

        watch.progress = progress
        watch.start()
        t_fit = time.time()
        if args.consumer == "train":
            from ray.train import DataConfig, RunConfig, ScalingConfig
            from ray.train.torch import TorchTrainer

            trainer = TorchTrainer(
                _train_loop,
                train_loop_config={"batch_size": args.batch_size, "step_s": args.step_ms / 1000,
                                   "progress_file": progress_file, "result_file": result_file},
                scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 1}),
                datasets={"train": ds},
                dataset_config=DataConfig(datasets_to_split=["train"]),
                run_config=RunConfig(name="bench_streaming", storage_path=os.path.join(work, "runs")),
            )
            trainer.fit()
            with open(result_file) as f:
                out = json.load(f)
        else:
            out = _consume(ds.streaming_split(1, equal=True)[0], args.batch_size, args.step_ms / 1000, progress_file)
        t_done = time.time()
    finally:
        watch.stop()
        ray.shutdown()
    mem = watch.summary()
    prod = _production(tap_file)
    if prod:
        produced_first = max([r for t, r in prod if t <= out["t_first"]], default=0)
        half_t = next(t for t, r in prod if r >= prod[-1][1] / 2)
        result.update({
            "produced_at_first_batch": produced_first,
            "produced_fraction_at_first_batch": round(produced_first / max(prod[-1][1], 1), 4),
            "decode_started_s": round(prod[0][0] - out["t_start"], 2),  # first block decoded, from iteration start
            "decode_half_done_s": round(half_t - out["t_start"], 2),
            "decode_done_s": round(prod[-1][0] - out["t_start"], 2),
        })
    total_iter = out["t_end"] - out["t_start"]
    first_iter = out["t_first"] - out["t_start"]
    result.update({
        "bytes_streamed": out["bytes"], "rows": out["rows"], "batches": out["batches"],
        "bytes_streamed_mib": round(out["bytes"] / MiB, 1),
        "ratio_streamed_to_object_store": round(out["bytes"] / store, 2),
        "first_batch_s": round(first_iter, 2),  # from the start of iteration in the consumer
        "total_iter_s": round(total_iter, 2),
        "first_batch_fraction_of_pass": round(first_iter / max(total_iter, 1e-9), 4),
        "first_batch_from_fit_s": round(out["t_first"] - t_fit, 2),  # includes Ray Train's worker start-up
        "total_fit_s": round(t_done - t_fit, 2),
        "triplets_per_s": round(out["rows"] / max(total_iter, 1e-9), 1),
        "mib_per_s": round(out["bytes"] / MiB / max(total_iter, 1e-9), 1),
        "object_store_mib": args.object_store_mb,
        "peak_object_store_fraction": round(mem["peak_object_store_mib"] / args.object_store_mb, 3),
        "memory": mem, "memory_by_progress": watch.by_progress(),
        "load_avg_end": os.getloadavg(),
    })
    write_result(args, result, indent=1, echo=True)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
