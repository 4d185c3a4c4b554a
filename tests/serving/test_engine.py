"""The search engine without Ray or HTTP: retrieve -> the pipeline's stages -> results, the same in both modes.

The sharded mode's deployment handles are stood in for by objects with the handles' call shape
(``encoder.remote(image)``, ``shard.search.remote(q, k)``, ``shard.vectors.remote(rows)``) over the real
shards; the deployments themselves are tested over HTTP in tests/serving/test_app.py. The ``gallery`` fixture is
tests/serving/conftest.py's."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ray_sbir.index import GalleryItems, index_layout
from ray_sbir.search.rerank import load_similarity
from ray_sbir.search import open_index, shard_slices
from ray_sbir.search.pipeline import SearchSpec
from ray_sbir.serving.engine import (
    LocalRetrieval, SearchEngine, ShardedRetrieval, encode_sketches, open_shard, load_sketch_encoder,
)
from tests.serving.helpers import make_rerank_checkpoint


@pytest.fixture(scope="module")
def rerank_checkpoint(gallery, tmp_path_factory):
    """An untrained similarity head over the gallery checkpoint's space, far from the cosine."""
    return make_rerank_checkpoint(gallery.checkpoint, str(tmp_path_factory.mktemp("rerank") / "ckpt"), scale=1.0)


def sketches(g, n=3) -> np.ndarray:
    from ray_sbir.data.quickdraw import rasterize

    out = []
    for _, _, strokes in g.drawings[:n]:
        pts = [np.stack([np.asarray(s[0], np.float32), np.asarray(s[1], np.float32)], 1) for s in strokes]
        out.append(rasterize([pts], size=g.size, line_width=g.line_width, padding=g.padding)[0])
    return np.stack(out)


class Remote:
    """The call shape of a Serve deployment handle method (``await h.remote(...)``) over a local function."""

    def __init__(self, fn):
        self.fn = fn

    async def remote(self, *args):
        return self.fn(*args)


def sharded_retrieval(g, num_shards: int) -> ShardedRetrieval:
    encoder, _, device = load_sketch_encoder(g.checkpoint, False, 1)
    layout = index_layout(g.index)
    slices = [(s.start, s.stop) for s in shard_slices(layout.count, num_shards)]
    handles = []
    for a, b in slices:
        shard = open_shard(g.index, layout, a, b, use_gpu=False, dtype=None, torch_threads=1)
        h = Remote(None)
        h.search = Remote(lambda q, k, bits, s=shard: tuple(x[0] for x in s.search(
            q[None], k, None if bits is None else np.unpackbits(bits, count=s.n).astype(bool))))
        h.vectors = Remote(shard.vectors)
        handles.append(h)

    async def call(what, make):
        return await make()

    return ShardedRetrieval(Remote(lambda image: encode_sketches(encoder, image[None], device)[0]), handles,
                            slices, call)


def engine_for(g, mode: str, spec: str = "exact", scorer=None, num_shards: int = 3) -> SearchEngine:
    layout = index_layout(g.index)
    retrieval = (LocalRetrieval(g.checkpoint, g.index, layout) if mode == "colocated"
                 else sharded_retrieval(g, num_shards))
    return SearchEngine(retrieval, GalleryItems.read(g.index, layout), {"kind": "float"}, SearchSpec.parse(spec),
                        scorer)


@pytest.mark.parametrize("mode", ["colocated", "sharded"])
def test_retrieval_is_the_exact_top_k_in_both_modes(gallery, mode):
    engine = engine_for(gallery, mode)
    encoder, _, device = load_sketch_encoder(gallery.checkpoint, False, 1)
    exact = open_index(gallery.index)
    for image in sketches(gallery):
        outcome = asyncio.run(engine.search(image, 7))
        q = encode_sketches(encoder, image[None], device)
        scores, rows = exact.search(q, 7)
        np.testing.assert_array_equal(outcome.rows, rows[0])
        np.testing.assert_allclose(outcome.scores, scores[0], atol=1e-5)
        assert outcome.first_scores is None and set(outcome.timing) == {"retrieve"}
        results = engine.results(outcome, "/root")
        assert [r["rank"] for r in results] == list(range(1, 8))
        assert [r["id"] for r in results] == [gallery.ids[i] for i in rows[0]]
        assert [r["class"] for r in results] == [gallery.labels[i] for i in rows[0]]
        assert results[0]["image_url"].startswith("/root/items/") and "first_stage_score" not in results[0]
    assert [s["stage"] for s in engine.stages()] == ["retrieve", "results"]


@pytest.mark.parametrize("mode", ["colocated", "sharded"])
def test_rerank_reorders_the_first_stage_candidates(gallery, rerank_checkpoint, mode):
    scorer = load_similarity(rerank_checkpoint)
    engine = engine_for(gallery, mode, "exact > rerank:12", scorer)
    plain = engine_for(gallery, mode)
    reordered = 0
    for image in sketches(gallery):
        first = asyncio.run(plain.search(image, 12))
        outcome = asyncio.run(engine.search(image, 5))
        q = encode_sketches(load_sketch_encoder(gallery.checkpoint, False, 1)[0], image[None], "cpu")[0]
        learned = scorer.score(q, gallery.embeddings[first.rows])
        order = np.lexsort((first.rows, -learned))[:5]
        np.testing.assert_array_equal(outcome.rows, first.rows[order])
        np.testing.assert_allclose(outcome.scores, learned[order], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(outcome.first_scores, first.scores[order], atol=1e-6)
        reordered += not np.array_equal(outcome.rows, first.rows[:5])
        results = engine.results(outcome)
        assert all("first_stage_score" in r for r in results) and set(outcome.timing) == {"retrieve", "rerank"}
    assert reordered  # the (random) head does change the order
    assert [s["stage"] for s in engine.stages()] == ["retrieve", "rerank", "results"]
    assert engine.stages()[1]["candidates"] == 12 and engine.stages()[1]["checkpoint"] == rerank_checkpoint


@pytest.mark.parametrize("mode", ["colocated", "sharded"])
def test_filtered_retrieval_and_query_expansion_stay_inside_the_allowed_rows(gallery, mode):
    """Both modes with a row mask: the exact top among the allowed rows, the query expansion's neighbours from
    those rows too (as the offline stage nests), and an engine answer equal to the offline one."""
    from ray_sbir.search import QueryExpanded, build_index, index_kind

    engine = engine_for(gallery, mode, "exact > qe:3:1")
    encoder, _, device = load_sketch_encoder(gallery.checkpoint, False, 1)
    allowed = np.array([label in sorted(set(gallery.labels))[:2] for label in gallery.labels])
    offline = QueryExpanded(build_index(index_kind(index_layout(gallery.index)), gallery.embeddings), 3, 1.0)
    for image in sketches(gallery):
        outcome = asyncio.run(engine.search(image, 6, allowed))
        scores, rows = offline.search(encode_sketches(encoder, image[None], device), 6, allowed)
        assert allowed[outcome.rows].all() and len(outcome.rows) == 6
        np.testing.assert_array_equal(outcome.rows, rows[0])
        np.testing.assert_allclose(outcome.scores, scores[0], atol=1e-5)
        assert set(outcome.timing) == {"retrieve", "query_expansion"} and min(outcome.timing.values()) >= 0
    assert engine.stages()[1] == {"stage": "query_expansion", "n": 3, "alpha": 1.0}


@pytest.mark.parametrize("mode", ["colocated", "sharded"])
def test_every_stage_runs_as_nested_offline(gallery, rerank_checkpoint, mode):
    """Query expansion then re-ranking, in both modes: the offline stage classes over the merged shards give the
    answer of the same spec built over the whole gallery, and each row's first-stage score is the score the
    last retrieval (the expanded query's) gave it."""
    from ray_sbir.search import build_index, index_kind
    from ray_sbir.search.pipeline import build_pipeline

    spec = "exact > qe:4:2 > rerank:9"
    scorer = load_similarity(rerank_checkpoint)
    engine = engine_for(gallery, mode, spec, scorer)
    base = build_index(index_kind(index_layout(gallery.index)), gallery.embeddings)
    offline = build_pipeline(SearchSpec.parse(spec), base, scorer=scorer)
    expansion = build_pipeline(SearchSpec.parse("exact > qe:4:2"), base)
    encoder, _, device = load_sketch_encoder(gallery.checkpoint, False, 1)
    for image in sketches(gallery):
        outcome = asyncio.run(engine.search(image, 5))
        q = encode_sketches(encoder, image[None], device)
        scores, rows = offline.search(q, 5)
        np.testing.assert_array_equal(outcome.rows, rows[0])
        np.testing.assert_allclose(outcome.scores, scores[0], rtol=1e-5, atol=1e-6)
        expanded_q = expansion.expand(q)
        np.testing.assert_allclose(outcome.first_scores, expanded_q[0] @ gallery.embeddings[rows[0]].T, atol=1e-5)
        assert list(outcome.timing) == ["retrieve", "query_expansion", "rerank"]
    assert [s["stage"] for s in engine.stages()] == ["retrieve", "query_expansion", "rerank", "results"]


class ReversedHead:
    """A stage defined outside the library: the base's first ``n`` rows in reverse order."""

    def __init__(self, base, n: int):
        self.base, self.n = base, n

    def __len__(self) -> int:
        return len(self.base)

    def search(self, queries, k, allowed=None):
        scores, rows = self.base.search(queries, max(k, self.n), allowed)
        order = np.r_[np.arange(min(self.n, rows.shape[1]))[::-1], np.arange(min(self.n, rows.shape[1]), rows.shape[1])]
        return scores[:, order][:, :k], rows[:, order][:, :k]

    def vectors(self, rows):
        return self.base.vectors(rows)


@pytest.mark.parametrize("mode", ["colocated", "sharded"])
def test_a_newly_registered_stage_is_served_with_no_engine_change(gallery, mode, monkeypatch):
    """One class and its registration: the spec parses it (with its parameter checked) and both modes run it."""
    from ray_sbir.search import STAGES

    STAGES.names()  # the built-in stages registered first
    monkeypatch.setitem(STAGES._entries, "reverse_head", ReversedHead)
    monkeypatch.setitem(STAGES._extras, "reverse_head", {"params": (("n", int),), "required": 1})
    with pytest.raises(ValueError, match="reverse_head n: expected an integer >= 1"):
        SearchSpec.parse("exact > reverse_head:0")
    engine, plain = engine_for(gallery, mode, "exact > reverse_head:3"), engine_for(gallery, mode)
    for image in sketches(gallery, 2):
        first = asyncio.run(plain.search(image, 6))
        outcome = asyncio.run(engine.search(image, 6))
        np.testing.assert_array_equal(outcome.rows, np.r_[first.rows[:3][::-1], first.rows[3:6]])
        np.testing.assert_allclose(outcome.first_scores, np.r_[first.scores[:3][::-1], first.scores[3:6]], atol=1e-6)
    assert engine.stages()[1] == {"stage": "reverse_head", "n": 3}


def test_a_rerank_spec_without_a_scorer_is_refused(gallery):
    with pytest.raises(ValueError, match="rerank needs a train.task=rerank checkpoint"):
        engine_for(gallery, "colocated", "exact > rerank:5")


def test_sharded_vectors_gather_rows_across_shards(gallery):
    retrieval = sharded_retrieval(gallery, 3)
    rows = np.array([len(gallery.ids) - 1, 0, 5, 5, 17])
    np.testing.assert_allclose(asyncio.run(retrieval.vectors(rows)), gallery.embeddings[rows], atol=1e-6)
