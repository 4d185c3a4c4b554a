"""Shared fixtures: a real local Ray cluster and a tiny generated doodle dataset."""

from __future__ import annotations

import os

import pytest

from tests.ports import start_moto

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
