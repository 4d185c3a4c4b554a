"""Training with Ray Train (``TorchTrainer``), fed by Ray Data.

The driver builds the catalog, the zero-shot class split and the class word vectors, then hands Ray Train a
triplet dataset (re-drawn every epoch) and the validation galleries. Each worker runs
:func:`train_loop_per_worker`: DDP through Ray Train, mixed precision on CUDA, one checkpoint per epoch
reported with ``ray.train.report`` (the best by validation mAP is kept), and resumption from the latest
checkpoint when Ray Train restarts the workers or the run is started again with the same name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import ray
import ray.train
import torch
import torch.nn as nn
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ray_sbir import fs
from ray_sbir.checkpoint import CheckpointMeta, read_state, write_checkpoint
from ray_sbir.config import Config, config_from_dict, save_config
from ray_sbir.data.catalog import Catalog, build_catalog
from ray_sbir.data.decode import RenderSpec
from ray_sbir.data.images import BadItemsError, to_model_input
from ray_sbir.data.splits import ZeroShotSplit, load_unseen_classes, make_zero_shot_split
from ray_sbir.losses import DoodleToSearchLoss
from ray_sbir.metrics import retrieval_metrics
from ray_sbir.models import create_model
from ray_sbir.pipeline import decoded_dataset, find_bad_items, triplet_dataset
from ray_sbir.semantics import class_vectors, load_word_vectors, semantic_similarity


@dataclass
class DatasetPlan:
    """Everything the driver derives from the config before training: shared by train/embed/evaluate."""

    catalog: Catalog
    split: ZeroShotSplit

    def items(self, classes: list[str], modality: str) -> Catalog:
        return self.catalog.select(modality=modality, labels=classes)


def plan_dataset(cfg: Config) -> DatasetPlan:
    d = cfg.data
    catalog = build_catalog(d.root, d.layout, d.manifest, strict=d.strict).limit_per_class(d.max_per_class)
    if catalog.errors:
        print(f"[ray-sbir] {len(catalog.errors)} malformed record(s) skipped while cataloguing {d.root}; first: "
              f"{catalog.errors[0]}", flush=True)
    unseen_spec = fs.join(d.root, "unseen_classes.txt") if d.unseen == "root" else d.unseen
    unseen = load_unseen_classes(unseen_spec, catalog.classes, seed=d.seed)
    val = int(d.val_classes) if d.val_classes >= 1 else d.val_classes
    split = make_zero_shot_split(catalog.classes, unseen, val_classes=val, seed=d.seed)
    return DatasetPlan(catalog, split)


def load_class_vectors(cfg: Config, classes: list[str]) -> np.ndarray:
    uri = cfg.data.word_vectors or fs.join(cfg.data.root, "class_vectors.txt")
    vectors = load_word_vectors(uri, cfg.data.word_vectors_format)
    phrase_map = None
    if cfg.data.phrase_map:
        from ray_sbir.semantics import load_phrase_map

        phrase_map = load_phrase_map(cfg.data.phrase_map)
    return class_vectors(classes, vectors, vectors_name=uri, phrase_map=phrase_map)


def render_spec(cfg: Config) -> RenderSpec:
    return RenderSpec(cfg.data.image_size, cfg.data.line_width, cfg.data.padding)


# ----------------------------------------------------------------------------------------------- worker side


class TrainStep(nn.Module):
    """Model + loss in one module, so a single DDP wrapper synchronises the encoders and the loss heads."""

    def __init__(self, model: nn.Module, criterion: DoodleToSearchLoss):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, sketch, positive, negative, labels, negative_labels, progress: float):
        s = self.model.sketch_encoder(sketch)
        p = self.model.photo_encoder(torch.cat([positive, negative]))
        pos, neg = p[: len(positive)], p[len(positive):]
        return self.criterion(s, pos, neg, labels, negative_labels, progress)


def _param_groups(model: nn.Module, criterion: nn.Module, cfg: Config) -> list[dict]:
    backbone, heads = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if ".backbone." in f".{name}" else heads).append(p)
    heads += [p for p in criterion.parameters() if p.requires_grad]
    lr, mult = cfg.train.lr, cfg.train.backbone_lr_mult
    return [{"params": backbone, "lr": lr * mult, "base_lr": lr * mult}, {"params": heads, "lr": lr, "base_lr": lr}]


def _set_lr(optimizer: torch.optim.Optimizer, progress: float) -> None:
    # Cosine decay from the base rate: a pure function of progress, so resuming needs no scheduler state.
    factor = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * max(factor, 0.02)


@torch.no_grad()
def embed_iterator(encoder: nn.Module, iterator, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Embed every row of a decoded-dataset iterator; rows with a decode error are left out."""
    embs, labels = [], []
    for batch in iterator.iter_batches(batch_size=batch_size, batch_format="numpy"):
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        if not ok.any():
            continue
        x = to_model_input(torch.from_numpy(np.ascontiguousarray(batch["image"][ok])), device)
        embs.append(encoder(x).float().cpu().numpy())
        labels.extend(np.asarray(batch["label"])[ok].tolist())
    if not embs:
        return np.zeros((0, 0), np.float32), np.array([])
    return np.concatenate(embs), np.array(labels)


def train_loop_per_worker(loop_config: dict) -> None:
    cfg = config_from_dict(loop_config["config"])
    classes: list[str] = loop_config["classes"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.train.torch_threads or cfg.train.cpus_per_worker)
    torch.manual_seed(cfg.train.seed)  # same init on every rank; DDP also broadcasts rank 0's weights
    device = ray.train.torch.get_device()

    model = create_model(cfg.model)
    vectors = loop_config.get("class_vectors")
    criterion = DoodleToSearchLoss(cfg.loss, cfg.model.embed_dim,
                                   None if vectors is None else torch.as_tensor(vectors))
    step_module = TrainStep(model, criterion)
    optimizer = torch.optim.AdamW(_param_groups(model, criterion, cfg), weight_decay=cfg.train.weight_decay)
    use_amp = cfg.train.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    start_epoch, best = 0, {"val_map": -1.0, "epoch": -1}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = read_state(folder)
            meta = fs.read_text(fs.join(folder, "meta.json"))
        model.load_state_dict(state["model"])
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        meta = json.loads(meta)
        start_epoch = meta["epoch"] + 1
        best = meta["metrics"].get("best", best)
        if rank == 0:
            print(f"[ray-sbir] resuming from checkpoint of epoch {meta['epoch']} -> starting epoch {start_epoch}",
                  flush=True)

    step_module = ray.train.torch.prepare_model(step_module)
    raw_model = model  # un-wrapped encoders for validation and checkpoints

    train_shard = ray.train.get_dataset_shard("train")
    steps_per_epoch = max(1, loop_config["triplets_per_epoch"] // (cfg.train.batch_size * world))
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.train.epochs

    for epoch in range(start_epoch, cfg.train.epochs):
        step_module.train()
        t0, n_seen, sums = time.time(), 0, {}
        step = 0
        for batch in train_shard.iter_torch_batches(batch_size=cfg.train.batch_size, drop_last=True,
                                                    dtypes=None, device="cpu"):
            if step >= steps_per_epoch:
                break  # keep every rank at the same step count (DDP all-reduces every step)
            progress = (epoch * steps_per_epoch + step) / total_steps
            _set_lr(optimizer, progress)
            sketch = to_model_input(batch["sketch"], device)
            positive = to_model_input(batch["positive"], device)
            negative = to_model_input(batch["negative"], device)
            labels = batch["label"].to(device)
            neg_labels = batch["negative_label"].to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                terms = step_module(sketch, positive, negative, labels, neg_labels, progress)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_seen += len(sketch)
            step += 1
            if rank == 0 and cfg.train.log_every and step % cfg.train.log_every == 0:
                print(f"[ray-sbir] epoch {epoch + 1}/{cfg.train.epochs} step {step}/{steps_per_epoch} "
                      f"loss {sums['loss'] / step:.4f} ({n_seen / (time.time() - t0):.1f} triplets/s/worker)",
                      flush=True)
        metrics = {f"train_{k}": v / max(step, 1) for k, v in sums.items()}
        metrics.update(epoch=epoch, steps=step, epoch_seconds=time.time() - t0,
                       triplets_per_second=n_seen * world / max(time.time() - t0, 1e-9))

        if rank == 0 and cfg.train.validate and loop_config.get("validate"):
            raw_model.eval()
            q, ql = embed_iterator(raw_model.sketch_encoder, ray.train.get_dataset_shard("val_sketch"), 128, device)
            g, gl = embed_iterator(raw_model.photo_encoder, ray.train.get_dataset_shard("val_photo"), 128, device)
            val = retrieval_metrics(q, ql, g, gl, ks=tuple(cfg.eval.ks), map_ks=tuple(cfg.eval.map_ks),
                                    chunk_size=cfg.eval.chunk_size)
            metrics["val_map"] = float(val.map_all)
            for k, v in val.precision_at.items():
                metrics[f"val_precision@{k}"] = float(v)
        if rank == 0:
            # The score Ray Train keeps the best checkpoint by: validation mAP, or the epoch without validation.
            metrics.setdefault("val_map", float("nan"))
            metrics["score"] = metrics["val_map"] if not math.isnan(metrics["val_map"]) else float(epoch)
            if metrics["score"] > best["val_map"]:
                best = {"val_map": metrics["score"], "epoch": epoch}
            metrics["best"] = best
            print(f"[ray-sbir] epoch {epoch + 1}/{cfg.train.epochs} done in {metrics['epoch_seconds']:.0f}s: "
                  + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)), flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                write_checkpoint(tmp, model=raw_model, criterion=criterion, optimizer=optimizer,
                                 scaler=scaler if scaler.is_enabled() else None,
                                 meta=CheckpointMeta(epoch=epoch, config=cfg, classes=classes, metrics=metrics))
                ray.train.report({k: v for k, v in metrics.items() if k != "best"},
                                 checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=f"checkpoint_epoch_{epoch:04d}")
        else:
            ray.train.report({"epoch": epoch}, checkpoint=None)


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


def check_training_data(cfg: Config, plan: DatasetPlan, spec: RenderSpec, run_dir: str) -> DatasetPlan:
    """Write the run's bad-data report (``data_report.json``: malformed source records and undecodable items)
    and return the plan without the undecodable items; with ``data.strict``, raise instead of skipping."""
    used = plan.catalog.select(labels=plan.split.train + plan.split.val)
    bad = find_bad_items(used, spec) if cfg.data.check_items else []
    report = {"items_checked": len(used) if cfg.data.check_items else 0,
              "malformed_records": list(plan.catalog.errors), "undecodable_items": bad,
              "skipped": len(plan.catalog.errors) + len(bad)}
    fs.write_text(fs.join(run_dir, DATA_REPORT), json.dumps(report, indent=2))
    if bad:
        print(f"[ray-sbir] {len(bad)} undecodable item(s) left out of training (listed in "
              f"{fs.join(run_dir, DATA_REPORT)}); first: {bad[0]['error']}", flush=True)
        if cfg.data.strict:
            raise BadItemsError(f"{len(bad)} training item(s) cannot be decoded (data.strict is set); first: "
                                f"{bad[0]['error']}; all listed in {fs.join(run_dir, DATA_REPORT)}")
    return DatasetPlan(plan.catalog.exclude(b["item_id"] for b in bad), plan.split)


def train(cfg: Config, plan: DatasetPlan | None = None) -> TrainResult:
    """Train on the seen (train) classes with Ray Train; returns the run's checkpoints and final metrics."""
    plan = plan or plan_dataset(cfg)
    classes = plan.split.train
    spec = render_spec(cfg)
    run_dir = fs.join(cfg.train.storage_path, cfg.train.name)
    plan = check_training_data(cfg, plan, spec, run_dir)
    anchors = plan.items(classes, "sketch")
    photos = plan.items(classes, "photo")
    vectors = load_class_vectors(cfg, classes) if cfg.loss.semantic_weight > 0 else None
    similarity = None
    if cfg.loss.negative_sampling == "semantic":
        sim_vectors = vectors if vectors is not None else load_class_vectors(cfg, classes)
        similarity = semantic_similarity(sim_vectors)
    elif cfg.loss.negative_sampling != "uniform":
        raise ValueError(f"unknown loss.negative_sampling {cfg.loss.negative_sampling!r}; expected uniform or semantic")
    triplets_per_epoch = cfg.data.triplets_per_epoch or len(anchors)
    datasets = {"train": triplet_dataset(anchors, photos, classes, spec, seed=cfg.data.seed, augment=cfg.data.augment,
                                         triplets_per_epoch=triplets_per_epoch, class_similarity=similarity,
                                         temperature=cfg.loss.negative_temperature)}
    validate = cfg.train.validate and bool(plan.split.val)
    if validate:
        datasets["val_sketch"] = decoded_dataset(plan.items(plan.split.val, "sketch"), "sketch", spec)
        datasets["val_photo"] = decoded_dataset(plan.items(plan.split.val, "photo"), "photo", spec)

    storage_fs, storage_path = fs.pyarrow_filesystem(cfg.train.storage_path)
    save_config(cfg, fs.join(run_dir, "config.yaml"))
    fs.write_text(fs.join(run_dir, "split.json"), json.dumps(plan.split.to_dict(), indent=2))

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "classes": classes, "class_vectors": vectors,
                           "triplets_per_epoch": triplets_per_epoch, "validate": validate},
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


def init_ray(num_cpus: int | None = None, object_store_memory: int | None = None, address: str | None = None) -> None:
    """Connect to a cluster (``address`` or ``RAY_ADDRESS``) or start a small local one."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
                 log_to_driver=True)
    quiet_data_progress()


def quiet_data_progress() -> None:
    """Ray Data's per-operator progress bars interleave badly with training logs on a terminal; our own
    per-step / per-epoch lines report progress instead."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
