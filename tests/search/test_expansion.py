"""Alpha query expansion and database-side augmentation (``ray_sbir.search.expansion``) against a NumPy reference
written from the formulas (Radenovic et al. TPAMI 2018), loop by loop: ids and scores, float and binary indexes,
sharded or not; an index whose manifest records query expansion is opened expanded."""

from __future__ import annotations

import numpy as np
import pytest

from ray_sbir.search import EmbeddingKind, ExpansionSettings, QueryExpanded, augment_database, build_index, \
    expand_queries, open_index


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows by score descending, equal scores by lower row."""
    return np.lexsort((np.arange(len(scores)), -scores))[:k]


def reference_expand(q: np.ndarray, neighbours: list[np.ndarray], alpha: float) -> np.ndarray:
    qn = q / np.linalg.norm(q)
    total = qn.astype(np.float64).copy()
    for v in neighbours:
        vn = v / np.linalg.norm(v)
        total += max(float(qn @ vn), 0.0) ** alpha * vn
    return total / np.linalg.norm(total)


def gallery(n=60, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, d))
    x = centres[rng.integers(0, 5, n)] + 0.6 * rng.normal(size=(n, d))
    q = centres[rng.integers(0, 5, 7)] + 0.6 * rng.normal(size=(7, d))
    return unit(x).astype(np.float32), unit(q).astype(np.float32)


def test_expand_queries_matches_the_formula_and_masks():
    rng = np.random.default_rng(1)
    q, v = rng.normal(size=(3, 8)), rng.normal(size=(3, 4, 8))
    got = expand_queries(q, v, alpha=3.0)
    for i in range(3):
        np.testing.assert_allclose(got[i], reference_expand(q[i], list(v[i]), 3.0), atol=1e-6)
    valid = np.array([[True, False, True, True]] * 3)
    masked = expand_queries(q, v, 2.0, valid)
    np.testing.assert_allclose(masked[0], reference_expand(q[0], [v[0, 0], v[0, 2], v[0, 3]], 2.0), atol=1e-6)
    # alpha = 0 is average query expansion over the positively similar neighbours (weight 1 each)
    avg = expand_queries(q[:1], v[:1], 0.0)[0]
    pos = [u for u in v[0] if unit(q[0]) @ unit(u) > 0]
    np.testing.assert_allclose(avg, unit(unit(q[0]) + sum(unit(u) for u in pos)), atol=1e-6)


@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("n,alpha", [(1, 3.0), (5, 3.0), (10, 1.0)])
def test_query_expansion_over_a_float_index_equals_the_reference(n, alpha, num_shards):
    x, q = gallery()
    index = QueryExpanded(build_index(EmbeddingKind(), x, num_shards=num_shards), n, alpha)
    scores, rows = index.search(q, 10)
    for i in range(len(q)):
        first = reference_topk(x @ q[i], n)
        q2 = reference_expand(q[i], [x[j] for j in first], alpha)
        expected = reference_topk(x @ q2, 10)
        assert rows[i].tolist() == expected.tolist()
        np.testing.assert_allclose(scores[i], (x @ q2)[expected], atol=1e-5)


def test_query_expansion_over_a_binary_index_uses_hamming_neighbours_and_their_floats():
    x, q = gallery(d=64, seed=2)
    kind = EmbeddingKind("binary", 64, False)
    index = QueryExpanded(build_index(kind, x), 4, 3.0)
    scores, rows = index.search(q, 8)
    bits = x > 0
    for i in range(len(q)):
        # Hamming ranking: score bits - 2 * distance, ties by lower row
        first = reference_topk(64 - 2 * (bits != (q[i] > 0)).sum(1).astype(np.float64), 4)
        q2 = reference_expand(q[i], [x[j] for j in first], 3.0)
        ham = 64 - 2 * (bits != (q2 > 0)).sum(1)
        expected = reference_topk(ham.astype(np.float64), 8)
        assert rows[i].tolist() == expected.tolist()
        np.testing.assert_array_equal(scores[i], ham[expected])


@pytest.mark.parametrize("n,alpha", [(1, 3.0), (4, 3.0), (6, 0.5)])
def test_database_side_augmentation_equals_the_reference(n, alpha):
    x, _ = gallery(n=40, seed=3)
    x[7] = x[3]  # a duplicate: self may not be first among equal scores, and must still be left out
    out = augment_database(build_index(EmbeddingKind(), x, num_shards=2), x, ExpansionSettings(n, alpha),
                           batch_size=16)
    for j in range(len(x)):
        order = [r for r in reference_topk(x @ x[j], n + 1) if r != j][:n]
        np.testing.assert_allclose(out[j], reference_expand(x[j], [x[r] for r in order], alpha), atol=1e-5)


def test_augmenting_rows_at_an_offset_leaves_out_each_row_itself():
    x, _ = gallery(n=30, seed=4)
    index = build_index(EmbeddingKind(), x)
    whole = augment_database(index, x, ExpansionSettings(3, 3.0))
    part = augment_database(index, x[10:20], ExpansionSettings(3, 3.0), offset=10)
    np.testing.assert_allclose(part, whole[10:20], atol=1e-6)


def test_an_index_whose_manifest_records_query_expansion_opens_expanded(tmp_path):
    from ray_sbir.index import write_index
    from ray_sbir.search.expansion import search_entry

    x, q = gallery(seed=5)
    ids = [f"p{i}" for i in range(len(x))]
    write_index(str(tmp_path / "qe"), ids, x, extra_manifest={"search": search_entry(
        ExpansionSettings(3, 2.0), ExpansionSettings())})
    write_index(str(tmp_path / "plain"), ids, x)
    expanded = open_index(str(tmp_path / "qe"))
    assert isinstance(expanded, QueryExpanded) and expanded.settings == ExpansionSettings(3, 2.0)
    assert not isinstance(open_index(str(tmp_path / "qe"), expand=False), QueryExpanded)
    assert not isinstance(open_index(str(tmp_path / "plain")), QueryExpanded)
    s1, r1 = expanded.search(q, 5)
    s2, r2 = QueryExpanded(open_index(str(tmp_path / "plain")), 3, 2.0).search(q, 5)
    assert r1.tolist() == r2.tolist()
    np.testing.assert_allclose(s1, s2)


@pytest.mark.parametrize("bad", [{"n": -1}, {"n": 2.5}, {"alpha": -1.0}, {"n": 3, "beta": 1}, {"alpha": "x"}])
def test_bad_settings_name_what_is_wrong(bad):
    from ray_sbir.search.expansion import ExpansionSettings as S

    with pytest.raises(ValueError, match="index manifest search.query_expansion"):
        S.from_dict(bad, "index manifest search.query_expansion")
