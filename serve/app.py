"""Ray Serve entry points for ray-sbir (all logic lives in :mod:`ray_sbir.serving`).

    serve run serve.app:app                                   # the latest demo run (demo_out/)
    serve run serve.app:build checkpoint=<ckpt> index=<index> num_shards=2
    serve deploy serve/config.yaml                            # ray_sbir.serving:build with the file's args

``app`` is built at import time from ``RAY_SBIR_CHECKPOINT`` / ``RAY_SBIR_INDEX`` / ``RAY_SBIR_SHARDS`` when set,
else from the demo run in ``RAY_SBIR_DEMO_OUT`` (default ``demo_out``).
"""

from __future__ import annotations

import os

from ray_sbir.serving import build as build_serving_app


def build(args: dict):
    """Application builder: Serve passes the config file's ``args`` (or ``key=value`` from ``serve run``)."""
    return build_serving_app(args)


def _env_args() -> dict:
    args: dict = {}
    if os.environ.get("RAY_SBIR_CHECKPOINT"):
        args["checkpoint"] = os.environ["RAY_SBIR_CHECKPOINT"]
    if os.environ.get("RAY_SBIR_INDEX"):
        args["index"] = os.environ["RAY_SBIR_INDEX"]
    if os.environ.get("RAY_SBIR_SHARDS"):
        args["num_shards"] = int(os.environ["RAY_SBIR_SHARDS"])
    if os.environ.get("RAY_SBIR_DEMO_OUT"):
        args["demo_out"] = os.environ["RAY_SBIR_DEMO_OUT"]
    return args


def __getattr__(name: str):
    # Built lazily, on `serve run serve.app:app`: importing `build` must not need a demo run.
    if name == "app":
        return build(_env_args())
    raise AttributeError(name)
