"""Starting or joining a Ray cluster, and keeping Ray's own console chatter out of ours.

Every entry point that needs Ray (``ray-sbir`` subcommands, ``jobs/``, the demo, the benches) starts it here, so a
job that only indexes or embeds does not import Ray Train. Device choice is not Ray's business: it is
:func:`ray_sbir.models.base.device_for`, shared with Serve's replicas.
"""

from __future__ import annotations

import logging
import os

import ray

from ray_sbir.logs import ray_runtime_env

__all__ = ["init_ray", "quiet_data_progress", "ray_train_logging"]


def _verbose() -> bool:
    return logging.getLogger("ray_sbir").isEnabledFor(logging.DEBUG)


PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def init_ray(num_cpus: int | None = None, object_store_memory: int | None = None, address: str | None = None) -> None:
    """Connect to a cluster (``address`` or ``RAY_ADDRESS``) or start a small local one."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Every worker process of the job sets up logging as this driver did (ray_sbir.logs).
    kw = {"runtime_env": ray_runtime_env(), "logging_level": logging.INFO if _verbose() else logging.WARNING}
    if address:
        ray.init(address=address, **kw)
    else:
        # A private one-node cluster is never drained by an autoscaler or a cloud: Ray Train's preemption watcher
        # (an actor per run) has nothing to watch there, and its start prints a C++ error line about its
        # restartable constructor arguments in every run. Clusters joined by address keep it.
        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
                 log_to_driver=True, **kw)
    quiet_data_progress()


def quiet_data_progress() -> None:
    """Ray Data's per-operator progress bars interleave badly with training logs on a terminal; our own
    per-step / per-epoch lines report progress instead."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def ray_train_logging() -> dict:
    """``TorchTrainer`` keyword arguments: Ray Train's own console lines (resources requested, each report, ...)
    only with --verbose."""
    import ray.train

    if not hasattr(ray.train, "LoggingConfig"):  # Ray < 2.5x
        return {}
    return {"logging_config": ray.train.LoggingConfig(log_level="INFO" if _verbose() else "WARNING")}

