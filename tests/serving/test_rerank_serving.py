"""The learned re-ranker end to end on a real local Ray cluster: trained from an encoder checkpoint by 2 Ray
Train workers (warm-up on random pairs, then in-batch pairs), then served by the Serve app as the re-rank stage
over HTTP -- behind an API key read from a secret file, with gzip request bodies -- and answering exactly what
the engine's definition gives in-process."""

import gzip
import json

import httpx
import numpy as np

from ray_sbir.checkpoint import read_meta
from ray_sbir.data.plan import plan_dataset
from ray_sbir.distributed.train import train
from tests.conftest import tiny_config
from tests.serving.helpers import expected_from_strokes, make_gallery, start_serve, stop_serve


def test_rerank_trains_with_two_workers_and_is_served_behind_a_key(ray_local, tiny_doodles, tmp_path):
    from ray_sbir.search.rerank import load_similarity
    from ray_sbir.search import open_index
    from ray_sbir.serving import ServeConfig

    g = make_gallery(str(tmp_path / "gallery"))
    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"), "train.task=rerank", "train.name=rerank",
                      f"rerank.encoder={g.checkpoint}", "train.epochs=2", "train.num_workers=2",
                      "data.unseen=random:3", "data.triplets_per_epoch=160", "rerank.hidden=[32]",
                      "rerank.warmup=0.25", "rerank.candidates=10", "train.lr=0.003",
                      "loss.terms={similarity_regression: {weight: 1.0, margin: 0.2}}")
    result = train(cfg, plan_dataset(cfg))
    meta = read_meta(result.best_checkpoint)
    assert meta.task == "rerank" and meta.config.model.embed_dim == 32  # the encoder's model
    assert np.isfinite(meta.metrics["train_similarity_regression"])
    assert 0 <= meta.metrics["val_map"] <= 1 and 0 <= meta.metrics["val_map_first_stage"] <= 1

    key_file = tmp_path / "api_key"
    key_file.write_text("s3cret-key\n")
    base = start_serve(ServeConfig(checkpoint=g.checkpoint, index=g.index, search_mode="colocated",
                                   rerank=result.best_checkpoint, rerank_k=10, api_key_file=str(key_file),
                                   max_body_bytes=64 * 1024, colocated={"num_cpus": 0.25}))
    key = {"X-API-Key": "s3cret-key"}
    strokes = g.drawings[0][2]
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            # The page and liveness stay open; search, items and info need the key.
            assert c.get("/healthz").status_code == 200
            page = c.get("/")
            assert page.status_code == 200 and 'data-api-key="on"' in page.text
            r = c.post("/search", json={"strokes": strokes})
            assert r.status_code == 401 and "API key" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
            assert c.post("/search", json={"strokes": strokes}, headers={"X-API-Key": "nope"}).status_code == 401
            assert c.get("/info").status_code == 401
            info = c.get("/info", headers={"Authorization": "Bearer s3cret-key"}).json()
            assert [s["stage"] for s in info["stages"]] == ["retrieve", "rerank", "results"]
            assert info["stages"][1]["candidates"] == 10 and info["auth"] == "api_key"

            body = c.post("/search", json={"strokes": strokes, "k": 5}, headers=key).json()
            # What the engine defines: the exact top 10 by inner product, re-ordered by the learned score.
            q = expected_from_strokes(g, strokes)
            first_scores, first_rows = open_index(g.index, expand=False).search(q[None], 10)
            learned = load_similarity(result.best_checkpoint).score(q, g.embeddings[first_rows[0]])
            order = np.lexsort((first_rows[0], -learned))[:5]
            assert [r["id"] for r in body["results"]] == [g.ids[i] for i in first_rows[0][order]]
            np.testing.assert_allclose([r["score"] for r in body["results"]], learned[order], atol=1e-4)
            np.testing.assert_allclose([r["first_stage_score"] for r in body["results"]], first_scores[0][order],
                                       atol=1e-4)
            assert "rerank" in body["timing_ms"]

            item = body["results"][0]["image_url"]
            assert c.get(item).status_code == 401
            thumb = c.get(item, headers=key)
            assert thumb.status_code == 200 and thumb.headers["cache-control"].startswith("private")

            # Content encodings: gzip is decoded (bounded by the byte limit), others refused.
            raw = json.dumps({"strokes": strokes, "k": 5}).encode()
            js = {**key, "content-type": "application/json"}
            zipped = c.post("/search", content=gzip.compress(raw), headers={**js, "content-encoding": "gzip"})
            assert zipped.status_code == 200 and zipped.json()["results"] == body["results"]
            bomb = gzip.compress(b" " * (1024 * 1024) + raw)  # 1 MiB of JSON whitespace, ~1 KB compressed
            r = c.post("/search", content=bomb, headers={**js, "content-encoding": "gzip"})
            assert r.status_code == 413 and "decompressed" in r.json()["detail"]
            r = c.post("/search", content=b"\x1f\x8b\x08garbage", headers={**js, "content-encoding": "gzip"})
            assert r.status_code == 400 and "gzip" in r.json()["detail"]
            r = c.post("/search", content=gzip.compress(raw)[:20], headers={**js, "content-encoding": "gzip"})
            assert r.status_code == 400 and "truncated" in r.json()["detail"]
            r = c.post("/search", content=raw, headers={**js, "content-encoding": "br"})
            assert r.status_code == 415 and "Content-Encoding" in r.json()["detail"]
            assert c.post("/search", json={"strokes": strokes, "k": 3}, headers=key).json()["count"] == 3
    finally:
        stop_serve()
