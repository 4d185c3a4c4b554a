"""Autoscaling, watched: under rising load the app's replicas go up to their bound, and when the load drops they go
back to the minimum, with every request answered 200 during both transitions; in the colocated mode (the
ingress deployment) and in the sharded mode (the encoder, watched beside a shard deployment).

In the sharded mode the HTTP load saturates the encoder (and Serve's proxy), never the shards: a shard answers
a 32-d scan of a tiny gallery in well under a millisecond, so its ongoing requests stay near 0.1 whether one
client or thirteen are searching, and Serve is right not to add a replica. The test requires the bound of the
deployment the load saturates and only that every watched deployment is back at its minimum afterwards (a CI run
where the shards were also required to reach 2 failed for exactly this reason).

The load is real HTTP against the local Serve app: ``heavy`` concurrent clients, then one client that keeps
searching while the deployments scale down (so the replicas being stopped are drained, not dropped).
:func:`~ray_sbir.testing.autoscale.run_timeline` is also what ``bench/bench_autoscale.py`` records for ``docs/benchmarks.md``."""

from __future__ import annotations

import pytest

from ray_sbir.testing.autoscale import WATCHED, autoscaled_config, reached, run_timeline
from tests.serving.helpers import make_gallery, start_serve, stop_serve

pytestmark = pytest.mark.exclusive  # timing under load: run alone (tests/conftest.py)


@pytest.mark.parametrize("mode", ["colocated", "sharded"])
def test_replicas_follow_the_load_up_and_back_down_without_failed_requests(ray_local, tmp_path, mode):

    gallery = make_gallery(str(tmp_path / "gallery"))
    base = start_serve(autoscaled_config(gallery, mode))
    deployments, bound = WATCHED[mode]
    try:
        body = {"strokes": gallery.drawings[0][2], "k": 10}
        tl = run_timeline(base, body, deployments, max_replicas=bound, min_replicas={d: 1 for d in deployments})
    finally:
        stop_serve()
    table = "\n".join(str(s) for s in tl.samples)
    peak = {d: max(s["replicas"][d] for s in tl.samples) for d in bound}
    assert peak == bound, f"replicas never reached {bound} under load:\n{table}"
    assert tl.samples[-1]["replicas"] == {d: 1 for d in deployments}, f"did not scale back down:\n{table}"
    up = next(i for i, s in enumerate(tl.samples) if reached(s["replicas"], bound))
    assert any(s["phase"] == "light" for s in tl.samples[up:]), table
    assert tl.requests > 100 and not tl.failures, f"{len(tl.failures)} failed of {tl.requests}: {tl.failures[:5]}"
