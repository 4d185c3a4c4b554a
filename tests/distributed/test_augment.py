"""Database-side augmentation as a Ray job (``ray_sbir.distributed.augment``): a new index version whose vectors
equal the library's (and so the NumPy reference's, ``tests/search/test_expansion.py``), every other column kept,
binary codes recomputed, the manifest recording how to search it; the source index is left as it was."""

from __future__ import annotations

import numpy as np
import pytest

from ray_sbir.search import EmbeddingKind, ExpansionSettings, augment_database, build_index

pytestmark = pytest.mark.slow


def make_index(uri: str, binary: bool = False, n: int = 45, d: int = 32):
    from ray_sbir.index import write_index

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kind = EmbeddingKind("binary", d, False) if binary else EmbeddingKind("float", d)
    write_index(uri, [f"i{j}" for j in range(n)], x, labels=[f"c{j % 4}" for j in range(n)],
                uris=[f"s3://b/{j}.jpg" for j in range(n)], rows_per_file=10, codes=kind.codes(x),
                extra_manifest={"embedding": kind.manifest_spec()})
    return x, kind


@pytest.mark.parametrize("binary", [False, True])
def test_augmented_index_version_matches_the_library_and_keeps_the_rest(ray_local, tmp_path, binary):
    from ray_sbir.distributed.augment import augment_index
    from ray_sbir.index import index_layout, read_index
    from ray_sbir.search import open_index
    from ray_sbir.search.expansion import QueryExpanded, index_search_settings

    src, out = str(tmp_path / "raw"), str(tmp_path / "dba")
    x, kind = make_index(src, binary)
    before = read_index(src)
    dba, qe = ExpansionSettings(4, 3.0), ExpansionSettings(2, 1.0)
    manifest = augment_index(src, out, dba, qe, concurrency=2)
    assert manifest.count == len(x) and manifest.extra["augmented_from"] == src
    layout = index_layout(out)
    assert index_search_settings(layout) == {"query_expansion": qe, "dba": dba}
    after = read_index(out)
    expected = augment_database(build_index(kind, x), x, dba)
    np.testing.assert_allclose(after.embeddings, expected, atol=1e-6)
    for col in ("ids", "labels", "uris", "modality"):
        assert list(getattr(after, col)) == list(getattr(before, col)), col
    if binary:
        np.testing.assert_array_equal(after.codes, kind.codes(expected))
    np.testing.assert_array_equal(read_index(src).embeddings, before.embeddings)  # the source is untouched
    assert isinstance(open_index(out), QueryExpanded)


def test_augmenting_an_index_onto_itself_is_refused(ray_local, tmp_path):
    from ray_sbir.distributed.augment import augment_index

    make_index(str(tmp_path / "idx"))
    with pytest.raises(ValueError, match="overwrite its own rows"):
        augment_index(str(tmp_path / "idx"), str(tmp_path / "idx/"), ExpansionSettings(3))
