"""Shared fixtures: a real local Ray cluster and a tiny generated doodle dataset."""

from __future__ import annotations

import contextlib
import os

import pytest

from ray_sbir.testing.stores import start_moto

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "tiny.yaml")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto in server mode) on loopback, configured the standard AWS way.

    Started before the Ray cluster so Ray's workers inherit the same environment, as they would on a cluster
    whose nodes carry AWS credentials and AWS_ENDPOINT_URL."""
    old = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                          "AWS_DEFAULT_REGION")}
    proc, endpoint = start_moto("testing-key-id", "testing-secret-key-never-logged")  # sets the AWS_* variables
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A real local Ray cluster: 4 logical CPUs so 2 training workers leave 2 for Ray Data."""
    import ray

    from ray_sbir.logs import setup_logging

    setup_logging()  # as the CLI does: the library's INFO lines (progress, resume) reach stderr, once
    # address="local": always a new cluster of our own, even when RAY_ADDRESS points at another one.
    ray.init(address="local", num_cpus=4, object_store_memory=400 * 1024**2, include_dashboard=False,
             log_to_driver=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_doodles(tmp_path_factory):
    """8 classes x (10 sketches, 10 photos) of the embedded benchmark."""
    from ray_sbir.data.doodles import DOODLE_CLASSES, make_doodles

    root = str(tmp_path_factory.mktemp("doodles"))
    make_doodles(root, sketches_per_class=10, photos_per_class=10, photo_size=64, classes=DOODLE_CLASSES[:8])
    return root


def tiny_config(root: str, storage: str, *overrides: str):
    from ray_sbir.config import load_config

    return load_config(TINY_CONFIG, [f"data.root={root}", f"train.storage_path={storage}", "data.unseen=random:2",
                                     *overrides])


def checkpoint_registered(run_dir: str, checkpoint_dir_name: str) -> bool:
    """True once Ray Train's controller has recorded the checkpoint (not merely uploaded it). A checkpoint whose
    upload finished but which the controller has not registered yet is not resumed from, so a test that kills
    workers to force a resume must wait for this (seen on a loaded CI machine)."""
    import json

    from ray_sbir import fs

    snapshot = fs.join(run_dir, "checkpoint_manager_snapshot.json")
    if not fs.exists(snapshot):
        return False
    try:
        results = json.loads(fs.read_text(snapshot)).get("checkpoint_results", [])
    except ValueError:  # caught mid-write
        return False
    return any(r.get("checkpoint_dir_name") == checkpoint_dir_name for r in results)


@pytest.fixture
def caplog(caplog):
    """pytest's caplog, also fed by the ``ray_sbir`` logger: once ``setup_logging`` ran (as the CLI and the
    ``ray_local`` fixture do), that logger prints through its own handler and does not propagate to the root
    logger, where caplog listens."""
    import logging

    logger = logging.getLogger("ray_sbir")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


# ---- Two test processes at once (pytest-xdist, `-n 2` in pyproject's addopts), some tests alone.
#
# On a 2-core machine the suite leaves the CPU idle about 40% of its time (measured per test from /proc/stat:
# Ray, Serve and HAProxy start-up and shutdown waits, polling for replicas and checkpoints), so two test
# processes share the machine. Tests whose assertions depend on timing under load (replica loss behind HAProxy,
# autoscaling, load, node and worker loss, the browser, `ray-sbir serve` start and stop, the benches' own pool)
# are marked ``exclusive``: each runs with no other test running. A readers-writer lock over files shared by the
# xdist workers does it (fcntl.flock): every test holds a shared lock on ``main`` for its whole protocol
# (fixture setup included), an exclusive test an exclusive one; the ``turnstile`` keeps new tests from starting
# while an exclusive test waits, so it is not starved. A worker that holds the shared lock across tests
# (:func:`held_beside_other_tests`) runs its tests under that hold without the turnstile: waiting there for an
# exclusive test that itself waits for this hold to end would deadlock both workers.
EXCLUSIVE_LOCKS = "sbir-test-locks"
LONG_HOLDS = "_sbir_long_holds"  # on the pytest config: this worker's open held_beside_other_tests


def _lock_dir(config) -> str | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return None  # one process: nothing runs beside anything
    # The xdist workers' base temp folders share a parent (pytest-of-<user>/pytest-N/popen-gwK).
    base = config._tmp_path_factory.getbasetemp().parent
    path = base / EXCLUSIVE_LOCKS
    path.mkdir(exist_ok=True)
    return str(path)


# The order files are handed to the two workers (``--dist loadfile`` with ``--no-loadscope-reorder`` in pyproject's
# addopts; xdist's own reorder puts files with many tests first, which left the long one-test files for the last
# minutes, each alone). Heaviest first, so the last minutes are short files on both workers; files with exclusive
# tests last, where each waits only for a short test on the other worker instead of a long file (or the benches'
# pool, which holds the shared lock for minutes). Seconds per file as measured by
# ``python3 -m pytest --durations=0`` on the 2-core machine; a file not listed counts 0 and keeps its place.
FILE_SECONDS = {
    "tests/bench/test_benches.py": 244, "tests/serving/test_offline_matches_http.py": 152,
    "tests/test_cli.py": 139, "tests/serving/test_app.py": 85, "tests/distributed/test_train.py": 99,
    "tests/distributed/test_node_loss.py": 94, "tests/distributed/test_hash_training.py": 88,
    "tests/jobs/test_job_submit.py": 82, "tests/distributed/test_distill.py": 82,
    "tests/serving/test_quickdraw.py": 48, "tests/distributed/test_runtime.py": 38, "tests/distributed/test_grow.py": 34,
    "tests/serving/test_rerank_serving.py": 33, "tests/distributed/test_s3_end_to_end.py": 33,
    "tests/distributed/test_datasets.py": 33, "tests/models/test_dual_encoder.py": 29,
    "tests/distributed/test_index_quickdraw.py": 27, "tests/distributed/test_embed.py": 24, "tests/test_fs_gcs.py": 20,
    "tests/distributed/test_ddp.py": 13,
    # exclusive
    "tests/serving/test_autoscale.py": 139, "tests/distributed/test_fault_tolerance.py": 63,
    "tests/serving/test_load.py": 69, "tests/serving/test_cli_serve.py": 60, "tests/serving/test_web.py": 42,
    "tests/serving/test_serve_deploy.py": 34, "tests/serving/test_haproxy.py": 23, "tests/serving/test_web_auth.py": 12,
}


def pytest_collection_modifyitems(session, config, items):
    files: dict[str, tuple[bool, int]] = {}  # file -> (has an exclusive test, first position)
    for i, item in enumerate(items):
        f = item.nodeid.split("::")[0]
        exclusive, first = files.get(f, (False, i))
        files[f] = (exclusive or item.get_closest_marker("exclusive") is not None, first)
    position = {id(item): i for i, item in enumerate(items)}

    def key(item):
        f = item.nodeid.split("::")[0]
        exclusive, first = files[f]
        return exclusive, -FILE_SECONDS.get(f, 0), first, position[id(item)]

    items.sort(key=key)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import fcntl

    folder = _lock_dir(item.config)
    if folder is None:
        yield
        return
    exclusive = item.get_closest_marker("exclusive") is not None
    if getattr(item.config, LONG_HOLDS, 0):
        assert not exclusive, f"{item.nodeid} is exclusive but runs while this worker holds a shared lock"
        yield
        return
    with open(os.path.join(folder, "turnstile"), "a") as turnstile, open(os.path.join(folder, "main"), "a") as main:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(main, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(main, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


@contextlib.contextmanager
def held_beside_other_tests(config):
    """A shared hold on the lock for longer than one test (work a module keeps running in the background, such as
    the benches' pool): no exclusive test starts until it is released."""
    import fcntl

    folder = _lock_dir(config)
    if folder is None:
        yield
        return
    with open(os.path.join(folder, "main"), "a") as main:
        fcntl.flock(main, fcntl.LOCK_SH)
        setattr(config, LONG_HOLDS, getattr(config, LONG_HOLDS, 0) + 1)
        try:
            yield
        finally:
            setattr(config, LONG_HOLDS, getattr(config, LONG_HOLDS) - 1)
            fcntl.flock(main, fcntl.LOCK_UN)
