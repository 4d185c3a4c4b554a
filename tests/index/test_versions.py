"""Index versions (``ray_sbir.index.versions``): a new folder holding the base's rows minus the removed ids plus
the added rows, its lineage in the manifest, the base untouched, and every way of mixing indexes refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ray_sbir.index import item_table, read_index, write_index
from ray_sbir.index.versions import index_version, new_version


def rows(prefix: str, n: int, dim: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [f"{prefix}{i}" for i in range(n)], rng.standard_normal((n, dim)).astype(np.float32)


@pytest.fixture
def base(tmp_path):
    ids, emb = rows("a", 10)
    uri = str(tmp_path / "v1")
    write_index(uri, ids, emb, labels=["cat"] * 10, rows_per_file=4, extra_manifest={"model": "m1"})
    return uri, ids, emb


def test_grow_and_shrink_a_gallery(base, tmp_path):
    uri, ids, emb = base
    new_ids, new_emb = rows("b", 3, seed=1)
    v2 = str(tmp_path / "v2")
    manifest = new_version(uri, v2, [item_table(new_ids, None, ["dog"] * 3, "photo", new_emb)], ["a1", "a5"],
                           model="m1")
    got = read_index(v2)
    keep = [i for i, x in enumerate(ids) if x not in ("a1", "a5")]
    assert list(got.ids) == [ids[i] for i in keep] + new_ids
    assert np.array_equal(got.embeddings, np.concatenate([emb[keep], new_emb]))
    assert list(got.labels) == ["cat"] * 8 + ["dog"] * 3
    assert manifest.count == 11 and index_version(manifest) == 2 and manifest.extra["model"] == "m1"
    (entry,) = manifest.extra["lineage"]
    assert entry["version"] == 2 and entry["from"] == uri and (entry["added"], entry["removed"]) == (3, 2)
    # Files without removed ids are the base's bytes; the base itself is untouched.
    assert open(os.path.join(v2, "part-00002.parquet"), "rb").read() == open(os.path.join(uri, "part-00002.parquet"), "rb").read()
    assert list(read_index(uri).ids) == ids and index_version(read_index(uri).manifest) == 1
    # A version of a version: the lineage grows; a removed id may come back as a new row.
    v3 = str(tmp_path / "v3")
    back = item_table(["a1"], None, ["cat"], "photo", emb[1:2])
    m3 = new_version(v2, v3, [back], ["b0"])
    assert index_version(m3) == 3 and [e["version"] for e in m3.extra["lineage"]] == [2, 3]
    assert "a1" in set(read_index(v3).ids) and "b0" not in set(read_index(v3).ids) and m3.count == 11


def test_what_would_mix_or_lose_rows_is_refused(base, tmp_path):
    uri, ids, emb = base
    out = str(tmp_path / "v2")

    def refused(match, added=(), remove=(), **kw):
        with pytest.raises(ValueError, match=match):
            new_version(uri, kw.pop("out", out), list(added), remove, **kw)
        assert not os.path.exists(os.path.join(out, "_manifest.json"))  # nothing half-made

    refused(r"ids to remove that it does not hold: \['zz'\]", remove=["zz"])
    refused(r"new rows repeat ids it holds: \['a3'\]", [item_table(["a3"], None, "x", "photo", emb[:1])])
    refused(r"new rows repeat ids \['n'\]", [item_table(["n", "n"], None, "x", "photo", emb[:2])])
    refused("new rows have 8-d embeddings, the index 4-d ones",
            [item_table(["n"], None, "x", "photo", np.ones((1, 8), np.float32))])
    refused("another model", [item_table(["n"], None, "x", "photo", emb[:1])], model="m2")
    refused("goes into another folder", out=uri)
    assert list(read_index(uri).ids) == ids
    augmented = str(tmp_path / "aug")
    write_index(augmented, ids, emb, extra_manifest={"augmented_from": uri})
    with pytest.raises(ValueError, match="augmented index .* grow its raw index"):
        new_version(augmented, out, [], ["a0"])
    manifest = json.load(open(os.path.join(uri, "_manifest.json")))
    assert manifest["count"] == 10
