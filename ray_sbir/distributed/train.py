"""Training with Ray Train (``TorchTrainer``), fed by Ray Data.

The driver resolves the task (``train.task``, ``ray_sbir.training``), builds the catalog, the zero-shot class
split and the class word vectors, then hands Ray Train a triplet dataset (re-drawn every epoch) and the
validation galleries. Each worker runs :func:`train_loop_per_worker`, a thin loop over the plain functions of
``ray_sbir.training.step``: DDP through Ray Train, mixed precision on CUDA, one checkpoint per epoch reported
with ``ray.train.report`` (the best by validation mAP is kept), and resumption from the latest checkpoint when
Ray Train restarts the workers or the run is started again with the same name.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from dataclasses import dataclass

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ray_sbir import fs
from ray_sbir.checkpoint import CheckpointMeta, read_state, write_checkpoint
from ray_sbir.config import Config, config_from_dict, save_config
from ray_sbir.data.samplers import create_sampler
from ray_sbir.data.decode import render_spec
from ray_sbir.data.images import BadItemsError
from ray_sbir.data.plan import DatasetPlan, load_class_vectors, plan_dataset
from ray_sbir.data.splits import ZeroShotSplit
from ray_sbir.logs import format_seconds, setup_worker_logging
from ray_sbir.distributed.datasets import decoded_dataset, find_bad_items, training_dataset
from ray_sbir.distributed.runtime import ray_train_logging
from ray_sbir.data.class_vectors import semantic_similarity
from ray_sbir.training import TaskContext, create_task, task_class
from ray_sbir.training.step import (
    EpochStats, Precision, batch_to_device, make_optimizer, train_step
)

logger = logging.getLogger(__name__)

__all__ = ["DatasetPlan", "TrainResult", "plan_dataset", "train"]

CURVES_FILE = "training_curves.png"


# ----------------------------------------------------------------------------------------------- worker side


def _restore(task, optimizer, precision: Precision) -> tuple[int, dict, list]:
    """Resume from Ray Train's latest checkpoint: ``(start epoch, best so far, per-epoch history)``."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, {"val_map": -1.0, "epoch": -1}, []
    with checkpoint.as_directory() as folder:
        state = read_state(folder)
        meta = json.loads(fs.read_text(fs.join(folder, "meta.json")))
    task.load_trainable_state(state)
    optimizer.load_state_dict(state["optimizer"])
    if "scaler" in state:
        precision.scaler.load_state_dict(state["scaler"])
    start = meta["epoch"] + 1
    if ray.train.get_context().get_world_rank() == 0:
        logger.info("resuming from checkpoint of epoch %d -> starting epoch %d", meta["epoch"], start)
    return start, meta["metrics"].get("best", {"val_map": -1.0, "epoch": -1}), meta["metrics"].get("history", [])


def _write_checkpoint(task, optimizer, precision: Precision, meta: CheckpointMeta, metrics: dict) -> None:
    state = {**task.trainable_state(), "optimizer": optimizer.state_dict()}
    if precision.scaler.is_enabled():
        state["scaler"] = precision.scaler.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(tmp, state, meta)
        ray.train.report({k: v for k, v in metrics.items() if k not in ("best", "history")},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"checkpoint_epoch_{meta.epoch:04d}")


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = config_from_dict(loop_config["config"])
    classes: list[str] = loop_config["classes"]
    setup_worker_logging(loop_config.get("log_level", logging.INFO))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.train.torch_threads or cfg.train.cpus_per_worker)
    torch.manual_seed(cfg.train.seed)  # same init on every rank; DDP also broadcasts rank 0's weights
    device = ray.train.torch.get_device()

    task = create_task(cfg, TaskContext(classes, loop_config.get("class_vectors")))
    inputs = task_class(cfg.train.task).inputs(cfg)
    optimizer = make_optimizer(task, cfg)
    precision = Precision.for_device(device, cfg.train.amp)
    start_epoch, best, history = _restore(task, optimizer, precision)
    step_module = ray.train.torch.prepare_model(task)

    train_shard = ray.train.get_dataset_shard("train")
    steps_per_epoch = max(1, loop_config["triplets_per_epoch"] // (cfg.train.batch_size * world))
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.train.epochs

    for epoch in range(start_epoch, cfg.train.epochs):
        task.train()
        stats = EpochStats(steps_per_epoch)
        for batch in train_shard.iter_torch_batches(batch_size=cfg.train.batch_size, drop_last=True,
                                                    dtypes=None, device="cpu"):
            if stats.done >= steps_per_epoch:
                break  # keep every rank at the same step count (DDP all-reduces every step)
            progress = (epoch * steps_per_epoch + stats.done) / total_steps
            terms = train_step(step_module, optimizer, precision, batch_to_device(batch, inputs, device), progress)
            stats.add(terms, len(batch["label"]))
            if rank == 0 and cfg.train.log_every and stats.done % cfg.train.log_every == 0:
                run_eta = stats.eta_seconds() + (cfg.train.epochs - epoch - 1) * stats.seconds * steps_per_epoch \
                    / stats.done
                logger.info("epoch %d/%d step %d/%d loss %.4f, %.1f triplets/s/worker, epoch ETA %s, run ETA %s",
                            epoch + 1, cfg.train.epochs, stats.done, steps_per_epoch, stats.means()["loss"],
                            stats.rate(), format_seconds(stats.eta_seconds()), format_seconds(run_eta))
        metrics = {f"train_{k}": v for k, v in stats.means().items()}
        metrics.update(epoch=epoch, steps=stats.done, epoch_seconds=stats.seconds,
                       triplets_per_second=stats.items * world / max(stats.seconds, 1e-9))
        if rank != 0:
            ray.train.report({"epoch": epoch}, checkpoint=None)
            continue
        if cfg.train.validate and loop_config.get("validate"):
            metrics.update(task.validate(
                ray.train.get_dataset_shard("val_sketch").iter_batches(batch_size=128, batch_format="numpy"),
                ray.train.get_dataset_shard("val_photo").iter_batches(batch_size=128, batch_format="numpy"),
                device, cfg))
        # The score Ray Train keeps the best checkpoint by: validation mAP, or the epoch without validation.
        metrics.setdefault("val_map", float("nan"))
        metrics["score"] = metrics["val_map"] if not math.isnan(metrics["val_map"]) else float(epoch)
        if metrics["score"] > best["val_map"]:
            best = {"val_map": metrics["score"], "epoch": epoch}
        history = [*history, {k: v for k, v in metrics.items() if isinstance(v, (int, float))}]
        metrics.update(best=best, history=history)
        logger.info("epoch %d/%d done in %s: %s%s", epoch + 1, cfg.train.epochs, format_seconds(stats.seconds),
                    ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)
                              and k != "epoch_seconds"),
                    "" if epoch + 1 == cfg.train.epochs else
                    f"; run ETA {format_seconds(stats.seconds * (cfg.train.epochs - epoch - 1))}")
        _write_training_curves(loop_config["run_dir"], history, cfg.train.task)
        _write_checkpoint(task, optimizer, precision,
                          CheckpointMeta(epoch=epoch, config=cfg, classes=classes, metrics=metrics), metrics)


def _write_training_curves(run_dir: str, history: list[dict], task: str) -> None:
    from ray_sbir.eval.figures import training_curves_png

    try:
        fs.write_bytes(fs.join(run_dir, CURVES_FILE), training_curves_png(history, f"{task}: loss terms and validation"))
    except OSError as e:  # a figure is never worth a failed epoch
        logger.warning("could not write %s: %s", fs.join(run_dir, CURVES_FILE), e)


# ------------------------------------------------------------------------------------------------ driver side


@dataclass
class TrainResult:
    run_dir: str
    latest_checkpoint: str
    best_checkpoint: str
    metrics: dict
    split: ZeroShotSplit


def _checkpoint_uri(checkpoint: ray.train.Checkpoint, storage_path: str) -> str:
    path = checkpoint.path
    if fs.is_remote(storage_path) and "://" not in path:
        return f"{storage_path.split('://', 1)[0]}://{path}"
    return path


DATA_REPORT = "data_report.json"


def check_training_data(cfg: Config, plan: DatasetPlan, run_dir: str) -> DatasetPlan:
    """Write the run's bad-data report (``data_report.json``: malformed source records and undecodable items)
    and return the plan without the undecodable items; with ``data.strict``, raise instead of skipping."""
    used = plan.catalog.select(labels=plan.split.train + plan.split.val)
    specs = {m: render_spec(cfg, m) for m in ("sketch", "photo")}
    bad = find_bad_items(used, specs) if cfg.data.check_items else []
    report = {"items_checked": len(used) if cfg.data.check_items else 0,
              "malformed_records": list(plan.catalog.errors), "undecodable_items": bad,
              "skipped": len(plan.catalog.errors) + len(bad)}
    fs.write_text(fs.join(run_dir, DATA_REPORT), json.dumps(report, indent=2))
    if bad:
        logger.warning("%d undecodable item(s) left out of training (listed in %s); first: %s", len(bad),
                       fs.join(run_dir, DATA_REPORT), bad[0]["error"])
        if cfg.data.strict:
            raise BadItemsError(f"{len(bad)} training item(s) cannot be decoded (data.strict is set); first: "
                                f"{bad[0]['error']}; all listed in {fs.join(run_dir, DATA_REPORT)}")
    return DatasetPlan(plan.catalog.exclude(b["item_id"] for b in bad), plan.split)


def train(cfg: Config, plan: DatasetPlan | None = None) -> TrainResult:
    """Train on the seen (train) classes with Ray Train; returns the run's checkpoints and final metrics.

    The task's resolved config (``Task.prepare_config``: a distilled model takes its teacher's photo side) is
    what the run's ``config.yaml`` and every checkpoint record."""
    task = task_class(cfg.train.task)
    cfg = task.prepare_config(cfg)
    plan = plan or plan_dataset(cfg)
    classes = plan.split.train
    run_dir = fs.join(cfg.train.storage_path, cfg.train.name)
    plan = check_training_data(cfg, plan, run_dir)
    anchors = plan.items(classes, "sketch")
    photos = plan.items(classes, "photo")
    vectors = load_class_vectors(cfg, classes) if task.needs_class_vectors(cfg) else None
    similarity = None
    if cfg.loss.negative_sampling == "semantic":
        similarity = semantic_similarity(vectors if vectors is not None else load_class_vectors(cfg, classes))
    inputs = task.inputs(cfg)
    triplets_per_epoch = cfg.data.triplets_per_epoch or len(anchors)
    datasets = {"train": training_dataset(create_sampler(cfg), anchors, photos, classes, inputs.sketches,
                                          inputs.photo_spec, seed=cfg.data.seed, augment=cfg.data.augment,
                                          items_per_epoch=triplets_per_epoch, class_similarity=similarity,
                                          temperature=cfg.loss.negative_temperature,
                                          start_epoch=checkpointed_epochs(run_dir))}
    validate = cfg.train.validate and bool(plan.split.val)
    if validate:
        for modality in ("sketch", "photo"):
            datasets[f"val_{modality}"] = decoded_dataset(plan.items(plan.split.val, modality), modality,
                                                          render_spec(cfg, modality))

    storage_fs, storage_path = fs.pyarrow_filesystem(cfg.train.storage_path)
    save_config(cfg, fs.join(run_dir, "config.yaml"))
    fs.write_text(fs.join(run_dir, "split.json"), json.dumps(plan.split.to_dict(), indent=2))
    logger.info("training %s (%s): %d classes, %d sketches, %d photos, %d triplets per epoch, %d worker(s); "
                "run folder %s", cfg.train.name, cfg.train.task, len(classes), len(anchors), len(photos),
                triplets_per_epoch, cfg.train.num_workers, run_dir)

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "classes": classes, "class_vectors": vectors,
                           "triplets_per_epoch": triplets_per_epoch, "validate": validate, "run_dir": run_dir,
                           "log_level": logging.getLogger("ray_sbir").getEffectiveLevel()},
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker={"CPU": cfg.train.cpus_per_worker}),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=cfg.train.name, storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep,
                                               checkpoint_score_attribute="score",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            **ray_train_logging(),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint (run {run_dir})")
    best = result.checkpoint
    if result.best_checkpoints:
        best = max(result.best_checkpoints, key=lambda cm: cm[1].get("score", -1))[0]
    return TrainResult(run_dir=run_dir, latest_checkpoint=_checkpoint_uri(result.checkpoint, cfg.train.storage_path),
                       best_checkpoint=_checkpoint_uri(best, cfg.train.storage_path),
                       metrics=dict(result.metrics or {}), split=plan.split)


def checkpointed_epochs(run_dir: str) -> int:
    """Epochs an earlier driver of this run completed (its newest ``checkpoint_epoch_<n>`` folder + 1; 0 for a
    new run): where Ray Train will resume it."""
    if not fs.exists(run_dir):
        return 0
    done = [int(m.group(1)) + 1 for d in fs.list_dirs(run_dir)
            if (m := re.fullmatch(r"checkpoint_epoch_(\d+)", d.rstrip("/").rsplit("/", 1)[-1]))]
    return max(done, default=0)

