"""Filtered search: the filter's parsing and row mask, and every kind of index restricted by it inside its scan,
exact against brute force on the filtered subset (float: both the gathered and the masked-scan path; binary and
sign-coded; sharded; two-stage; query expansion, whose neighbours come from the filtered rows too)."""

import numpy as np
import pyarrow as pa
import pytest

from ray_sbir.search import EmbeddingKind, QueryExpanded, build_index
from ray_sbir.search.exact import ExactShard
from ray_sbir.search.expansion import expand_queries
from ray_sbir.search.filters import RowFilter, column_kinds

N, D = 400, 16
COLUMNS = {"label": pa.array([f"c{i % 7}" for i in range(N)]).dictionary_encode(),
           "countrycode": pa.array([None if i % 11 == 0 else ("DE" if i % 3 else "FR") for i in range(N)]),
           "recognized": pa.array([i % 2 == 0 for i in range(N)]),
           "id": pa.array([f"set{i % 4}/item{i}" for i in range(N)]),
           "source_offset": pa.array(np.arange(N, dtype=np.int64))}
KINDS = column_kinds({k: v.type for k, v in COLUMNS.items()})


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_parse_and_mask():
    assert KINDS == {"label": "string", "countrycode": "string", "recognized": "bool", "id": "string",
                     "source_offset": "int"}
    f = RowFilter.parse({"label": ["c1", "c2"], "countrycode": "DE", "recognized": True,
                         "id": {"prefix": "set1/"}}, KINDS)
    mask = f.mask(COLUMNS, N)
    want = np.array([(i % 7 in (1, 2)) and i % 11 and i % 3 and i % 2 == 0 and i % 4 == 1 for i in range(N)])
    np.testing.assert_array_equal(mask, want.astype(bool))
    assert f.to_dict() == {"label": ["c1", "c2"], "countrycode": ["DE"], "recognized": [True],
                           "id": {"prefix": "set1/"}}
    assert not RowFilter.parse({"label": []}, KINDS).mask(COLUMNS, N).any()  # an empty list matches nothing
    assert RowFilter.parse({"source_offset": [3, 5]}, KINDS).mask(COLUMNS, N).sum() == 2


@pytest.mark.parametrize("obj,message", [
    ({"colour": "red"}, "filter: unknown field 'colour': this index's rows have countrycode, id, label, recognized"),
    ({"recognized": "yes"}, "filter.recognized: expected true or false, got 'yes'"),
    ({"label": 3}, "filter.label: expected a string, a list of strings"),
    ({"label": {"suffix": "x"}}, "filter.label: expected a string, a list of strings"),
    ({"source_offset": "3"}, "filter.source_offset: expected an integer"),
    (["label"], "filter: expected an object of column: value pairs, got list"),
])
def test_bad_filters_name_the_field(obj, message):
    with pytest.raises(ValueError) as e:
        RowFilter.parse(obj, KINDS)
    assert str(e.value).startswith(message), str(e.value)


def brute(q, emb, allowed, k):
    """Exact top-k by inner product over the allowed rows, ties by lower row."""
    rows = np.flatnonzero(allowed)
    s = q @ emb[rows].T
    order = np.lexsort((np.broadcast_to(rows, s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), rows[order]


@pytest.mark.parametrize("selectivity", [0.01, 0.1, 0.5, 0.9])  # gathered below 25%, masked scan above
@pytest.mark.parametrize("strategy", ["filter", "direct"])
def test_exact_float_search_is_brute_force_on_the_subset(selectivity, strategy):
    rng = np.random.default_rng(1)
    emb, q = _unit(rng.standard_normal((N, D))), _unit(rng.standard_normal((5, D)))
    emb[10:20] = emb[0]  # ties: the lower row first
    allowed = rng.random(N) < selectivity
    allowed[[0, 10, 15]] = True
    shard = ExactShard(emb, offset=100, chunk_size=64, strategy=strategy)
    for k in (1, 7, int(allowed.sum()) + 5):
        scores, rows = shard.search(q, k, allowed)
        want_s, want_r = brute(q, emb, allowed, k)
        np.testing.assert_array_equal(rows, want_r + 100)
        np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-6)
    s, r = shard.search(q, 5, np.zeros(N, bool))
    assert s.shape == r.shape == (5, 0)
    with pytest.raises(ValueError, match="boolean mask of the index's 400 rows"):
        shard.search(q, 5, np.ones(N - 1, bool))


def _kinds():
    return {"float": EmbeddingKind("float", D), "binary": EmbeddingKind("binary", D, False),
            "sign_codes": EmbeddingKind("float", D).with_sign_codes(32, seed=3, candidates=40)}


@pytest.mark.parametrize("kind_name", ["float", "binary", "sign_codes"])
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("candidates", [0, 30])
def test_every_kind_sharded_and_two_stage_filters_inside_the_scan(kind_name, num_shards, candidates):
    rng = np.random.default_rng(2)
    kind = _kinds()[kind_name]
    emb = rng.standard_normal((N, D)).astype(np.float32)
    emb = emb if kind.binary else _unit(emb)
    q = rng.standard_normal((4, D)).astype(np.float32)
    allowed = RowFilter.parse({"label": ["c2", "c5"]}, KINDS).mask(COLUMNS, N)
    index = build_index(kind, emb, num_shards=num_shards, hamming_candidates=candidates)
    k = 9
    scores, rows = index.search(q, k, allowed)
    assert rows.shape == (4, k) and allowed[rows].all()
    # The same answer as the index built over the allowed rows alone, mapped back to their rows.
    sub_rows = np.flatnonzero(allowed)
    sub = build_index(kind, emb[sub_rows], hamming_candidates=candidates)
    want_s, want_r = sub.search(q, k)
    np.testing.assert_array_equal(rows, sub_rows[want_r])
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)
    # k larger than the matching rows: every matching row, no other.
    _, all_rows = index.search(q, 500, allowed)
    assert sorted(all_rows[0].tolist()) == sub_rows.tolist()


def test_query_expansion_takes_its_neighbours_from_the_filtered_rows():
    rng = np.random.default_rng(3)
    emb, q = _unit(rng.standard_normal((N, D))), _unit(rng.standard_normal((3, D)))
    allowed = RowFilter.parse({"recognized": False, "countrycode": "FR"}, KINDS).mask(COLUMNS, N)
    index = QueryExpanded(build_index(EmbeddingKind("float", D), emb, num_shards=2), 4, 1.0)
    scores, rows = index.search(q, 6, allowed)
    _, first = brute(q, emb, allowed, 4)
    expanded = expand_queries(q, emb[first], 1.0)
    want_s, want_r = brute(expanded, emb, allowed, 6)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-6)
    s, r = index.search(q, 6, np.zeros(N, bool))  # nothing matches: an empty answer, no error
    assert r.shape == (3, 0)
