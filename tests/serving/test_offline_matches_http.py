"""Offline ranking and ``/search`` over HTTP give the same ids, for every kind of index: evaluation ranks
through the same search interface (:func:`ray_sbir.search.open_index`, stages) as the endpoint does.

A float index with sign codes of a random rotation is served as its manifest says (Hamming over the codes in
each shard, the merged candidates re-scored by the floats) and opened offline the same way.
Sharded cases serve the index from 2 shard deployments merged by the ingress and rank offline with one index
over the whole gallery, so the merge of shards is covered too. Queries go one at a time on both sides. Query
expansion cases serve an index whose manifest records it (written by the augmentation job, with database-side
augmentation, or recorded on a copy): offline, ``open_index`` applies it; the endpoint's engine does. Mirror
averaging cases serve an index whose manifest records it: the endpoint's encoder (the encoder deployment, or the
colocated replica's) must encode each query as the mean of it and its mirror, as the offline side does."""

from __future__ import annotations

import numpy as np
import pytest

from tests.serving.helpers import Gallery, expected_from_strokes, make_gallery, make_rerank_checkpoint, \
    serve_config_for, stop_serve

pytestmark = pytest.mark.slow

HASH = ("model.name=hash_dual_encoder", "model.normalize=tanh")
K = 12


@pytest.fixture(scope="module")
def float_gallery(tmp_path_factory) -> Gallery:
    return make_gallery(str(tmp_path_factory.mktemp("float")))


@pytest.fixture(scope="module")
def binary_gallery(tmp_path_factory) -> Gallery:
    return make_gallery(str(tmp_path_factory.mktemp("binary")), model_overrides=HASH)


@pytest.fixture(scope="module")
def coded_gallery(tmp_path_factory) -> Gallery:
    """A float model's index with 16-bit sign codes of a rotation, re-scored over its first 8 rows by default."""
    return make_gallery(str(tmp_path_factory.mktemp("coded")), sign_codes=(16, 0, 8))


def with_expansion(ray_local, g: Gallery, out: str, *, qe_n: int, dba_n: int) -> Gallery:
    """``g`` with an index that records query expansion (and, with ``dba_n``, holds DBA vectors)."""
    import dataclasses
    import shutil

    from ray_sbir.distributed.augment import augment_index, record_search
    from ray_sbir.search import ExpansionSettings

    qe, dba = ExpansionSettings(qe_n, 3.0), ExpansionSettings(dba_n, 3.0)
    if dba.on:
        augment_index(g.index, out, dba, qe)
    else:
        shutil.copytree(g.index, out)
        record_search(out, qe, dba)
    return dataclasses.replace(g, index=out)


def with_flip_average(g: Gallery, out: str, queries: bool = True) -> Gallery:
    """``g`` with a copy of its index whose manifest records mirror averaging (``encode`` entry, as the embedding
    job writes it with ``search.flip_average``): the endpoint must encode queries with the mirror too, unless
    ``queries`` is False (``search.flip_queries: false``: the gallery alone mirrored)."""
    import dataclasses
    import json
    import os
    import shutil

    from ray_sbir.index.format import MANIFEST
    from ray_sbir.search import encode_entry

    shutil.copytree(g.index, out)
    with open(os.path.join(out, MANIFEST)) as f:
        manifest = json.load(f)
    manifest.update(encode_entry(True, queries))
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump(manifest, f)
    return dataclasses.replace(g, index=out, flip_average=queries)


def offline_index(g: Gallery, *, hamming_candidates: int = 0, rerank: str | None = None, rerank_k: int = 0):
    """What ``ray-sbir evaluate`` / ``retrieval_metrics(index=...)`` ranks with (``hamming_candidates`` 0: the
    index's own re-scoring, as the endpoint's default)."""
    from ray_sbir.search import Reranked, open_index
    from ray_sbir.search.rerank import load_similarity

    index = open_index(g.index, hamming_candidates=hamming_candidates or None, keep_floats=bool(rerank))
    return Reranked(index, load_similarity(rerank), rerank_k) if rerank else index


def assert_same_ids(client, g: Gallery, index) -> None:
    for _key, _label, strokes in g.drawings:
        body = client.post("/search", json={"strokes": strokes, "k": K}).json()
        served = [r["id"] for r in body["results"]]
        scores, rows = index.search(expected_from_strokes(g, strokes)[None], K)
        offline = [g.ids[r] for r in rows[0]]
        if served != offline:  # allowed only where two scores tie to float rounding (encoder threads differ)
            diff = [i for i, (a, b) in enumerate(zip(served, offline)) if a != b]
            gaps = np.abs(np.diff(scores[0]))
            assert all(gaps[max(i - 1, 0):i + 1].min() < 1e-4 for i in diff), (served, offline)
        assert [r["score"] for r in body["results"]] == pytest.approx(scores[0].tolist(), abs=1e-4)


@pytest.fixture(scope="module")
def serve_base(ray_local):
    """One Serve instance for every case (each case deploys its app under its own route prefix)."""
    from ray import serve

    from ray_sbir.testing.stores import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    stop_serve()


# mirror average: False, True (gallery and queries) or "gallery" (search.flip_queries: false)
CASES = {  # name: (gallery, search mode, hamming candidates, re-rank on, (query expansion n, DBA n), mirror average)
    "float": ("float", "sharded", 0, False, (0, 0), False),
    "binary": ("binary", "sharded", 0, False, (0, 0), False),
    "two_stage": ("binary", "sharded", 8, False, (0, 0), False),
    "float_rerank": ("float", "colocated", 0, True, (0, 0), False),
    "two_stage_rerank": ("binary", "colocated", 8, True, (0, 0), False),
    "float_qe_dba_flip": ("float", "sharded", 0, False, (3, 2), True),
    "two_stage_qe_rerank_flip_gallery": ("binary", "colocated", 8, True, (3, 0), "gallery"),
    "sign_codes_qe": ("coded", "sharded", 0, False, (3, 0), False),  # the manifest's two-stage, then QE
}
# Cases whose pipeline is a spec given to the serve config and to open_index alike (ray_sbir.search.pipeline).
SPECS = {"spec_sign_codes_rescore_qe_rerank": ("coded", "colocated", "hamming:6 > rescore > qe:2:1 > rerank:10"),
         "spec_float_qe_rerank": ("float", "sharded", "exact > qe:4 > rerank:8")}


def test_the_spec_cases_cover_every_registered_stage():
    """A stage registered without a case here is not compared over HTTP: this fails until one is added."""
    from ray_sbir.search import STAGES
    from ray_sbir.search.pipeline import SearchSpec

    served = {stage.name for _, _, spec in SPECS.values() for stage in SearchSpec.parse(spec).stages}
    assert served == set(STAGES.names())


@pytest.mark.parametrize("case", list(SPECS))
def test_a_pipeline_spec_ranks_offline_as_over_http(case, serve_base, float_gallery, coded_gallery, tmp_path,
                                                     ray_local):
    import httpx
    from ray import serve

    from ray_sbir.search import open_index
    from ray_sbir.search.rerank import load_similarity
    from ray_sbir.serving import build_app
    from tests.serving.helpers import wait_for_healthz

    kind, mode, spec = SPECS[case]
    g = coded_gallery if kind == "coded" else float_gallery
    rerank = make_rerank_checkpoint(g.checkpoint, str(tmp_path / "rerank"), scale=0.3)
    cfg = serve_config_for(g, search_mode=mode, search=spec, rerank=rerank,
                           colocated={"num_cpus": 0.5, "max_batch_size": 8})
    serve.run(build_app(cfg), name=case, route_prefix=f"/{case}")
    base = f"{serve_base}/{case}"
    try:
        assert wait_for_healthz(base, 60)
        with httpx.Client(base_url=base, timeout=60) as client:
            stages = [s["stage"] for s in client.get("/info").json()["stages"]]
            assert stages == ["retrieve", *(["rescore"] if kind == "coded" else []), "query_expansion", "rerank",
                              "results"]
            assert_same_ids(client, g, open_index(g.index, spec=spec, scorer=load_similarity(rerank)))
    finally:
        serve.delete(case)


@pytest.mark.parametrize("case", list(CASES))
def test_offline_ranking_equals_http_search(case, serve_base, float_gallery, binary_gallery, coded_gallery, tmp_path,
                                            ray_local):
    import httpx
    from ray import serve

    from ray_sbir.serving import build_app
    from tests.serving.helpers import wait_for_healthz

    kind, mode, candidates, with_rerank, (qe_n, dba_n), flip = CASES[case]
    g = {"binary": binary_gallery, "coded": coded_gallery, "float": float_gallery}[kind]
    if flip:
        g = with_flip_average(g, str(tmp_path / "flipped"), queries=flip is True)
    if qe_n:
        g = with_expansion(ray_local, g, str(tmp_path / "expanded"), qe_n=qe_n, dba_n=dba_n)
    rerank = make_rerank_checkpoint(g.checkpoint, str(tmp_path / "rerank"), scale=0.3) if with_rerank else None
    overrides = {"hamming_candidates": candidates, "search_mode": mode,
                 "colocated": {"num_cpus": 0.5, "max_batch_size": 8}}
    if rerank:
        overrides.update(rerank=rerank, rerank_k=10)
    serve.run(build_app(serve_config_for(g, **overrides)), name=case, route_prefix=f"/{case}")
    base = f"{serve_base}/{case}"
    try:
        assert wait_for_healthz(base, 60)
        with httpx.Client(base_url=base, timeout=60) as client:
            info = client.get("/info").json()
            rescored = candidates or kind == "coded"
            stages = ["retrieve", *(["rescore"] if rescored else []), *(["query_expansion"] if qe_n else []),
                      *(["rerank"] if rerank else []), "results"]
            assert [s["stage"] for s in info["stages"]] == stages and info["search_mode"] == mode
            assert info["model"]["flip_average"] is bool(flip) and info["model"]["flip_queries"] is (flip is True)
            if kind == "coded":
                assert info["stages"][1]["candidates"] == 8 and info["stages"][0]["scoring"]["codes"]["bits"] == 16
            assert_same_ids(client, g, offline_index(g, hamming_candidates=candidates, rerank=rerank, rerank_k=10))
    finally:
        serve.delete(case)
