"""Benchmark: Ray Train step rate (1 worker, the real ``ray_sbir.distributed.train.train`` path) vs a plain PyTorch loop.

Both sides train the same task (``ray_sbir.training.create_task`` for ``train.task``: the config's model and
loss terms, same seed), with the same optimizer (``make_optimizer``: AdamW parameter groups), precision
(``Precision.for_device``), step (``train_step``: cosine learning rate, forward, backward, optimizer step),
batch size and torch threads, on triplets of the same generated doodle dataset (``ray_sbir.data.doodles``), for
the same number of steps:

- **ray_train**: ``ray_sbir.distributed.train.train(cfg, plan)``: ``TorchTrainer`` with 1 worker fed by the Ray Data
  triplet pipeline (shuffle, seeded uniforms, ``TripletBatchBuilder`` decode + augmentation in Ray Data tasks).
  Step end times are noted in the worker by a thin wrapper around ``train_loop_per_worker`` (the only
  change: the "train" shard's ``iter_torch_batches`` records when the loop asks for the next batch).
- **plain_loader**: a single-process loop; a ``torch.utils.data.DataLoader`` (``--loader-workers`` spawned
  processes) runs the same ``TripletBatchBuilder`` (same decode, sampling and augmentation code) on anchor rows
  drawn with NumPy. This is the like-for-like baseline: decoding competes for the same cores in both.
- **plain_predecoded**: the same loop over batches decoded before the clock starts: the compute-only ceiling.

Steady state = steps ``--warmup`` .. end (dataset / loader startup and the first steps excluded); the epoch
rate including startup is printed too. Runs alternate (plain_loader, ray_train, plain_predecoded) ``--rounds``
times in one process, so a load change on a shared machine hits all of them; ratios use the medians.

    python bench/bench_train_loop.py                             # demo model (EfficientNet-Lite0, 64 px)
    python bench/bench_train_loop.py --config configs/tiny.yaml --steps 60
    python bench/bench_train_loop.py --tiny      # seconds of training: tiny.yaml, 4 steps, no DataLoader process
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time

import numpy as np
import torch
from common import (REPO, bench_parser, command_line, ensure_doodles, environment, finish_environment, parse_args,
                    start_ray, tiny_workdir, write_result)

import ray_sbir.training.step as training_step
from ray_sbir.config import load_config
from ray_sbir.data.decode import TripletBatchBuilder
from ray_sbir.data.plan import load_class_vectors, plan_dataset
from ray_sbir.distributed.train import train
from ray_sbir.logs import setup_logging
from ray_sbir.training import TaskContext, create_task, task_class
from ray_sbir.training.step import EpochStats, Precision, batch_to_device, make_optimizer, train_step

# ------------------------------------------------------------------------------------------------ plain side


def as_delivered(batch: dict) -> dict:
    """Decoded numpy batch -> torch tensors laid out as Ray Data delivers them to the training worker.

    ``TripletBatchBuilder``'s augmented photo arrays are NHWC views of NCHW memory (``random_affine`` returns a
    permuted view); Ray Data's Arrow transport hands the worker C-contiguous NHWC copies. The layout decides the
    convolutions' memory format after ``to_model_input`` (C-contiguous NHWC -> channels_last, about 1.5x faster
    on this CPU; NCHW memory -> NCHW), so the plain loop gets the same C-contiguous arrays."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


class AnchorBatches(torch.utils.data.IterableDataset):
    """Anchor-row batches -> decoded triplet batches, decoded in the DataLoader worker(s)."""

    def __init__(self, builder: TripletBatchBuilder, batches: list[dict]):
        self.builder = builder
        self.batches = batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for i in range(wid, len(self.batches), nw):
            yield as_delivered(self.builder(self.batches[i]))


def anchor_batches(plan, cfg, steps: int, seed: int) -> tuple[TripletBatchBuilder, list[dict], int]:
    """The same anchor multiset and triplet builder as ``triplet_dataset`` (the task's sketch renderings and
    photo spec); order and uniforms from NumPy."""
    classes = plan.split.train
    index = {c: i for i, c in enumerate(classes)}
    anchors = plan.items(classes, "sketch").items
    photos = plan.items(classes, "photo").items
    photo_labels = np.array([index[c] for c in photos["label"].to_pylist()], dtype=np.int64)
    inputs = task_class(cfg.train.task).inputs(cfg)
    builder = TripletBatchBuilder(photos["uri"].to_pylist(), photo_labels, len(classes), inputs.sketches,
                                  inputs.photo_spec, cfg.data.augment)
    bs = cfg.train.batch_size
    rng = np.random.default_rng(seed)
    pick = rng.choice(anchors.num_rows, size=steps * bs, replace=steps * bs > anchors.num_rows)
    uris, strokes = anchors["uri"].to_pylist(), anchors["strokes"].to_pylist()
    labels = np.array([index[c] for c in anchors["label"].to_pylist()], dtype=np.int64)
    batches = []
    for s in range(steps):
        rows = pick[s * bs:(s + 1) * bs]
        batches.append({"uri": np.array([uris[i] for i in rows], dtype=object),
                        "strokes": np.array([strokes[i] for i in rows], dtype=object),
                        "label_idx": labels[rows], "u_pos": rng.random(bs), "u_neg_class": rng.random(bs),
                        "u_neg": rng.random(bs)})
    return builder, batches, len(classes)


def plain_loop(cfg, plan, batch_iter, steps: int) -> dict:
    """``train_loop_per_worker``'s step, without Ray: same task (model and loss), optimizer, precision,
    ``batch_to_device`` + ``train_step`` (LR schedule included) and bookkeeping, on the CPU.

    ``cfg`` is the run's resolved config (``prepare_config`` applied), as the worker gets it from ``train``."""
    torch.set_num_threads(cfg.train.torch_threads or cfg.train.cpus_per_worker)
    torch.manual_seed(cfg.train.seed)
    device = torch.device("cpu")
    classes = plan.split.train
    task_cls = task_class(cfg.train.task)
    vectors = load_class_vectors(cfg, classes) if task_cls.needs_class_vectors(cfg) else None
    task = create_task(cfg, TaskContext(classes, vectors))
    inputs = task_cls.inputs(cfg)
    optimizer = make_optimizer(task, cfg)
    precision = Precision.for_device(device, cfg.train.amp)  # fp32 on the CPU, as in the worker
    task.train()
    stats = EpochStats(steps)
    t0, c0 = time.time(), time.process_time()
    ends, cpu = [], []
    for batch in batch_iter():
        if stats.done >= steps:
            break
        progress = stats.done / steps
        terms = train_step(task, optimizer, precision, batch_to_device(batch, inputs, device), progress)
        stats.add(terms, len(batch["label"]))
        ends.append(time.time() - t0)
        cpu.append(time.process_time() - c0)
    return {"t0": t0, "step_end_s": ends, "step_cpu_s": cpu, "loss": stats.means().get("loss", float("nan"))}


# ------------------------------------------------------------------------------------------- Ray Train side


def channels_last(fn):
    """``to_model_input`` followed by a channels_last copy: the proposed library change (``--channels-last``).
    Installed as ``ray_sbir.training.step.to_model_input``, which ``batch_to_device`` calls on both sides."""

    def to_model_input_cl(images, device=None):
        return fn(images, device).contiguous(memory_format=torch.channels_last)

    return to_model_input_cl


def timed_loop(loop_fn, stamps_path: str, cl: bool = False):
    """``loop_fn`` unchanged, except that the "train" shard's ``iter_torch_batches`` notes when each step ends.

    A step ends when the loop asks for the next batch (or for the end of the epoch); the times, relative to the
    ``iter_torch_batches`` call (right after the loop's own epoch clock starts), go to ``stamps_path`` as JSON.
    Defined in the benchmark's ``__main__``, so cloudpickle ships it to the worker by value."""

    def loop(loop_config):
        import json as _json
        import time as _time

        import ray.train as _rt

        real = _rt.get_dataset_shard
        epochs: list[list[float]] = []
        if cl:
            import ray_sbir.training.step as _s

            _s.to_model_input = channels_last(_s.to_model_input)

        class Shard:
            def __init__(self, shard):
                self._shard = shard

            def __getattr__(self, name):
                return getattr(self._shard, name)

            def iter_torch_batches(self, **kw):
                t0, c0 = _time.time(), _time.process_time()
                ends: list[list[float]] = [[t0, 0.0]]  # first entry: the epoch clock's absolute start
                epochs.append(ends)
                for b in self._shard.iter_torch_batches(**kw):
                    yield b
                    ends.append([_time.time() - t0, _time.process_time() - c0])

        _rt.get_dataset_shard = lambda name: Shard(real(name)) if name == "train" else real(name)
        try:
            loop_fn(loop_config)
        finally:
            _rt.get_dataset_shard = real
            with open(stamps_path, "w") as f:  # noqa: PTH123
                _json.dump(epochs, f)

    return loop


def ray_train_run(cfg, plan, stamps_path: str, steps: int, cl: bool = False) -> dict:
    """``ray_sbir.distributed.train.train(cfg, plan)``; its TorchTrainer gets the timed loop."""
    import ray_sbir.distributed.train as T

    real = T.TorchTrainer
    T.TorchTrainer = lambda fn, **kw: real(timed_loop(fn, stamps_path, cl), **kw)
    try:
        t0 = time.time()
        result = train(cfg, plan)
        wall = time.time() - t0
    finally:
        T.TorchTrainer = real
    with open(stamps_path) as f:  # noqa: PTH123
        epochs = json.load(f)
    m = result.metrics
    start, ends = epochs[0][0][0], epochs[0][1:steps + 1]
    return {"t0": start, "step_end_s": [e[0] for e in ends], "step_cpu_s": [e[1] for e in ends], "wall_s": wall,
            "loss": m.get("train_loss"), "epoch_seconds": m.get("epoch_seconds"),
            "epoch_triplets_per_second": m.get("triplets_per_second")}


# ------------------------------------------------------------------------------------------------ profiling


class CpuSampler:
    """Samples the CPU time of this process and all its descendants (Ray's GCS, raylet, workers, DataLoader
    workers) every ``interval`` s, so the CPU each one used inside a steady-state window can be attributed."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self.psutil = psutil
        self.interval = interval
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _snapshot(self) -> dict:
        me = self.psutil.Process()
        out = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    title = (proc.cmdline() or [proc.name()])[0]
                out[proc.pid] = (title if title.startswith("ray::") or proc.pid == me.pid else proc.name(),
                                 t.user + t.system)
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                pass
        return out

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), self._snapshot()))
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join()

    def window(self, t_start: float, t_end: float) -> dict:
        """CPU seconds per process kind between the samples closest to ``t_start`` and ``t_end``."""
        if not self.samples:
            return {}
        a = min(self.samples, key=lambda x: abs(x[0] - t_start))
        b = min(self.samples, key=lambda x: abs(x[0] - t_end))
        titles: dict[int, dict[str, int]] = {}
        for ts, snap in self.samples:
            if a[0] <= ts <= b[0]:
                for pid, (title, _) in snap.items():
                    titles.setdefault(pid, {}).setdefault(title, 0)
                    titles[pid][title] += 1
        out: dict[str, float] = {}
        for pid, (_, cpu_b) in b[1].items():
            cpu_a = a[1].get(pid, ("", 0.0))[1]
            if cpu_b - cpu_a <= 0.005:
                continue
            seen = titles.get(pid, {})
            # A worker's title follows the task it runs; name it by its most frequent non-idle title.
            busy = {k: v for k, v in seen.items() if k != "ray::IDLE"} or seen
            kind = _kind(max(busy, key=busy.get) if busy else "?", pid == os.getpid())
            out[kind] = out.get(kind, 0.0) + cpu_b - cpu_a
        out["(window s)"] = b[0] - a[0]
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _kind(title: str, driver: bool) -> str:
    if driver:
        return "driver (this process)"
    title = title.split(" ", 1)[0]
    for old, new in (("ray::", ""), (".", " "),):
        title = title.replace(old, new)
    return title.split(" ", 1)[0][:60]


def cpu_window(sampler: CpuSampler | None, run: dict, warmup: int) -> dict | None:
    if sampler is None:
        return None
    ends = run["step_end_s"]
    return {k: round(v, 2) for k, v in sampler.window(run["t0"] + ends[warmup - 1], run["t0"] + ends[-1]).items()}


# ------------------------------------------------------------------------------------------------ analysis


def summarise(run: dict, warmup: int, bs: int) -> dict:
    ends, cpu = run["step_end_s"], run["step_cpu_s"]
    n = len(ends)
    if n <= warmup + 1 or warmup < 1:
        return {"steps": n, "error": "not enough steps"}
    steady = (n - warmup) / (ends[-1] - ends[warmup - 1])
    step_times = np.diff(np.asarray([0.0, *ends]))[warmup:]
    return {"steps": n, "first_step_s": round(ends[0], 3), "epoch_s": round(ends[-1], 3),
            "steady_steps_per_s": steady, "steady_triplets_per_s": steady * bs,
            "median_step_s": float(np.median(step_times)), "epoch_steps_per_s": n / ends[-1],
            # CPU seconds of the training process per steady step (all its threads): insensitive to other jobs
            "cpu_s_per_step": (cpu[-1] - cpu[warmup - 1]) / (n - warmup)}


def main(argv=None) -> dict:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--config", default=os.path.join(REPO, "configs", "demo.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "ray-sbir-bench", "train_loop"))
    p.add_argument("--steps", type=int, default=40, help="training steps per run (one Ray Train epoch)")
    p.add_argument("--warmup", type=int, default=8, help="first steps left out of the steady-state rate")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds of the three runs")
    p.add_argument("--num-cpus", type=int, default=3, help="logical CPUs of the local Ray cluster (1 to the worker)")
    p.add_argument("--loader-workers", type=int, default=1, help="DataLoader processes of plain_loader")
    p.add_argument("--prefetch", type=int, default=2, help="DataLoader prefetch_factor (batches per worker)")
    p.add_argument("--classes", type=int, default=36, help="doodle classes to generate")
    p.add_argument("--per-class", type=int, default=60, help="sketches and photos per class")
    p.add_argument("--channels-last", action="store_true",
                   help="both sides: to_model_input output made channels_last (the proposed library change)")
    p.add_argument("--profile-cpu", action="store_true",
                   help="sample the CPU time of every process of the run and attribute the steady window's")
    args = parse_args(p, argv, tiny={"config": os.path.join(REPO, "configs", "tiny.yaml"), "out": None, "steps": 4,
                                     "warmup": 1, "num_cpus": 2, "loader_workers": 0, "classes": 6, "per_class": 4})
    args.out = args.out or tiny_workdir("bench_train_loop")
    setup_logging()  # the Ray Train run's own lines (run folder, epoch summary)
    if args.channels_last:  # the plain loops run here; the Ray Train worker patches its own copy (timed_loop)
        training_step.to_model_input = channels_last(training_step.to_model_input)
    if args.warmup >= args.steps - 1:
        p.error("--warmup must be well below --steps")

    data = ensure_doodles(os.path.join(args.out, f"doodles_{args.classes}x{args.per_class}"), classes=args.classes,
                          per_class=args.per_class)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = [f"data.root={data}", f"train.storage_path={os.path.join(args.out, 'runs')}", "train.epochs=1",
            "train.validate=false", "train.max_steps_per_epoch=null", *args.overrides]
    cfg0 = load_config(args.config, base)
    bs = cfg0.train.batch_size
    base.append(f"data.triplets_per_epoch={args.steps * bs}")
    # The resolved config, as train() hands it to its worker (the plain loops use it too).
    cfg0 = load_config(args.config, base)
    cfg0 = task_class(cfg0.train.task).prepare_config(cfg0)
    threads = cfg0.train.torch_threads or cfg0.train.cpus_per_worker
    plan = plan_dataset(cfg0)
    env = environment(torch_threads=threads, model=cfg0.model.sketch.backbone, image_size=cfg0.model.sketch.image_size,
                      batch_size=bs, train_classes=len(plan.split.train), num_cpus=args.num_cpus,
                      channels_last=args.channels_last)
    print(f"{env}", flush=True)

    ray = start_ray(args.num_cpus, 512)

    runs: dict[str, list[dict]] = {"plain_loader": [], "ray_train": [], "plain_predecoded": []}
    sampler = CpuSampler() if args.profile_cpu else None
    try:
        for r in range(args.rounds):
            builder, batches, _ = anchor_batches(plan, cfg0, args.steps, seed=cfg0.data.seed + r)

            def loader_iter():
                return iter(torch.utils.data.DataLoader(
                    AnchorBatches(builder, batches), batch_size=None, num_workers=args.loader_workers,
                    multiprocessing_context="spawn" if args.loader_workers else None,
                    prefetch_factor=args.prefetch if args.loader_workers else None))

            t0 = time.time()
            res = plain_loop(cfg0, plan, loader_iter, args.steps)
            res["wall_s"] = time.time() - t0
            runs["plain_loader"].append(res)
            print(f"round {r} plain_loader: {summarise(res, args.warmup, bs)}", flush=True)

            cfg = load_config(args.config, [*base, f"train.name=bench_train_loop_{stamp}_r{r}"])
            res = ray_train_run(cfg, plan, os.path.join(args.out, f"stamps_{stamp}_r{r}.json"), args.steps,
                                args.channels_last)
            runs["ray_train"].append(res)
            print(f"round {r} ray_train: {summarise(res, args.warmup, bs)} "
                  f"(Ray Train metric: {res['epoch_triplets_per_second']} triplets/s over the epoch, "
                  f"trainer.fit {res['wall_s']:.1f}s)", flush=True)

            torch.set_num_threads(1)
            t0 = time.time()
            decoded = [as_delivered(builder(b)) for b in batches]
            decode_s = time.time() - t0
            res = plain_loop(cfg0, plan, lambda: iter(decoded), args.steps)
            res["wall_s"] = time.time() - t0
            res["decode_s"] = decode_s
            runs["plain_predecoded"].append(res)
            print(f"round {r} plain_predecoded: {summarise(res, args.warmup, bs)} "
                  f"(decoding {args.steps * bs} triplets on 1 thread took {decode_s:.1f}s = "
                  f"{args.steps * bs / decode_s:.0f} triplets/s)", flush=True)
    finally:
        if sampler is not None:
            sampler.stop()
        ray.shutdown()
    finish_environment(env)
    cpu = None
    if sampler is not None:
        cpu = {name: [cpu_window(sampler, x, args.warmup) for x in rs] for name, rs in runs.items()}

    summ = {name: [summarise(x, args.warmup, bs) for x in rs] for name, rs in runs.items()}
    med = {name: statistics.median(s["steady_steps_per_s"] for s in ss) for name, ss in summ.items()}
    med_step = {name: statistics.median(s["median_step_s"] for s in ss) for name, ss in summ.items()}
    med_epoch = {name: statistics.median(s["epoch_steps_per_s"] for s in ss) for name, ss in summ.items()}
    med_cpu = {name: statistics.median(s["cpu_s_per_step"] for s in ss) for name, ss in summ.items()}
    res = {"command": command_line(__file__, argv),
           "env": env, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "summary": summ,
           "steady_steps_per_s": med, "median_step_s": med_step, "epoch_steps_per_s": med_epoch,
           "cpu_s_per_step": med_cpu, "cpu_by_process_in_steady_window": cpu,
           "ray_train_wall_s": [x["wall_s"] for x in runs["ray_train"]],
           "ray_train_epoch_triplets_per_s": [x["epoch_triplets_per_second"] for x in runs["ray_train"]]}
    res["ratio_vs_loader"] = med["ray_train"] / med["plain_loader"]
    res["ratio_vs_predecoded"] = med["ray_train"] / med["plain_predecoded"]
    res["ratio_median_step_vs_loader"] = med_step["plain_loader"] / med_step["ray_train"]
    res["ratio_epoch_vs_loader"] = med_epoch["ray_train"] / med_epoch["plain_loader"]
    res["ratio_cpu_vs_loader"] = med_cpu["plain_loader"] / med_cpu["ray_train"]

    print("\n=== results ===")
    print(f"{env}")
    print(f"steady-state steps/s (steps {args.warmup + 1}..{args.steps}, median of {args.rounds} round(s)): "
          + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    print("median step time (s): " + ", ".join(f"{k} {v:.3f}" for k, v in med_step.items()))
    print("training-process CPU s per steady step: " + ", ".join(f"{k} {v:.3f}" for k, v in med_cpu.items()))
    print("whole-epoch steps/s incl. first batch (loader / Ray Data startup): "
          + ", ".join(f"{k} {v:.3f}" for k, v in med_epoch.items()))
    print(f"ray_train / plain = {res['ratio_vs_loader']:.3f}  (target >= 0.85; plain = plain_loader, "
          f"steady-state steps/s)")
    print(f"ray_train / plain_predecoded = {res['ratio_vs_predecoded']:.3f}  (compute-only ceiling)")
    print(f"ray_train / plain by median step time = {res['ratio_median_step_vs_loader']:.3f}; "
          f"by CPU s per step = {res['ratio_cpu_vs_loader']:.3f}; "
          f"whole epoch incl. startup = {res['ratio_epoch_vs_loader']:.3f}")
    if cpu is not None:
        print("CPU seconds by process kind in the steady window (steps "
              f"{args.warmup + 1}..{args.steps}; '(window s)' = its wall length):")
        for name, ws in cpu.items():
            for i, w in enumerate(ws):
                print(f"  {name} round {i}: {w}")
    print(f"loadavg start {env['loadavg_start']} end {env['loadavg_end']}")
    write_result(args, res)
    return res


if __name__ == "__main__":
    main()
