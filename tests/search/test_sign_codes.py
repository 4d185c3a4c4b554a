"""Sign codes of a random rotation: the rotation, the codes, the manifest entry, and a coded float index searched
two-stage (Hamming over the codes, floats re-scoring the first candidates) exactly as brute force does it."""

import numpy as np
import pytest

from ray_sbir.config import ConfigError, load_config
from ray_sbir.index import index_layout, write_index
from ray_sbir.search import EmbeddingKind, Rescored, open_index
from ray_sbir.search.hamming import unpack_codes
from ray_sbir.search.open import index_spec
from ray_sbir.search.sign_codes import SignCodes, rotation


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("dim,bits", [(16, 8), (16, 16), (16, 40)])
def test_rotation_blocks_are_orthonormal_and_seeded(dim, bits):
    r = rotation(dim, bits, 3)
    assert r.shape == (dim, bits) and r.dtype == np.float32 and not r.flags.writeable
    for a in range(0, bits, dim):  # each block of up to dim columns: orthonormal
        block = r[:, a:a + dim].astype(np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(block.shape[1]), atol=1e-5)
    np.testing.assert_array_equal(r, rotation(dim, bits, 3))
    assert not np.allclose(r, rotation(dim, bits, 4))


def test_codes_are_the_signs_of_the_rotated_embedding_and_estimate_the_angle():
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((200, 32)))
    sc = SignCodes(32, 64, seed=1)
    bits = unpack_codes(sc.codes(x), 64)
    np.testing.assert_array_equal(bits, (x @ rotation(32, 64, 1)) > 0)
    assert (unpack_codes(sc.codes(-x), 64) == ~bits).all()  # the opposite vector: every bit differs
    # Charikar: P[a bit differs] = angle / pi; over 200 pairs the mean differing fraction tracks the mean angle.
    y = _unit(x + 0.7 * rng.standard_normal(x.shape))
    differ = (unpack_codes(sc.codes(y), 64) != bits).mean()
    angle = np.arccos(np.clip(np.sum(x * y, 1), -1, 1)).mean() / np.pi
    assert abs(differ - angle) < 0.03, (differ, angle)


def test_invalid_options_and_manifest_entries_are_refused():
    with pytest.raises(ValueError, match="bits must be an integer >= 1"):
        SignCodes(8, 0)
    with pytest.raises(ValueError, match="candidates"):
        SignCodes(8, 16, candidates=0)
    with pytest.raises(ValueError, match="already makes hash codes"):
        EmbeddingKind("binary", 32, False).with_sign_codes(64)
    with pytest.raises(ValueError, match="embedding.codes"):
        EmbeddingKind.from_manifest({"kind": "float", "codes": {"method": "pq", "bits": 8}}, 16)
    with pytest.raises(ValueError, match="got shape"):
        SignCodes(8, 16).codes(np.zeros((3, 9), np.float32))
    with pytest.raises(ConfigError, match="search.codes_candidates"):
        load_config(None, ["search.codes_bits=64", "search.codes_candidates=0"])
    with pytest.raises(ConfigError, match="search.codes_bits"):
        load_config(None, ["search.codes_bits=-1"])


def _coded_index(tmp_path, candidates: int, n: int = 300, dim: int = 24, bits: int = 32):
    rng = np.random.default_rng(5)
    emb = _unit(rng.standard_normal((n, dim)))
    kind = EmbeddingKind("float", dim, True).with_sign_codes(bits, seed=7, candidates=candidates)
    uri = str(tmp_path / f"coded{candidates}")
    write_index(uri, [f"i{j}" for j in range(n)], emb, codes=kind.codes(emb), rows_per_file=70,
                extra_manifest={"embedding": kind.manifest_spec()})
    return uri, emb, kind


def test_a_coded_float_index_searches_two_stage_as_brute_force(tmp_path):
    uri, emb, kind = _coded_index(tmp_path, candidates=40)
    assert EmbeddingKind.from_manifest(index_layout(uri).manifest.embedding, 24) == kind
    assert index_spec(index_layout(uri)).scoring(kind)["rescore"] == {"candidates": 40, "score": "inner_product"}
    index = open_index(uri)
    assert isinstance(index, Rescored) and index.candidates == 40
    q = _unit(np.random.default_rng(9).standard_normal((6, 24)))
    scores, rows = index.search(q, 10)
    # Brute force: Hamming distance of the rotation's signs, ties by lower row; the first 40 re-scored by floats.
    r = rotation(24, 32, 7)
    dist = ((q @ r > 0)[:, None, :] != (emb @ r > 0)[None, :, :]).sum(-1)
    for i in range(len(q)):
        first = np.lexsort((np.arange(len(emb)), dist[i]))[:40]
        ip = emb[first] @ q[i]
        order = np.lexsort((first, -ip))[:10]
        np.testing.assert_array_equal(rows[i], first[order])
        np.testing.assert_allclose(scores[i], ip[order], rtol=1e-5)
    # Hamming alone (what a serving shard opens: the engine re-scores the merged answer) and an override.
    d, plain_rows = open_index(uri, hamming_candidates=0).search(q, 5)
    assert np.array_equal(d, 32 - 2 * np.sort(dist, 1)[:, :5])
    assert open_index(uri, hamming_candidates=300).candidates == 300


def test_re_scoring_every_row_is_the_exact_float_search(tmp_path):
    uri, emb, _ = _coded_index(tmp_path, candidates=300)
    q = _unit(np.random.default_rng(2).standard_normal((4, 24)))
    scores, rows = open_index(uri).search(q, 7)
    exact = q @ emb.T
    want = np.argsort(-exact, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(rows, want)


def test_float16_floats_re_score_a_coded_index_alike(tmp_path):
    """``dtype=float16`` (a serving shard's ``shard_dtype``) halves the floats a coded index keeps for re-scoring."""
    uri, emb, kind = _coded_index(tmp_path, candidates=60)
    from ray_sbir.search import build_index

    q = _unit(np.random.default_rng(4).standard_normal((5, 24)))
    full = build_index(kind, emb, hamming_candidates=60)
    half = build_index(kind, emb, hamming_candidates=60, dtype="float16")
    assert half.base.embeddings.dtype == np.float16 and half.base.memory_bytes()["embeddings"] < \
        full.base.memory_bytes()["embeddings"]
    s_full, r_full = full.search(q, 8)
    s_half, r_half = half.search(q, 8)
    np.testing.assert_allclose(s_half, s_full, atol=2e-3)
    assert (r_half == r_full).mean() > 0.9
    opened = open_index(uri, dtype="float16")  # a serving shard reads its rows straight into float16
    assert opened.base.embeddings.dtype == np.float16
    np.testing.assert_array_equal(opened.base.embeddings, emb.astype(np.float16))
    np.testing.assert_array_equal(opened.search(q, 8)[1], r_half)
