"""Hash codes end to end on a real local Ray cluster: a ``hash_dual_encoder`` trained with the SSAH-style terms
by 2 Ray Train workers, its gallery embedded into a binary index (packed codes beside their relaxation), the
evaluation ranking by Hamming distance, and Hamming search over the index agreeing with that ranking."""

import json

import numpy as np

from ray_sbir import fs
from ray_sbir.checkpoint import read_meta
from ray_sbir.data.plan import plan_dataset
from ray_sbir.distributed.embed import ModelSource
from ray_sbir.distributed.evaluate import evaluate
from ray_sbir.search.hamming import ShardedHamming, pack_codes
from ray_sbir.index import read_index
from ray_sbir.distributed.train import train
from tests.conftest import tiny_config

HASH = ["model.name=hash_dual_encoder", "model.normalize=tanh", "model.embed_dim=32",
        "loss.terms={pairwise_likelihood: {weight: 1.0}, label_network: {weight: 1.0, hidden: 32, feature_dim: 16}, "
        "quantization: {weight: 0.1}, domain: {weight: 0.1}}"]


def test_hash_model_trains_indexes_and_ranks_by_hamming(ray_local, tiny_doodles, tmp_path):
    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"), "train.name=hash", "train.epochs=2",
                      "train.num_workers=2", "data.unseen=random:3", "data.triplets_per_epoch=160", *HASH)
    plan = plan_dataset(cfg)
    result = train(cfg, plan)
    meta = read_meta(result.best_checkpoint)
    for term in ("train_pairwise_likelihood", "train_label_network", "train_label_network_codes",
                 "train_quantization", "train_domain"):
        assert np.isfinite(meta.metrics[term]), term
    assert meta.config.model.name == "hash_dual_encoder"

    report = evaluate(cfg, ModelSource(result.best_checkpoint), str(tmp_path / "eval"), name="hash", plan=plan)
    written = json.loads(fs.read_text(report.report_uri))["metrics"]
    assert written["ranking"] == "hamming" and written["bits"] == 32
    assert 0.0 <= written["precision_hamming_radius2"] <= 1.0 and 0.0 <= written["empty_hamming_radius2"] <= 1.0
    gallery = read_index(report.gallery_index)
    queries = read_index(report.query_index)
    assert gallery.manifest.embedding == {"kind": "binary", "score": "hamming", "bits": 32}
    assert gallery.codes.shape == (len(gallery), 1) and gallery.codes.dtype == np.uint64
    np.testing.assert_array_equal(gallery.codes, pack_codes(gallery.embeddings))  # the signs of the relaxation
    assert 0.0 < report.metrics.map_all <= 1.0

    # Hamming search over the index ranks as the evaluation did: the top item of each query agrees.
    d, rows = ShardedHamming(gallery.codes, 32, num_shards=2).search(queries.codes, 5)
    q_pm = np.where(queries.embeddings > 0, 1.0, -1.0)
    g_pm = np.where(gallery.embeddings > 0, 1.0, -1.0)
    scores = q_pm @ g_pm.T
    for i in range(len(queries)):
        assert d[i, 0] == (32 - scores[i].max()) / 2
        assert rows[i, 0] == int(np.flatnonzero(scores[i] == scores[i].max())[0])  # ties by lower row

    # Served: the same Serve app answers by Hamming distance over the packed codes (/info says so).
    import httpx
    import torch
    from ray import serve

    from ray_sbir.checkpoint import load_model
    from ray_sbir.data.decode import render_spec
    from ray_sbir.data.images import to_model_input
    from ray_sbir.data.quickdraw import rasterize, unpack_strokes
    from ray_sbir.serving import ServeConfig, build_app
    from tests.serving.helpers import start_serve, stop_serve, wait_for_healthz

    sketch = plan.items(plan.split.unseen, "sketch").items.slice(0, 1).to_pylist()[0]
    arrays = unpack_strokes(sketch["strokes"])  # the catalog's packed (x, y, end) triples
    strokes = [[s[:, 0].tolist(), s[:, 1].tolist()] for s in arrays]  # as a client posts them
    model, _ = load_model(result.best_checkpoint)
    spec = render_spec(cfg, "sketch")
    image = rasterize([arrays], size=spec.size, line_width=spec.line_width, padding=spec.padding)
    with torch.inference_mode():
        query = model.eval().encode(to_model_input(torch.from_numpy(image)), "sketch").numpy()
    d, rows = ShardedHamming(gallery.codes, 32).search(pack_codes(query), 10)
    # Both apps on one Serve instance (the second under its own route prefix): one start and one stop.
    base = start_serve(ServeConfig(checkpoint=result.best_checkpoint, index=report.gallery_index, num_shards=2,
                                   search_mode="sharded", encoder={"num_cpus": 0.25}, shard={"num_cpus": 0.25},
                                   ingress={"num_cpus": 0.25}))
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.get("/info").json()["scoring"]["kind"] == "binary"
            body = client.post("/search", json={"strokes": strokes, "k": 10}).json()
        assert [r["id"] for r in body["results"]] == [gallery.ids[i] for i in rows[0]]
        assert [r["score"] for r in body["results"]] == [float(32 - 2 * x) for x in d[0]]

        # Two-stage: each shard's 20 Hamming-nearest re-scored by the inner product of the stored relaxation.
        serve.run(build_app(ServeConfig(checkpoint=result.best_checkpoint, index=report.gallery_index, num_shards=2,
                                        search_mode="colocated", hamming_candidates=20,
                                        colocated={"num_cpus": 0.25})), name="two-stage", route_prefix="/two-stage")
        assert wait_for_healthz(f"{base}/two-stage", 60)
        with httpx.Client(base_url=f"{base}/two-stage", timeout=60) as client:
            scoring = client.get("/info").json()["scoring"]
            body = client.post("/search", json={"strokes": strokes, "k": 10}).json()
        assert scoring["rescore"] == {"candidates": 20, "score": "inner_product"}
        _, cand = ShardedHamming(gallery.codes, 32).search(pack_codes(query), 20)
        exact = gallery.embeddings[cand[0]] @ query[0]
        order = np.lexsort((cand[0], -exact))[:10]
        assert [r["id"] for r in body["results"]] == [gallery.ids[i] for i in cand[0][order]]
        np.testing.assert_allclose([r["score"] for r in body["results"]], exact[order], atol=1e-4)
    finally:
        stop_serve()
