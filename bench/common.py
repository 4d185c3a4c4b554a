"""What the benches share, in one place.

Every bench starts with ``from common import ...``: run as ``python bench/<script>.py``, ``bench/`` is
``sys.path[0]``; importing this module puts the repository first on ``sys.path`` and on ``PYTHONPATH`` (once,
here), so a bench and the processes it starts import ``ray_sbir`` (and the test helpers of ``tests/``) from
this checkout. The module imports nothing of
``ray_sbir`` at load time and can be imported from the tests as ``bench.common`` too.

- :func:`bench_parser` / :func:`parse_args`: the argument parser every bench starts from, with ``--tiny``
  (:func:`add_tiny`): a seconds-scale run (tiny arrays, one repetition, generated data, files in a temporary
  folder) that ``tests/bench`` runs for every bench, so a bench that no longer runs fails CI. Each bench
  passes the values ``--tiny`` stands for to :func:`parse_args`; options given on the command line still win.
- :func:`environment`: the machine and versions a result was measured with, the same keys in every bench.
- :func:`write_result`: the JSON ending (``--json PATH``, or another path), :func:`command_line` for the
  ``command`` field.
- timing: :func:`elapsed`, :func:`best_of`, :func:`pct`.
- :func:`start_ray`: a private local Ray cluster (``address="local"``: never someone else's).
- :func:`ensure_doodles`: the generated doodle dataset, made once per folder.
- :func:`tiny_workdir`: the temporary folder a ``--tiny`` run writes into (removed at exit).
- :func:`free_port`, :func:`start_moto`: loopback servers (an S3 server for the S3 benches).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
# ... and for the processes a bench starts (Ray's workers, which import ray_sbir before they see the driver's
# sys.path when a runtime_env setup hook names it; multiprocessing children), also when ray_sbir is not installed.
if REPO not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)

MiB = 1024**2
TINY_HELP = ("a seconds-scale run: tiny sizes, one repetition, generated data, output in a temporary folder "
             "(what tests/bench runs for every bench)")


# ------------------------------------------------------------------------------------------- arguments


def add_tiny(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``--tiny`` flag every bench takes."""
    p.add_argument("--tiny", action="store_true", help=TINY_HELP)
    return p


def bench_parser(doc: str | None, *, json_out: bool = False, json_help: str = "write the results here too"
                 ) -> argparse.ArgumentParser:
    """An argument parser whose help is the bench's docstring, with ``--tiny`` (and ``--json PATH`` if asked)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tiny(p)
    if json_out:
        p.add_argument("--json", default="", help=json_help)
    return p


def parse_args(p: argparse.ArgumentParser, argv: Sequence[str] | None = None, tiny: dict | None = None
               ) -> argparse.Namespace:
    """``p.parse_args(argv)``; under ``--tiny``, ``tiny`` (argument dest -> value) replaces the defaults, so
    an option given on the command line keeps its value."""
    args = p.parse_args(argv)
    if getattr(args, "tiny", False) and tiny:
        p.set_defaults(**tiny)
        args = p.parse_args(argv)
    return args


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """``python bench/<script> <args>``: how this run was started (the ``command`` field of a result)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    return " ".join(["python", f"bench/{os.path.basename(script)}", *args])


def tiny_workdir(prefix: str) -> str:
    """A fresh temporary folder (under ``$TMPDIR``) for a ``--tiny`` run's files, removed when the process
    exits: a tiny run never writes into the repository."""
    path = tempfile.mkdtemp(prefix=f"{prefix}_tiny_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------------------- environment


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(**extra: Any) -> dict:
    """The machine and versions a result was measured with, then the bench's own ``extra`` entries.

    ``loadavg_start`` is the load average now; :func:`finish_environment` adds ``loadavg_end``."""
    import torch  # its own version string carries the build (``+cpu``, ``+cu130``), the package metadata not

    env = {"python": platform.python_version(), "torch": torch.__version__, "ray": _version("ray"),
           "numpy": _version("numpy"), "cores": os.cpu_count(), "machine": platform.machine(),
           "cpu": platform.processor() or platform.machine(), "loadavg_start": os.getloadavg()}
    env.update(extra)
    return env


def finish_environment(env: dict) -> dict:
    env["loadavg_end"] = os.getloadavg()
    return env


# ------------------------------------------------------------------------------------------------ output


def write_result(args: argparse.Namespace | None, result: Any, *, path: str | None = None, indent: int | None = 2,
                 echo: bool = False) -> str:
    """The JSON ending of a bench: ``result`` as JSON (values JSON cannot hold written as ``str``) to ``path``
    (default: ``args.json``; nothing when neither is set), parent folders created; printed too with ``echo``.
    A ``scheme://`` path goes through :mod:`ray_sbir.fs`. Returns the text."""
    text = json.dumps(result, indent=indent, default=str)
    if echo:
        print(text, flush=True)
    path = path or getattr(args, "json", None)
    if path:
        if "://" in path:
            from ray_sbir import fs

            fs.write_text(path, text)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    return text


# ------------------------------------------------------------------------------------------------ timing


def elapsed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one ``fn()``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(fn: Callable[[], Any], repeats: int, *, warmup: bool = False,
            sync: Callable[[], Any] | None = None) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls of ``fn`` (the least disturbed on a shared machine) and the last
    output; ``warmup``: one untimed call first; ``sync`` (e.g. ``torch.cuda.synchronize``) ends each call."""
    out = None
    if warmup:
        out = fn()
        if sync:
            sync()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def pct(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``xs`` (NaN when empty)."""
    import numpy as np

    return float(np.percentile(np.asarray(xs), q)) if len(xs) else float("nan")


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if len(xs) else float("nan")


# --------------------------------------------------------------------------------------------- clusters


def start_ray(num_cpus: int, object_store_mb: int | None = None, *, log_to_driver: bool = True):
    """A private local Ray cluster, started as the CLI starts one (:func:`ray_sbir.distributed.runtime.init_ray`):
    a new one of our own even when ``RAY_ADDRESS`` points at another, no dashboard, no progress bars, its
    processes tagged so that :func:`stop_ray` ends them all. Returns the ``ray`` module."""
    import ray

    from ray_sbir.distributed.runtime import init_ray

    global _PRIVATE_CLUSTER
    store = object_store_mb * MiB if object_store_mb else None
    _PRIVATE_CLUSTER = init_ray(num_cpus=num_cpus, object_store_memory=store, new_cluster=True,
                                log_to_driver=log_to_driver, progress_bars=False)
    return ray


_PRIVATE_CLUSTER: str | None = None


def stop_ray() -> None:
    """End the cluster :func:`start_ray` started, as ``ray-sbir serve`` ends its own: every process of it, an
    HAProxy included, without Serve's 30 s drain behind HAProxy."""
    from ray_sbir.distributed.runtime import stop_ray as stop

    stop(_PRIVATE_CLUSTER)


def ensure_doodles(root: str, *, classes: int | None = None, per_class: int = 60, photo_size: int | None = None,
                   sketches_per_class: int | None = None) -> str:
    """The generated doodle dataset (:func:`ray_sbir.data.doodles.make_doodles`) in ``root``, made unless a
    finished one is there: the first ``classes`` classes, ``per_class`` photos and sketches each."""
    from ray_sbir import fs
    from ray_sbir.data.doodles import DOODLE_CLASSES, make_doodles

    if not fs.exists(fs.join(root, "unseen_classes.txt")):
        kw = {"photo_size": photo_size} if photo_size else {}
        s = make_doodles(root, sketches_per_class=sketches_per_class or per_class, photos_per_class=per_class,
                         classes=DOODLE_CLASSES[:classes] if classes else None, **kw)
        print(f"generated {root} in {s['seconds']}s", flush=True)
    return root


# One loopback port finder and one moto S3 server for the tests and the benches (tests/ports.py).
from ray_sbir.testing.stores import free_port, start_moto  # noqa: E402,F401


def decode_classes(plan, classes: Sequence[str], modality: str, spec) -> tuple[Any, Any]:
    """``(uint8 images, labels)`` of the ``modality`` items of ``classes`` in a dataset plan, rendered at ``spec``
    (a :class:`ray_sbir.data.decode.RenderSpec`); items that fail to decode are left out with their labels."""
    import numpy as np

    from ray_sbir.data.decode import decode_images

    items = plan.items(classes, modality).items
    images, errors = decode_images(items["uri"].to_pylist(), items["strokes"].to_pylist(), modality, spec)
    ok = np.array([not e for e in errors])
    return images[ok], np.asarray(items["label"].to_pylist())[ok]


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
