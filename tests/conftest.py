"""Shared fixtures: a real local Ray cluster and a tiny generated doodle dataset."""

from __future__ import annotations

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "tiny.yaml")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray cluster: 4 logical CPUs so 2 training workers leave 2 for Ray Data."""
    import ray

    ray.init(num_cpus=4, object_store_memory=400 * 1024**2, include_dashboard=False, log_to_driver=True)
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
