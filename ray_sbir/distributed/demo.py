"""The end-to-end demo on the embedded benchmark: generate -> train (Ray Train) -> embed (Ray Data) -> evaluate.

It scores the untrained encoder (pretrained backbone, no SBIR training) and the trained model on the same
unseen classes in the same run, side by side (the CLI prints the table).
"""

from __future__ import annotations

import json
import logging
import time

from ray_sbir import fs
from ray_sbir.config import Config
from ray_sbir.data.doodles import make_doodles
from ray_sbir.distributed.embed import UNTRAINED, ModelSource
from ray_sbir.distributed.evaluate import evaluate, write_pr_curves
from ray_sbir.data.plan import plan_dataset
from ray_sbir.distributed.runtime import init_ray
from ray_sbir.distributed.train import train

logger = logging.getLogger(__name__)
_log = logger.info


def format_table(rows: dict[str, dict[str, float]]) -> str:
    metrics = list(next(iter(rows.values())).keys())
    width = max(len(n) for n in rows) + 2
    lines = [" " * width + "".join(f"{m:>12}" for m in metrics)]
    for name, vals in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f"{vals[m]:>12.4f}" for m in metrics))
    return "\n".join(lines)


def run_demo(cfg: Config, out_dir: str, *, sketches_per_class: int = 60, photos_per_class: int = 60,
             num_cpus: int | None = 3, object_store_memory: int | None = 512 * 1024**2,
             address: str | None = None, dashboard: str | None = None) -> dict:
    """Generate (once), train, embed and evaluate under ``out_dir``: on the cluster at ``address`` (or
    ``RAY_ADDRESS``; ``out_dir`` must then be storage every node reads, e.g. ``s3://``), else a local one (with
    Ray's dashboard at ``dashboard``, ``HOST:PORT``, when given)."""
    t0 = time.time()
    data_root = fs.join(out_dir, "doodles")
    if not fs.exists(fs.join(data_root, "unseen_classes.txt")):
        _log(f"generating the embedded doodle benchmark in {data_root}")
        make_doodles(data_root, sketches_per_class=sketches_per_class, photos_per_class=photos_per_class,
                     seed=cfg.data.seed)
    cfg.data.root = data_root
    cfg.train.storage_path = fs.join(out_dir, "runs")
    init_ray(num_cpus=num_cpus, object_store_memory=object_store_memory, address=address, dashboard=dashboard)
    plan = plan_dataset(cfg)
    s = plan.split
    _log(f"classes: {len(s.train)} train, {len(s.val)} validation, {len(s.unseen)} unseen: {', '.join(s.unseen)}")
    eval_dir = fs.join(out_dir, "eval")

    _log("evaluating the untrained encoder (pretrained backbone, no SBIR training) on the unseen classes")
    untrained = evaluate(cfg, ModelSource(UNTRAINED, cfg.model, cfg.train.seed), eval_dir, name="untrained", plan=plan)
    _log(f"untrained: {untrained.summary()}")

    _log(f"training with Ray Train: {cfg.train.num_workers} worker(s), {cfg.train.epochs} epoch(s)")
    result = train(cfg, plan)
    _log(f"best checkpoint: {result.best_checkpoint}")

    _log("evaluating the trained model on the unseen classes")
    trained = evaluate(cfg, ModelSource(result.best_checkpoint), eval_dir, name="trained", plan=plan)
    pr_uri = write_pr_curves([untrained, trained], fs.join(eval_dir, "pr_curve.png"))
    rows = {"untrained encoder": untrained.summary(), "trained (Doodle to Search)": trained.summary()}
    summary = {
        "unseen_classes": s.unseen, "table": rows, "best_checkpoint": result.best_checkpoint,
        "retrieval_grid_untrained": untrained.grid_uri, "retrieval_grid_trained": trained.grid_uri,
        "pr_curve": pr_uri, "reports": [untrained.report_uri, trained.report_uri], "seconds": time.time() - t0,
    }
    fs.write_text(fs.join(out_dir, "demo_summary.json"), json.dumps(summary, indent=2))
    return summary


def summary_text(summary: dict, out_dir: str) -> str:
    """What ``ray-sbir demo`` prints at the end: the table and where the figures are."""
    return (f"\nZero-shot SBIR on the unseen doodle classes ({', '.join(summary['unseen_classes'])}):\n"
            f"{format_table(summary['table'])}\n\n"
            f"retrieval grid (trained): {summary['retrieval_grid_trained']}\n"
            f"retrieval grid (untrained): {summary['retrieval_grid_untrained']}\n"
            f"precision-recall curves: {summary['pr_curve']}\n"
            f"summary: {fs.join(out_dir, 'demo_summary.json')}\ntotal time: {summary['seconds']:.0f}s")
