"""Tests for ray_sbir.eval.metrics: ZS-SBIR retrieval metrics (mAP@all, mAP@K, precision@K, recall@K, PR curve)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from ray_sbir.eval.metrics import average_precision, retrieval_metrics
from ray_sbir.search import ExactShard, build_index, EmbeddingKind


def _ranked_gallery(relevance: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A query and a 2-D gallery whose cosine ranking is exactly the gallery order; label 1 = relevant."""
    n = len(relevance)
    angles = np.linspace(0.0, 1.2, n)  # strictly increasing angle -> strictly decreasing score
    gallery = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    query = np.array([[1.0, 0.0]])
    return query, np.array([1]), gallery, np.asarray(relevance)


def _random_problem(seed: int, n_q: int = 60, n_g: int = 400, dim: int = 16, n_cls: int = 6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_cls, dim))
    ql = rng.integers(0, n_cls, n_q)
    gl = rng.integers(0, n_cls, n_g)
    q = centres[ql] * 0.5 + rng.normal(size=(n_q, dim))
    g = centres[gl] * 0.5 + rng.normal(size=(n_g, dim))
    return q, ql, g, gl


def top_k(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ranking retrieval_metrics scores by default: a flat index of the L2-normalised gallery."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    return ExactShard(gn.astype(np.float32), device="cpu").search(qn.astype(np.float32), k)


def _cosine(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    return qn @ gn.T


# ---------------------------------------------------------------------------------- hand-computed


def test_hand_computed_ranking_10100():
    q, ql, g, gl = _ranked_gallery([1, 0, 1, 0, 0])
    m = retrieval_metrics(q, ql, g, gl, ks=(1, 2, 3, 5), map_ks=(1, 2, 3), recall_ks=(1, 2, 3))
    assert m.map_all == pytest.approx((1 + 2 / 3) / 2)
    assert m.per_query_ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert m.precision_at == pytest.approx({1: 1.0, 2: 0.5, 3: 2 / 3, 5: 2 / 5})
    assert m.recall_at == pytest.approx({1: 0.5, 2: 0.5, 3: 1.0})
    # mAP@K: AP of the top-K list normalised by the relevant items retrieved in it.
    assert m.map_at == pytest.approx({1: 1.0, 2: 1.0, 3: (1 + 2 / 3) / 2})


def test_hand_computed_ranking_01001():
    q, ql, g, gl = _ranked_gallery([0, 1, 0, 0, 1])
    m = retrieval_metrics(q, ql, g, gl, ks=(1, 2), map_ks=(1, 3, 5), recall_ks=(4,))
    assert m.map_all == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert m.map_at[1] == 0.0  # nothing relevant in the top 1 -> AP@1 = 0 (kept in the mean)
    assert m.map_at[3] == pytest.approx(1 / 2)  # one hit in the top 3, at rank 2
    assert m.map_at[5] == pytest.approx(m.map_all)
    assert m.precision_at == pytest.approx({1: 0.0, 2: 0.5})
    assert m.recall_at[4] == pytest.approx(0.5)


def test_average_precision_reference_helper():
    assert average_precision([1, 0, 1, 0, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0, 1, 0, 0, 1], k=3) == pytest.approx(0.5)
    assert average_precision([0, 0, 1], k=2) == 0.0
    assert math.isnan(average_precision([0, 0, 0]))


def test_ties_broken_by_gallery_index():
    # All gallery items score the same; the ranking must be the gallery order (stable sort).
    g = np.ones((4, 3))
    gl = np.array([0, 1, 1, 0])
    q = np.array([[1.0, 2.0, 3.0]])
    m = retrieval_metrics(q, [1], g, gl, ks=(1, 2), map_ks=(2,), recall_ks=(2,))
    assert m.map_all == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m.precision_at == pytest.approx({1: 0.0, 2: 0.5})
    _, idx = top_k(q, g, 4)
    assert idx.tolist() == [[0, 1, 2, 3]]


def test_pr_curve_hand_computed():
    # ranking [1, 0, 1, 0, 0]: precision at the hits = 1 (recall .5) and 2/3 (recall 1).
    q, ql, g, gl = _ranked_gallery([1, 0, 1, 0, 0])
    m = retrieval_metrics(q, ql, g, gl, pr_points=11)
    levels, prec = m.pr_curve
    assert np.allclose(levels, np.linspace(0, 1, 11))
    expected = np.where(levels <= 0.5 + 1e-12, 1.0, 2 / 3)
    assert np.allclose(prec, expected)
    assert len(retrieval_metrics(q, ql, g, gl, pr_points=101).pr_curve[1]) == 101


# ------------------------------------------------------------------------------ against sklearn


def test_ap_and_map_all_match_sklearn():
    q, ql, g, gl = _random_problem(0)
    m = retrieval_metrics(q, ql, g, gl, chunk_size=16)
    s = _cosine(q, g)
    ref = np.array([average_precision_score(gl == ql[i], s[i]) for i in range(len(q))])
    np.testing.assert_allclose(m.per_query_ap, ref, atol=1e-12)
    assert m.map_all == pytest.approx(ref.mean(), abs=1e-12)


@pytest.mark.parametrize("k", [1, 10, 50, 200])
def test_map_at_k_matches_sklearn_on_truncated_list(k):
    q, ql, g, gl = _random_problem(1)
    m = retrieval_metrics(q, ql, g, gl, map_ks=(k,), ks=(k,), recall_ks=(k,), chunk_size=13)
    s = _cosine(q, g)
    aps, precs, recs = [], [], []
    for i in range(len(q)):
        order = np.argsort(-s[i], kind="stable")[:k]
        rel = gl[order] == ql[i]
        aps.append(average_precision_score(rel, s[i, order]) if rel.any() else 0.0)
        precs.append(rel.sum() / k)
        recs.append(rel.sum() / (gl == ql[i]).sum())
    assert m.map_at[k] == pytest.approx(np.mean(aps), abs=1e-12)
    assert m.precision_at[k] == pytest.approx(np.mean(precs), abs=1e-12)
    assert m.recall_at[k] == pytest.approx(np.mean(recs), abs=1e-12)


def test_pr_curve_matches_naive_reference():
    q, ql, g, gl = _random_problem(2, n_q=30, n_g=120)
    m = retrieval_metrics(q, ql, g, gl, pr_points=11, chunk_size=4)
    s = _cosine(q, g)
    levels = np.linspace(0, 1, 11)
    curves = []
    for i in range(len(q)):
        rel = gl[np.argsort(-s[i], kind="stable")] == ql[i]
        hits = np.cumsum(rel)
        prec = hits / np.arange(1, len(rel) + 1)
        rec = hits / rel.sum()
        curves.append([prec[rec >= r - 1e-12].max() for r in levels])
    np.testing.assert_allclose(m.pr_curve[1], np.mean(curves, axis=0), atol=1e-12)


# -------------------------------------------------------------------------------- invariances


def test_chunk_size_invariance():
    q, ql, g, gl = _random_problem(3, n_q=41)
    results = [retrieval_metrics(q, ql, g, gl, chunk_size=c) for c in (1, 7, 41, 1000)]
    ref = results[0].to_dict(include_per_query=True)
    for r in results[1:]:
        d = r.to_dict(include_per_query=True)
        assert d.keys() == ref.keys()
        for key in ("map_all", "map@200", "precision@100", "precision@200", "recall@100", "recall@200"):
            assert d[key] == pytest.approx(ref[key], abs=1e-12)
        np.testing.assert_allclose(d["per_query_ap"], ref["per_query_ap"], atol=1e-12)
        np.testing.assert_allclose(d["pr_curve"]["precision"], ref["pr_curve"]["precision"], atol=1e-12)


def test_string_labels_equal_int_labels_and_per_class():
    q, ql, g, gl = _random_problem(4)
    names = np.array(["airplane", "cat", "car", "tree", "cow", "tent"])
    mi = retrieval_metrics(q, ql, g, gl)
    ms = retrieval_metrics(q, names[ql].tolist(), g, list(names[gl]))
    assert ms.map_all == pytest.approx(mi.map_all)
    assert ms.precision_at == pytest.approx(mi.precision_at)
    assert set(ms.per_class) == set(names[np.unique(ql)])
    for i, name in enumerate(names):
        if i in ql:
            assert ms.per_class[name]["map_all"] == pytest.approx(mi.per_class[i]["map_all"])
            assert ms.per_class[name]["map_all"] == pytest.approx(mi.per_query_ap[ql == i].mean())
            assert ms.per_class[name]["num_queries"] == (ql == i).sum()
            assert "precision@100" in ms.per_class[name] and "precision@200" in ms.per_class[name]
    json.dumps(ms.to_dict(include_per_query=True))  # JSON-serialisable
    assert isinstance(next(iter(mi.per_class)), int)  # numpy scalars become plain Python labels


def test_torch_inputs_and_float32_match_numpy():
    q, ql, g, gl = _random_problem(5)
    mn = retrieval_metrics(q, ql, g, gl)
    mt = retrieval_metrics(torch.tensor(q, dtype=torch.float32), torch.tensor(ql), torch.tensor(g), torch.tensor(gl))
    assert mt.map_all == pytest.approx(mn.map_all, abs=1e-5)
    assert mt.map_at[200] == pytest.approx(mn.map_at[200], abs=1e-5)


def test_k_larger_than_gallery_is_clamped():
    q, ql, g, gl = _random_problem(6, n_q=10, n_g=30, n_cls=3)
    m = retrieval_metrics(q, ql, g, gl, ks=(100,), map_ks=(200,), recall_ks=(500,))
    s = _cosine(q, g)
    assert m.precision_at[100] == pytest.approx(np.mean([(gl == c).sum() / 30 for c in ql]))
    assert m.recall_at[500] == pytest.approx(1.0)
    assert m.map_at[200] == pytest.approx(m.map_all)  # whole gallery retrieved: AP@N == AP
    scores, idx = top_k(q, g, 100)
    assert idx.shape == (10, 30) and scores.shape == (10, 30)
    np.testing.assert_array_equal(idx, np.argsort(-s, axis=1, kind="stable"))


def test_perfect_embedding_scores_one():
    rng = np.random.default_rng(7)
    n_cls, dim = 5, 8
    centres = np.eye(n_cls, dim)
    ql, gl = rng.integers(0, n_cls, 40), np.repeat(np.arange(n_cls), 30)
    m = retrieval_metrics(centres[ql] * 3.0, ql, centres[gl], gl, ks=(10, 30), map_ks=(10, 200), recall_ks=(30,))
    assert m.map_all == pytest.approx(1.0)
    assert m.map_at == pytest.approx({10: 1.0, 200: 1.0})
    assert m.precision_at == pytest.approx({10: 1.0, 30: 1.0})
    assert m.recall_at[30] == pytest.approx(1.0)
    assert np.allclose(m.pr_curve[1], 1.0)


def test_queries_without_relevant_items_are_excluded_and_counted():
    q, ql, g, gl = _ranked_gallery([1, 0, 1, 0, 0])
    q2 = np.vstack([q, q])
    m = retrieval_metrics(q2, [1, 7], g, gl)  # class 7 has no photo in the gallery
    assert m.num_queries == 2 and m.num_queries_without_relevant == 1
    assert math.isnan(m.per_query_ap[1])
    assert m.map_all == pytest.approx((1 + 2 / 3) / 2)
    assert set(m.per_class) == {1}
    assert m.to_dict(include_per_query=True)["per_query_ap"][1] is None
    with pytest.raises(ValueError, match="no query has a relevant"):
        retrieval_metrics(q, [7], g, gl)


def test_input_validation():
    q, ql, g, gl = _ranked_gallery([1, 0])
    with pytest.raises(ValueError):
        retrieval_metrics(q, ql, g[:, :1], gl)  # dim mismatch
    with pytest.raises(ValueError):
        retrieval_metrics(q, ql, g, gl[:1])  # label count
    with pytest.raises(ValueError):
        retrieval_metrics(q, ql, g, gl, chunk_size=0)
    with pytest.raises(ValueError):
        retrieval_metrics(q, ql, g, gl, ks=(0,))


# ------------------------------------------------------------------------- memory: chunked path


def test_ranks_chunk_by_chunk_through_the_index():
    """Queries reach the index ``chunk_size`` at a time (memory O(chunk x N)); the index ranks the whole gallery."""
    calls: list[tuple[int, int]] = []
    n_q, n_g, chunk = 103, 257, 10
    q, ql, g, gl = _random_problem(8, n_q=n_q, n_g=n_g)
    qn = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    index = ExactShard((g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32), device="cpu")

    class Spy:
        def __len__(self):
            return len(index)

        def search(self, queries, k):
            calls.append((len(queries), k))
            return index.search(queries, k)

    m = retrieval_metrics(qn, ql, None, gl, chunk_size=chunk, index=Spy())
    assert len(calls) == math.ceil(n_q / chunk) and all(c <= chunk and k == n_g for c, k in calls)
    assert m.map_all == pytest.approx(retrieval_metrics(q, ql, g, gl).map_all, abs=1e-6)


def test_binary_index_ranks_by_hamming_distance():
    """With a binary index, the ranking is Hamming distance on the signs, ties by lower row."""
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(20, 16)).astype(np.float32), rng.normal(size=(300, 16)).astype(np.float32)
    ql, gl = rng.integers(0, 4, 20), rng.integers(0, 4, 300)
    index = build_index(EmbeddingKind("binary", 16), g)
    m = retrieval_metrics(q, ql, None, gl, index=index)
    signs = lambda x: np.where(x > 0, 1.0, -1.0)  # noqa: E731
    ref = retrieval_metrics(signs(q), ql, signs(g), gl, normalize=False)
    assert m.map_all == pytest.approx(ref.map_all, abs=1e-9)


def test_top_k_matches_bruteforce():
    q, ql, g, gl = _random_problem(9, n_q=25, n_g=90)
    s = _cosine(q, g)
    scores, idx = top_k(q, g, 10)
    ref = np.argsort(-s, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(s, ref, axis=1), atol=1e-6)
    with pytest.raises(ValueError):
        top_k(q, g, 0)


def test_summary_and_to_dict_keys():
    q, ql, g, gl = _random_problem(10)
    m = retrieval_metrics(q, ql, g, gl)
    d = m.to_dict()
    for key in ("map_all", "map@200", "precision@100", "precision@200", "recall@100", "recall@200",
                "num_queries", "gallery_size", "num_queries_without_relevant", "per_class", "pr_curve"):
        assert key in d
    assert "per_query_ap" not in d
    assert d["precision_at"] == {"100": d["precision@100"], "200": d["precision@200"]}
    assert d["map_at"] == {"200": d["map@200"]} and set(d["recall_at"]) == {"100", "200"}
    json.dumps(d)
    assert "mAP@all" in m.summary() and "mAP@200" in m.summary()


def test_hamming_radius_precision_by_hand():
    from ray_sbir.search.hamming import pack_codes
    from ray_sbir.eval.metrics import hamming_radius_precision

    gallery = pack_codes(np.array([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]], bool))
    queries = pack_codes(np.array([[0, 0, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0]], bool))
    # q0: rows 0, 1, 2 within 2 (labels a, b, a) -> 2/3; q1 (b): only row 3 (d 1; rows 0 and 2 at d 3) -> 1;
    # q2 (label c): rows 0, 2, 3 at d 2, row 1 at d 3 -> 3 inside, none relevant -> 0
    out = hamming_radius_precision(queries, ["a", "b", "c"], gallery, ["a", "b", "a", "b"], radius=2)
    assert out["precision_hamming_radius2"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert out["empty_hamming_radius2"] == 0
    far = pack_codes(np.array([[1, 1, 1, 1]], bool))
    out = hamming_radius_precision(far, ["a"], gallery[:1], ["a"], radius=2)  # nothing within 2: counts 0
    assert out == {"precision_hamming_radius2": 0.0, "empty_hamming_radius2": 1.0}
