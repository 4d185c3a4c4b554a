"""Exact sharded search against a float64 NumPy brute force; index Parquet round trip; validation."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from ray_sbir.index import read_index, write_index
from ray_sbir.search import ExactShard, ShardedIndex, exact_topk, merge_topk, shard_slices


def normalised(rng, n, d, dtype=np.float32):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def exact_data(rng, n, d, nq, distinct=True):
    """Small-integer vectors: every product and partial sum is exact in float32 (and float16 storage), so
    float32 and float64 scores are equal and any difference from the reference is a search bug. With
    ``distinct``, a last coordinate ``j / 4096`` (query coordinate 1) makes every score of a query unique."""
    g = rng.integers(-4, 5, size=(n, d)).astype(np.float32)
    q = rng.integers(-4, 5, size=(nq, d)).astype(np.float32)
    if distinct:
        assert n <= 4096
        g[:, -1] = rng.permutation(n) / 4096
        q[:, -1] = 1.0
    return g, q


def reference(gallery, queries, k):
    """float64 brute force; ties by lower index (stable sort on descending score)."""
    s = np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def assert_matches(result, gallery, queries, k, atol=1e-5):
    scores, idx = result
    ref_s, ref_i = reference(gallery, queries, k)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    assert idx.shape == ref_i.shape == (len(queries), min(k, len(gallery)))
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=atol, rtol=1e-6)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return normalised(rng, 50, 16), normalised(rng, 9, 16)


@pytest.fixture(scope="module")
def big():
    return exact_data(np.random.default_rng(1), 3000, 32, 40)


def test_no_ties_in_random_data(data, big):
    for g, q in (data, big):  # the tests below rely on exact ids: no two scores of a query coincide
        s = np.sort(q.astype(np.float64) @ g.astype(np.float64).T, axis=1)
        assert np.diff(s, axis=1).min() > 1e-5  # float32 rounding is ~1e-7


# Chunks of one row only with small k: with large k they are slow and add nothing the other sizes don't cover.
CHUNK_K = [(c, k) for c in (1, 7, 64, 100, 4096) for k in (1, 5, 100, 3001) if not (c == 1 and k > 5)]


@pytest.mark.parametrize("strategy", ["filter", "topk", "direct"])
@pytest.mark.parametrize("chunk_size,k", CHUNK_K)
def test_exact_shard_matches_bruteforce(big, strategy, chunk_size, k):
    g, q = big
    shard = ExactShard(g, device="cpu", chunk_size=chunk_size, strategy=strategy)
    assert_matches(shard.search(q, k), g, q, k)


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7, 50])
@pytest.mark.parametrize("k", [1, 6, 8, 20, 50, 80])
def test_sharded_matches_bruteforce(data, num_shards, k):
    g, q = data
    index = ShardedIndex(g, num_shards, device="cpu", chunk_size=3)
    sizes = [len(s) for s in index.shards]
    assert sum(sizes) == 50 and max(sizes) - min(sizes) <= 1 and len(sizes) == num_shards
    assert_matches(index.search(q, k), g, q, k)  # k > shard (8 or 7 rows at 7 shards), k > gallery (80)


def test_explicit_uneven_boundaries(big):
    g, q = big
    index = ShardedIndex(g, boundaries=[0, 1, 1000, 1003, 3000], device="cpu", chunk_size=256)
    assert [len(s) for s in index.shards] == [1, 999, 3, 1997]
    assert [s.offset for s in index.shards] == [0, 1, 1000, 1003]
    assert_matches(index.search(q, 10), g, q, 10)
    with pytest.raises(ValueError, match="boundaries"):
        ShardedIndex(g, boundaries=[0, 2000, 1000, 3000])
    with pytest.raises(ValueError, match="boundaries"):
        ShardedIndex(g, boundaries=[0, 2999])


def test_shard_slices():
    assert shard_slices(50, 7) == [slice(0, 8), slice(8, 15), slice(15, 22), slice(22, 29), slice(29, 36),
                                   slice(36, 43), slice(43, 50)]
    assert shard_slices(4, 1) == [slice(0, 4)]
    assert [s.stop - s.start for s in shard_slices(2, 4)] == [1, 1, 0, 0]
    assert ShardedIndex.shard_slices(10, 3) == shard_slices(10, 3)
    with pytest.raises(ValueError, match="num_shards"):
        shard_slices(10, 0)


def test_shard_offsets_give_global_indices(data):
    g, q = data
    results = [ExactShard(g[s], offset=s.start, device="cpu", chunk_size=4).search(q, 10)
               for s in shard_slices(len(g), 4)]
    for (_, idx), s in zip(results, shard_slices(len(g), 4)):
        assert idx.min() >= s.start and idx.max() < s.stop
    assert_matches(merge_topk(results, 10), g, q, 10)
    assert_matches(merge_topk(results[::-1], 10), g, q, 10)  # order of the shard answers does not matter


def test_ties_break_by_lower_index():
    rng = np.random.default_rng(2)
    base, q = exact_data(rng, 6, 8, 5)  # exact arithmetic: duplicate rows score exactly the same
    # Rows 0..5 distinct; then each repeated 4 more times, scattered: every score appears 5 times.
    g = np.concatenate([base, base[::-1], base, base[[3, 1, 5, 0, 2, 4]], base])
    for chunk_size in (1, 4, 7, 64):
        for strategy in ("filter", "topk", "direct"):
            shard = ExactShard(g, device="cpu", chunk_size=chunk_size, strategy=strategy)
            for k in (1, 3, 5, 7, 12, 30):
                np.testing.assert_array_equal(shard.search(q, k)[1], reference(g, q, k)[1])
    for num_shards in (2, 3, 7):
        idx = ShardedIndex(g, num_shards, device="cpu", chunk_size=2).search(q, 13)[1]
        np.testing.assert_array_equal(idx, reference(g, q, 13)[1])
    # An all-equal gallery: the answer is the first k rows, in order.
    same = np.tile(base[:1], (300, 1))
    for strategy in ("filter", "topk", "direct"):
        idx = ExactShard(same, device="cpu", chunk_size=64, strategy=strategy).search(q, 70)[1]
        np.testing.assert_array_equal(idx, np.tile(np.arange(70), (5, 1)))


@pytest.mark.parametrize("strategy", ["filter", "topk", "direct"])
def test_massive_ties_every_path(strategy):
    """Small-integer data without the distinguishing coordinate: each query has only a few dozen distinct
    scores over 3000 rows, so the top-k boundary always falls inside a group of equal scores."""
    g, q = exact_data(np.random.default_rng(8), 3000, 16, 12, distinct=False)
    for chunk_size in (64, 100, 1000):
        shard = ExactShard(g, device="cpu", chunk_size=chunk_size, strategy=strategy)
        for k in (1, 10, 100, 700):
            assert_matches(shard.search(q, k), g, q, k)
    assert_matches(ShardedIndex(g, 7, device="cpu", chunk_size=128, strategy=strategy).search(q, 50), g, q, 50)


def test_merge_topk_ties_and_widths():
    s1, i1 = np.array([[0.9, 0.5]], np.float32), np.array([[7, 3]])
    s2, i2 = np.array([[0.9, 0.5, 0.1]], np.float32), np.array([[2, 9, 1]])
    s, i = merge_topk([(s1, i1), (torch.from_numpy(s2), torch.from_numpy(i2))], 4)
    np.testing.assert_array_equal(i, [[2, 7, 3, 9]])
    np.testing.assert_allclose(s, [[0.9, 0.9, 0.5, 0.5]])
    assert merge_topk([(s1, i1)], 10)[1].shape == (1, 2)
    with pytest.raises(ValueError, match="number of queries"):
        merge_topk([(s1, i1), (np.zeros((2, 1), np.float32), np.zeros((2, 1)))], 1)
    with pytest.raises(ValueError, match="at least one"):
        merge_topk([], 1)


def test_fp16_storage_same_ids_on_separated_data():
    rng = np.random.default_rng(3)
    g = normalised(rng, 400, 256)
    # Each query mixes three gallery rows with weights 0.8, 0.5, 0.3: its top three scores are far apart
    # (and above every other row's) compared to fp16 rounding (~1e-3).
    picks = rng.permutation(400)[:15].reshape(5, 3)
    q = np.einsum("j,qjd->qd", [0.8, 0.5, 0.3], g[picks])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ref_s, ref_i = reference(g, q, 4)
    assert np.diff(ref_s, axis=1).max() < -2e-2  # well separated, including the 4th
    ref_s, ref_i = ref_s[:, :3], ref_i[:, :3]
    np.testing.assert_array_equal(ref_i, picks)
    for compute in (None, "float16"):  # upcast chunks (default on CPU) and a true fp16 product
        shard = ExactShard(g, device="cpu", dtype="float16", compute_dtype=compute, chunk_size=128)
        assert shard.embeddings.dtype == torch.float16
        scores, idx = shard.search(q, 3)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(scores, ref_s, atol=2e-3)
        assert scores.dtype == np.float32
    assert shard.memory_bytes()["embeddings"] == 400 * 256 * 2


def test_defaults_and_device_placement(data):
    g, q = data
    shard = ExactShard(g)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert shard.device.type == expected
    assert shard.dtype == (torch.float16 if expected == "cuda" else torch.float32)
    # A float32 numpy gallery on CPU is used in place (no copy).
    cpu = ExactShard(g, device="cpu")
    assert cpu.embeddings.data_ptr() == torch.from_numpy(g).data_ptr() or not g.flags.writeable
    # One query as a 1-D vector; torch and float64 queries.
    assert_matches(cpu.search(q[0], 4), g, q[:1], 4)
    assert_matches(cpu.search(torch.from_numpy(q).double(), 4), g, q, 4)
    s, i = cpu.search(np.zeros((0, 16), np.float32), 4)
    assert s.shape == i.shape == (0, 4)
    # num_threads is applied during the search and restored afterwards.
    before = torch.get_num_threads()
    assert_matches(ExactShard(g, device="cpu", num_threads=1).search(q, 4), g, q, 4)
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("strategy", ["auto", "filter", "direct"])
def test_cuda_matches_cpu(big, dtype, strategy):
    g, q = big
    for chunk_size in (1000, None):
        s, i = ExactShard(g, device="cuda", dtype=dtype, chunk_size=chunk_size, strategy=strategy).search(q, 50)
        assert_matches((s, i), g, q, 50, atol=1e-5 if dtype == "float32" else 2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_direct_ties():
    g, q = exact_data(np.random.default_rng(8), 3000, 16, 12, distinct=False)
    shard = ExactShard(g, device="cuda", dtype="float32", strategy="direct", chunk_size=1000)
    for k in (1, 100, 700):
        assert_matches(shard.search(q, k), g, q, k)


def test_empty_shard(data):
    g, q = data
    s, i = ExactShard(g[:0], device="cpu").search(q, 3)
    assert s.shape == i.shape == (len(q), 0)
    index = ShardedIndex(g[:3], 5, device="cpu")  # more shards than rows: two are empty
    assert_matches(index.search(q, 2), g[:3], q, 2)


def test_validation(data):
    g, q = data
    shard = ExactShard(g, device="cpu")
    with pytest.raises(ValueError, match="query dimension 8 does not match the index dimension 16"):
        shard.search(q[:, :8], 3)
    for bad_k in (0, -1, 2.5, None, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            shard.search(q, bad_k)
    for bad in (np.nan, np.inf, -np.inf):
        qq = q.copy()
        qq[2, 3] = bad
        with pytest.raises(ValueError, match=r"NaN or Inf \(query rows \[2\]\)"):
            shard.search(qq, 3)
    with pytest.raises(ValueError, match="queries must be"):
        shard.search(np.zeros((2, 3, 16), np.float32), 3)
    with pytest.raises(ValueError, match="overflow"):
        ExactShard(g, device="cpu", dtype="float16", compute_dtype="float16").search(q * 1e6, 3)
    with pytest.raises(ValueError, match="k must be"):
        ShardedIndex(g, 2, device="cpu").search(q, 0)
    with pytest.raises(ValueError, match="query dimension"):
        ShardedIndex(g, 2, device="cpu").search(q[:, :4], 1)
    bad_g = g.copy()
    bad_g[4, 0] = np.nan
    with pytest.raises(ValueError, match="gallery embeddings contain NaN"):
        ExactShard(bad_g, device="cpu")
    with pytest.raises(ValueError, match=r"embeddings must be \(n, d\)"):
        ExactShard(g[0], device="cpu")
    with pytest.raises(ValueError, match="strategy"):
        ExactShard(g, device="cpu", strategy="approx")
    with pytest.raises(ValueError, match="dtype"):
        ExactShard(g, device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="ids has 3 entries"):
        ShardedIndex(g, ids=["a", "b", "c"])


def test_sharded_index_over_an_index_folder_and_query(tmp_path):
    rng = np.random.default_rng(7)
    g = normalised(rng, 37, 8)
    q = normalised(rng, 3, 8)
    ids = [f"id{i}" for i in range(37)]
    labels = [f"c{i % 5}" for i in range(37)]
    uri = str(tmp_path / "idx")
    write_index(uri, ids, g, labels=labels, uris=[f"/p/{i}.png" for i in range(37)], rows_per_file=10)
    t = read_index(uri, columns=["id", "uri", "label", "embedding"])
    index = ShardedIndex(t.embeddings, 3, ids=t.ids, labels=t.labels, uris=t.uris, device="cpu", chunk_size=4)
    assert index.num_shards == 3 and len(index) == 37
    res = index.query(q, 5)
    ref_s, ref_i = reference(g, q, 5)
    np.testing.assert_array_equal(res.indices, ref_i)
    np.testing.assert_allclose(res.scores, ref_s, atol=1e-5)
    assert res.ids.tolist() == [[ids[j] for j in row] for row in ref_i]
    assert res.labels.tolist() == [[labels[j] for j in row] for row in ref_i]
    assert res.uris.tolist() == [[f"/p/{j}.png" for j in row] for row in ref_i]
    mem = index.memory_bytes()
    assert mem["embeddings"] == 37 * 8 * 4 and mem["ids"] > 0 and mem["per_item"] > 32

    # A replica's shard maps its own global indices to ids.
    sl = shard_slices(37, 3)[1]
    shard = ExactShard(g[sl], offset=sl.start, ids=ids[sl], device="cpu")
    _, idx = shard.search(q, 4)
    assert shard.lookup(idx).tolist() == [[ids[j] for j in row] for row in idx]
    with pytest.raises(IndexError, match="outside this shard"):
        shard.lookup([0])


def test_exact_topk_repairs_ties_torch_topk_cuts():
    """Integer scores with large tied groups: the k-th value is shared with items left out by torch.topk."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (6, 400), generator=gen).float()
    for k in (1, 7, 100, 399, 400, 450):
        vals, idx = exact_topk(scores, k)
        order = np.lexsort((np.arange(400)[None].repeat(6, 0), -scores.numpy()), axis=1)[:, :k]
        np.testing.assert_array_equal(idx.numpy(), order)
        np.testing.assert_array_equal(vals.numpy(), np.take_along_axis(scores.numpy(), order, 1))


def test_auto_strategy_and_direct_default_chunk(big):
    g, q = big
    shard = ExactShard(g, device="cpu")
    assert shard.strategy == "auto" and shard.strategy_for(1) == "filter"  # CUDA: "direct" below 512 queries
    assert_matches(ExactShard(g, device="cpu", strategy="direct").search(q, 37), g, q, 37)


def test_an_index_opened_in_float16_holds_only_float16_rows(tmp_path):
    """``open_index(dtype="float16")`` reads the rows straight into the shard's float16 storage (across files)
    and ranks as the float16 rows do."""
    from ray_sbir.search import open_index

    g = np.random.default_rng(3).standard_normal((40, 8)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    uri = str(tmp_path / "idx")
    write_index(uri, [str(i) for i in range(40)], g, rows_per_file=7)
    shard = open_index(uri, dtype="float16")
    assert shard.embeddings.dtype == torch.float16
    np.testing.assert_array_equal(shard.embeddings.numpy(), g.astype(np.float16))
    q = g[:3]
    want = np.argsort(-(q @ g.astype(np.float16).astype(np.float32).T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(shard.search(q, 5)[1], want)
