"""Logging for the library, the CLI and Ray workers.

Library modules log through ``logging.getLogger(__name__)`` (all under ``ray_sbir``) and never print. The CLI
calls :func:`setup_logging` once: one handler on the ``ray_sbir`` logger (not propagated, so nothing is
printed twice), and, unless ``verbose``, Ray's own noise kept out of the run: its deprecation and future
warnings and its internal controller chatter (for example "Failed to query Ray Train Controller actor
state", a transient State API miss that Ray itself retries). Ray worker processes get the same setup through
``runtime_env={"worker_process_setup_hook": ...}`` (:func:`ray_runtime_env`), so a training worker's lines reach
the driver once, prefixed by Ray with the worker's name.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings

LOGGER = "ray_sbir"
FORMAT = "[ray-sbir %(asctime)s %(levelname)s] %(message)s"
VERBOSE_ENV = "RAY_SBIR_VERBOSE"
# RAY_SBIR_LOG_FORMAT=json: one JSON object per line (time, level, logger, message) for log collectors.
FORMAT_ENV = "RAY_SBIR_LOG_FORMAT"
# Ray loggers whose INFO/WARNING lines describe Ray's internals, not the user's run.
RAY_INTERNAL_LOGGERS = (
    "ray.train.v2._internal", "ray.data._internal", "ray.tune", "ray.train._internal", "ray.util.state",
    "ray._private.authentication",
)


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class JsonLines(logging.Formatter):
    """``{"time": ISO-8601, "level": ..., "logger": ..., "message": ...}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime
        import json

        out = {"time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    json_lines = os.environ.get(FORMAT_ENV, "").lower() == "json"
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    handler.set_name("ray_sbir")
    return handler


def setup_logging(verbose: bool | None = None) -> None:
    """Configure the driver (CLI, jobs, benches): idempotent. ``None``: from the environment."""
    if verbose is None:
        verbose = _verbose_env()
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"  # Ray workers started from here inherit it
    _configure(logging.DEBUG if verbose else logging.INFO, verbose)


def _verbose_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _configure(level: int, verbose: bool) -> None:
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(h.get_name() == "ray_sbir" for h in logger.handlers):
        logger.addHandler(_handler())
    logger.propagate = False  # our handler prints each line; the root logger's would print it again
    if not verbose:
        quiet_ray()


def quiet_ray() -> None:
    """Keep Ray's deprecation warnings and internal chatter out of a normal run: Ray's INFO lines go, its
    warnings stay, except from the internal loggers above (errors still show)."""
    logging.getLogger("ray").setLevel(logging.WARNING)
    for name in RAY_INTERNAL_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Ray Train's per-report line comes from a logger named by its file path, not under "ray"; find_spec locates
    # the package without importing Ray (this module is part of the plain library).
    spec = importlib.util.find_spec("ray")
    if spec is not None and spec.origin:
        report_logger = os.path.join(os.path.dirname(spec.origin), "train", "v2", "_internal", "execution",
                                     "context.py")
        logging.getLogger(report_logger).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
    warnings.filterwarnings("ignore", message=r".*[Dd]eprecat.*", module=r"ray(\.|$)")


def setup_worker_logging(level: int | None = None) -> None:
    """In a Ray worker process: our lines to stderr once (Ray forwards them to the driver)."""
    verbose = _verbose_env()
    _configure(level if level is not None else (logging.DEBUG if verbose else logging.INFO), verbose)


def worker_process_setup() -> None:
    """Ray's ``worker_process_setup_hook``: runs in every worker process of a job we start."""
    setup_worker_logging()


def ray_runtime_env() -> dict:
    return {"worker_process_setup_hook": "ray_sbir.logs.worker_process_setup",
            "env_vars": {VERBOSE_ENV: os.environ.get(VERBOSE_ENV, "0"), FORMAT_ENV: os.environ.get(FORMAT_ENV, "")}}


class Progress:
    """Progress lines of long work with rate and ETA: ``what 5/20 (25%), 3.1 units/s, ETA 4m50s``.

    Lines are logged at most every ``every_s`` seconds (and always on the last step)."""

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str = "items", every_s: float = 10.0):
        import time

        self._time = time.monotonic
        self.logger, self.what, self.total, self.unit, self.every_s = logger, what, max(total, 0), unit, every_s
        self.t0 = self._time()
        self._last = self.t0 - every_s

    def update(self, done: int, detail: str = "") -> None:
        now = self._time()
        if now - self._last < self.every_s and done < self.total:
            return
        self._last = now
        elapsed = max(now - self.t0, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        pct = 100.0 * done / self.total if self.total else 100.0
        eta_text = format_seconds(eta) if eta == eta else "?"
        self.logger.info("%s %d/%d (%.0f%%), %.1f %s/s, ETA %s%s", self.what, done, self.total, pct, rate, self.unit,
                         eta_text, f"; {detail}" if detail else "")
