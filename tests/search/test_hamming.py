"""Exact Hamming search (``ray_sbir.search.hamming``) against a brute-force reference: ties by lower row, several
shard counts and chunk sizes, codes of 1-192 bits, the torch popcount against NumPy's, two-stage re-scoring; the
compiled CPU kernel's edge cases (k > n, no rows, no queries, k = 1, masses of ties, 3-word codes, batches of 1
and 300 queries, several threads and tiles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ray_sbir.search import EmbeddingKind, Rescored, build_index
from ray_sbir.search import hamming_kernel
from ray_sbir.search.hamming import (
    HammingShard, ShardedHamming, hamming_distances, pack_codes, unpack_codes,
)


def brute_force(query_bits: np.ndarray, gallery_bits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = (query_bits[:, None, :] != gallery_bits[None, :, :]).sum(-1)
    rows = np.arange(len(gallery_bits))
    order = [np.lexsort((rows, di))[:k] for di in d]  # distance, then lower row
    return np.stack([di[o] for di, o in zip(d, order)]), np.stack(order)


@pytest.mark.parametrize("bits", [1, 7, 16, 64, 65, 128])
def test_pack_round_trip_and_distances(bits):
    rng = np.random.default_rng(bits)
    b = rng.random((9, bits)) < 0.5
    words = pack_codes(b)
    assert words.dtype == np.uint64 and words.shape == (9, -(-bits // 64))
    np.testing.assert_array_equal(unpack_codes(words, bits), b)
    np.testing.assert_array_equal(pack_codes(np.where(b, 0.3, -2.0)), words)  # sign of real outputs
    ref = (b[:, None, :] != b[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hamming_distances(words, words), ref)
    # the SWAR popcount on torch tensors (what CUDA runs), on this CPU
    t = torch.from_numpy(words.view(np.int64))
    np.testing.assert_array_equal(hamming_distances(t, t).numpy(), ref)


@pytest.mark.parametrize("bits", [8, 64, 96])
@pytest.mark.parametrize("num_shards,chunk_size", [(1, 65536), (1, 7), (3, 5), (8, 64)])
@pytest.mark.parametrize("k", [1, 5, 40, 500])
@pytest.mark.parametrize("use_torch", [False, True])  # True: the path CUDA runs (SWAR popcount, selection on device)
def test_sharded_search_matches_brute_force_with_ties(bits, num_shards, chunk_size, k, use_torch):
    rng = np.random.default_rng(bits * 1000 + k)
    # Few distinct codes: masses of exact ties, which must come back in row order.
    distinct = rng.random((12, bits)) < 0.5
    gallery = distinct[rng.integers(0, 12, 300)]
    queries = np.concatenate([distinct[:3], rng.random((3, bits)) < 0.5])
    index = ShardedHamming(pack_codes(gallery), bits, num_shards, chunk_size=chunk_size, use_torch=use_torch)
    d, rows = index.search(pack_codes(queries), k)
    ref_d, ref_rows = brute_force(queries, gallery, k)
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(rows, ref_rows)


def test_shard_offsets_validation_and_memory():
    codes = pack_codes(np.eye(4, 64, dtype=bool))
    shard = HammingShard(codes, 64, offset=100)
    d, rows = shard.search(codes[2:3], 2)
    assert rows[0, 0] == 102 and d[0, 0] == 0 and d[0, 1] == 2 and rows[0, 1] == 100
    assert shard.memory_bytes() == 4 * 8  # 8 bytes per 64-bit code
    with pytest.raises(ValueError, match=r"\(n, 2\) uint64 words for 65 bits"):
        HammingShard(codes, 65)
    with pytest.raises(ValueError, match="queries must be"):
        shard.search(np.zeros((1, 2), np.uint64), 1)
    with pytest.raises(ValueError, match="k must be"):
        shard.search(codes[:1], 0)


def test_two_stage_rescoring_orders_candidates_by_float_score():
    """Rescored over a (sharded) binary index: the Hamming-nearest candidates, over all shards, ordered by the
    inner product of the stored float relaxation."""
    rng = np.random.default_rng(3)
    emb = np.tanh(rng.standard_normal((200, 32))).astype(np.float32)  # relaxed codes; their signs are the bits
    q = emb[:4] + 0.05 * rng.standard_normal((4, 32)).astype(np.float32)
    kind = EmbeddingKind("binary", 32)
    every = Rescored(build_index(kind, emb, num_shards=3), candidates=200)  # every row a candidate
    scores, rows = every.search(q, 10)
    exact = q @ emb.T
    for i in range(4):
        ref = np.lexsort((np.arange(200), -exact[i]))[:10]
        np.testing.assert_array_equal(rows[i], ref)
        np.testing.assert_allclose(scores[i], exact[i, ref], rtol=1e-5)
    few = build_index(kind, emb, num_shards=2, hamming_candidates=20)  # the same stage, built by the index
    _, rows20 = few.search(q, 5)
    _, cand = ShardedHamming(pack_codes(emb), 32, 2).search(pack_codes(q), 20)
    assert all(set(r) <= set(c) for r, c in zip(rows20, cand))  # only Hamming candidates are re-scored
    one_shard = build_index(kind, emb, hamming_candidates=20).search(q, 5)
    np.testing.assert_array_equal(one_shard[1], rows20)  # shard-count independent


@pytest.mark.parametrize("bits,n,k,nq", [
    (64, 50, 80, 3),  # k > n: every row, sorted
    (64, 1, 1, 2),  # one row
    (128, 1000, 1, 5),  # k = 1
    (192, 2000, 37, 4),  # 3 words: the kernel's generic path
    (256, 2500, 60, 6),  # 4 words: unrolled
    (250, 900, 900, 3),  # 4 words with padding bits, k = n
    (130, 700, 700, 2),  # k = n
    (64, 3000, 10, 1),  # a batch of one
    (96, 1500, 25, 300),  # a batch of 300
    (32, 5000, 64, 7),  # padding bits
])
@pytest.mark.parametrize("threads,tile", [(1, None), (3, None), (2, 100), (4, 1)])
def test_kernel_edge_cases_match_brute_force(bits, n, k, nq, threads, tile, monkeypatch):
    monkeypatch.setattr(hamming_kernel, "MIN_PART_WORDS", 1)  # split rows over the threads even when small
    rng = np.random.default_rng(bits + n + k + nq)
    gallery = rng.random((n, bits)) < 0.5
    gallery[n // 2:] = gallery[: n - n // 2]  # every code twice: ties across the thread parts
    queries = np.concatenate([gallery[rng.integers(0, n, nq // 2)], rng.random((nq - nq // 2, bits)) < 0.5])
    d, rows = HammingShard(pack_codes(gallery), bits, offset=10, chunk_size=tile, num_threads=threads).search(
        pack_codes(queries), k)
    ref_d, ref_rows = brute_force(queries, gallery, k)
    assert d.dtype == np.int32 and rows.dtype == np.int64 and d.shape == (nq, min(k, n))
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(rows, ref_rows + 10)


@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_masses_of_ties_keep_lowest_rows(threads, monkeypatch):
    """Every row at the same distance, or at two distances: the answers are the lowest rows, in order."""
    monkeypatch.setattr(hamming_kernel, "MIN_PART_WORDS", 1)
    same = np.zeros((10_000, 2), np.uint64)
    d, rows = HammingShard(same, 128, num_threads=threads).search(np.zeros((3, 2), np.uint64), 500)
    assert (d == 0).all() and (rows == np.arange(500)).all()
    two = np.zeros((10_000, 1), np.uint64)
    two[::3] = 1  # distance 1 from query 0, every third row
    d, rows = HammingShard(two, 64, num_threads=threads).search(np.zeros((1, 1), np.uint64), 7000)
    near = np.setdiff1d(np.arange(10_000), np.arange(0, 10_000, 3))
    np.testing.assert_array_equal(rows[0], np.concatenate([near, np.arange(0, 10_000, 3)])[:7000])
    np.testing.assert_array_equal(d[0], (np.arange(7000) >= len(near)).astype(np.int32))


def test_kernel_empty_inputs_and_warm_up():
    assert hamming_kernel.warm_up() == hamming_kernel.COMPILE_SECONDS > 0  # paid once, when the first shard is made
    empty = HammingShard(np.zeros((0, 2), np.uint64), 100)
    d, rows = empty.search(np.zeros((4, 2), np.uint64), 5)
    assert d.shape == rows.shape == (4, 0)
    d, rows = HammingShard(np.ones((9, 1), np.uint64), 64).search(np.zeros((0, 1), np.uint64), 5)
    assert d.shape == rows.shape == (0, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    codes = pack_codes(rng.random((5000, 64)) < 0.5)
    q = codes[:7]
    cpu = HammingShard(codes, 64).search(q, 50)
    gpu = HammingShard(codes, 64, device="cuda", chunk_size=999).search(q, 50)
    np.testing.assert_array_equal(cpu[0], gpu[0])
    np.testing.assert_array_equal(cpu[1], gpu[1])
