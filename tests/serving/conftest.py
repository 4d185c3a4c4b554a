"""Fixtures of the Serve app's tests: the tiny gallery and the app serving it in each search mode."""

from __future__ import annotations

import time

import pytest

from tests.serving.helpers import Gallery, make_gallery, serve_config_for, start_serve, stop_serve


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Gallery:
    return make_gallery(str(tmp_path_factory.mktemp("serving")))


@pytest.fixture(scope="module", params=["sharded", "colocated"])
def served(request, ray_local, gallery):
    """The app in each search mode: sharded (ingress -> encoder and 2 shard deployments through handles) and
    colocated (encoder and gallery inside the ingress replica). Every HTTP test runs against both."""
    import httpx

    t0 = time.time()
    base = start_serve(serve_config_for(gallery, search_mode=request.param,
                                        colocated={"num_cpus": 0.5, "max_batch_size": 8}))
    print(f"Serve app ({request.param}) up in {time.time() - t0:.1f}s")
    with httpx.Client(base_url=base, timeout=60) as client:
        client.search_mode = request.param
        yield client
    stop_serve()
