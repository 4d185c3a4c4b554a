"""Every bench still runs: ``python bench/<script> --tiny`` for each script of ``bench/`` (``common.py`` and the
private helpers ``_*.py`` excepted), in a subprocess that must exit 0.

``--tiny`` (``bench/common.py``) is each bench at a seconds-scale size: tiny arrays, one repetition, generated
data, every file in a temporary folder (``TMPDIR`` is the test's own folder, and so is the working directory,
so nothing lands in the repository). The benches that start a Ray cluster (``ray.init``, ``start_ray``,
``init_ray``: read from their source, so a new bench is classified by itself) are marked ``slow``. They are
the expensive ones: Ray's start-up, Ray Train's and Serve's cost 25-90 s per bench on a 2-core machine, most
of it waiting for processes that import torch. So the selected benches run ahead of their tests in a pool of
``BENCH_TINY_JOBS`` processes (default 3: the waits overlap; ``1`` runs them one by one), at most
:data:`SERVE_AT_ONCE` Serve benches at a time (memory); each test waits for its own bench. Measured on the
shared 2-core machine: about 5 minutes for the file with 3 jobs (6 with 2, 10 one by one).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "bench")
SCRIPTS = sorted(f for f in os.listdir(BENCH) if f.endswith(".py") and f != "common.py" and not f.startswith("_"))
JOBS = max(1, int(os.environ.get("BENCH_TINY_JOBS", "3")))
SERVE_AT_ONCE = 2  # a Serve app's replicas hold a few hundred MB each: at most this many Serve benches at once
TIMEOUT_S = {"plain": 240, "ray": 600, "serve": 600}


def kind(script: str) -> str:
    """``serve`` (starts Ray and a Serve app), ``ray`` (starts a Ray cluster) or ``plain``."""
    with open(os.path.join(BENCH, script)) as f:
        src = f.read()
    # a bench may run the CLI's own commands (``cli("serve", ...)``), which start their own Ray clusters
    if not re.search(r"\b(start_ray|ray\.init|init_ray)\(|\bcli\(\"(evaluate|serve)\"", src):
        return "plain"
    serves = re.search(r"^\s*from ray import serve\b|\bray_sbir\.testing\.serve\b|\bbuild_app\(|\bcli\(\"serve\"",
                       src, re.M)
    return "serve" if serves else "ray"


KINDS = {s: kind(s) for s in SCRIPTS}


@dataclass
class Run:
    script: str
    returncode: int
    seconds: float
    log: str

    def tail(self, n: int = 6000) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()[-n:]


def run_tiny(script: str, folder: str) -> Run:
    """``python bench/<script> --tiny`` with ``folder`` as working directory and ``TMPDIR``, its own process
    group (killed whole on timeout: the Ray processes it started too), output to ``folder/output.log``."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a bench starts its own cluster
    env.update(TMPDIR=folder, PYTHONUNBUFFERED="1")
    # Ray's session folder holds unix sockets (paths of at most 107 bytes): keep it where Ray puts it by default.
    env.setdefault("RAY_TMPDIR", tempfile.gettempdir())
    log = os.path.join(folder, "output.log")
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, os.path.join(BENCH, script), "--tiny"], cwd=folder, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=TIMEOUT_S[KINDS[script]])
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -1
            out.write(f"\n[test] timed out after {TIMEOUT_S[KINDS[script]]} s\n".encode())
    return Run(script, rc, time.monotonic() - t0, log)


class Runner:
    """The selected benches, started in test order in a pool of :data:`JOBS`, at most :data:`SERVE_AT_ONCE`
    Serve benches at a time."""

    def __init__(self, scripts: list[str], root: str):
        self.pool = ThreadPoolExecutor(JOBS, thread_name_prefix="bench-tiny")
        self.serve = threading.BoundedSemaphore(SERVE_AT_ONCE)
        self.runs: dict[str, Future] = {}
        for script in scripts:
            folder = os.path.join(root, script[:-3])
            os.makedirs(folder, exist_ok=True)
            self.runs[script] = self.pool.submit(self._run, script, folder)

    def _run(self, script: str, folder: str) -> Run:
        with self.serve if KINDS[script] == "serve" else contextlib.nullcontext():
            return run_tiny(script, folder)

    def result(self, script: str) -> Run:
        return self.runs[script].result()


@pytest.fixture(scope="module")
def runner(request, tmp_path_factory):
    from tests.conftest import held_beside_other_tests

    scripts = [item.callspec.params["script"] for item in request.session.items
               if item.module is request.module and hasattr(item, "callspec") and "script" in item.callspec.params]
    # The pool runs between this module's tests too: no exclusive test may start beside it (tests/conftest.py).
    with held_beside_other_tests(request.config):
        r = Runner(scripts, str(tmp_path_factory.mktemp("bench_tiny")))
        yield r
        r.pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("script", [pytest.param(s, id=s[:-3], marks=[pytest.mark.slow] if KINDS[s] != "plain" else [])
                                    for s in SCRIPTS])
def test_bench_runs_at_tiny_size(runner, script):
    run = runner.result(script)
    print(f"{script} --tiny: exit {run.returncode} in {run.seconds:.1f} s ({KINDS[script]})")
    assert run.returncode == 0, f"python bench/{script} --tiny exited {run.returncode} after {run.seconds:.0f} s:\n" \
                                f"{run.tail()}"


def test_tiny_values_replace_defaults_not_given_options():
    from bench.common import bench_parser, parse_args

    p = bench_parser("doc", json_out=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    tiny = {"n": 5, "k": 2}
    assert (parse_args(p, [], tiny).n, parse_args(p, [], tiny).k) == (1000, 10)
    args = parse_args(p, ["--tiny", "--k", "7"], tiny)
    assert (args.tiny, args.n, args.k, args.json) == (True, 5, 7, "")
