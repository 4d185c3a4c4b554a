"""The gallery index format (``ray_sbir.index``): write/read round trip, manifest, fingerprinted resume,
version 1 indexes."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_sbir import fs
from ray_sbir.index import (
    FORMAT_VERSION, IndexTable, Manifest, begin, commit_shard, committed_shard, finish, index_layout, item_table,
    read_embedding_rows, read_index, write_index,
)


def normalised(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_write_read_round_trip_multiple_files(tmp_path):
    rng = np.random.default_rng(4)
    g = normalised(rng, 23, 12)
    ids = [f"photo/{i:03d}" for i in range(23)]
    labels = [f"class{i % 4}" for i in range(23)]
    uris = [f"s3://bucket/photos/{i}.png" for i in range(23)]
    uri = str(tmp_path / "index")
    manifest = write_index(uri, ids, g, labels=labels, uris=uris, modality="photo", rows_per_file=5)
    assert manifest.count == 23 and manifest.dim == 12 and manifest.rows == [5, 5, 5, 5, 3]
    assert manifest.files == [f"part-{i:05d}.parquet" for i in range(5)]
    assert manifest.format_version == FORMAT_VERSION
    assert Manifest.from_json(fs.read_text(fs.join(uri, "_manifest.json")), "m") == manifest
    assert pa.types.is_fixed_size_list(pq.read_schema(fs.join(uri, "part-00000.parquet")).field("embedding").type)
    assert not [p for p in (tmp_path / "index").iterdir() if p.name.endswith(".tmp")]

    t = read_index(uri)
    assert isinstance(t, IndexTable) and len(t) == 23 and t.dim == 12
    assert t.embeddings.dtype == np.float32 and t.embeddings.flags.c_contiguous
    np.testing.assert_array_equal(t.embeddings, g)
    assert list(t.ids) == ids and list(t.labels) == labels and list(t.uris) == uris
    assert set(t.modality) == {"photo"} and t.source == {}

    only = read_index(uri, columns=["id", "embedding"])
    assert only.labels is None and only.uris is None and list(only.ids) == ids
    np.testing.assert_array_equal(only.embeddings, g)
    no_emb = read_index(uri, columns=["label"])
    assert no_emb.embeddings is None and len(no_emb) == 23 and no_emb.dim == 12
    with pytest.raises(ValueError, match="unknown index columns"):
        read_index(uri, columns=["nope"])
    with pytest.raises(ValueError, match=r"has no column\(s\) \['key_id'\]"):
        read_index(uri, columns=["key_id"])

    layout = index_layout(uri)  # from the manifest alone
    assert layout.rows == [5, 5, 5, 5, 3] and layout.dim == 12
    for start, stop in ((0, 23), (3, 11), (10, 10), (22, 23)):
        np.testing.assert_array_equal(read_embedding_rows(uri, layout, start, stop), g[start:stop])
        half = read_embedding_rows(uri, layout, start, stop, np.float16)  # across file boundaries, straight in
        assert half.dtype == np.float16 and half.shape == (stop - start, 12)
        np.testing.assert_array_equal(half, g[start:stop].astype(np.float16))

    # Rewriting replaces the index; a single file works too.
    write_index(uri, ids[:4], g[:4])
    assert len(read_index(uri)) == 4 and len(list((tmp_path / "index").glob("*.parquet"))) == 1


def test_source_columns_round_trip_and_are_checked(tmp_path):
    g = normalised(np.random.default_rng(1), 3, 4)
    uri = str(tmp_path / "qd")
    write_index(uri, ["1", "2", "3"], g, labels=["cat"] * 3, uris=["cat.ndjson"] * 3, modality="sketch",
                key_id=["1", "2", "3"], countrycode=["DE", "US", None], recognized=[True, False, True],
                source_offset=[0, 10, 25], source_length=[10, 15, 7])
    t = read_index(uri)
    assert list(t.source["countrycode"]) == ["DE", "US", None]
    assert t.source["source_offset"].tolist() == [0, 10, 25] and t.source["recognized"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="unknown index source column"):
        item_table(["a"], None, None, "sketch", g[:1], country=["DE"])
    with pytest.raises(ValueError, match="key_id has 2 entries for 3"):
        item_table(["a", "b", "c"], None, None, "sketch", g, key_id=["1", "2"])
    with pytest.raises(ValueError, match="ids must not be None"):
        item_table([None], None, None, "sketch", g[:1])


def test_resume_keeps_shards_of_the_same_plan_and_replaces_any_other(tmp_path):
    uri = str(tmp_path / "idx")
    g = normalised(np.random.default_rng(2), 4, 3)
    plan = {"fingerprint": "model-A items-1", "shards": 2}
    assert begin(uri, plan) == set()
    commit_shard(uri, "part-00000.parquet", item_table(["a", "b"], None, None, "photo", g[:2]),
                 [{"id": "x", "error": "truncated"}])
    # stopped here; the same job again: shard 0 is kept, with its failure list
    assert begin(uri, plan) == {"part-00000.parquet"}
    assert committed_shard(uri, "part-00000.parquet") == (2, [{"id": "x", "error": "truncated"}])
    commit_shard(uri, "part-00001.parquet", item_table(["c", "d"], None, None, "photo", g[2:]))
    m = finish(uri, ["part-00000.parquet", "part-00001.parquet"], [2, 2], [{"id": "x", "error": "truncated"}],
               checkpoint="runs/a", fingerprint=plan["fingerprint"], job="test")
    assert m.count == 4 and m.dim == 3 and m.failures == 1 and m.extra == {"job": "test"}
    assert json.loads(fs.read_text(fs.join(uri, "_manifest.json")))["job"] == "test"
    np.testing.assert_array_equal(read_index(uri).embeddings, g)

    # Another model (fingerprint): nothing of the old index survives, not even its manifest.
    assert begin(uri, {"fingerprint": "model-B items-1", "shards": 2}) == set()
    assert not list((tmp_path / "idx").glob("*.parquet")) and not fs.exists(fs.join(uri, "_manifest.json"))
    # Same plan, resume=False: replaced as well.
    commit_shard(uri, "part-00000.parquet", item_table(["a", "b"], None, None, "photo", g[:2]))
    assert begin(uri, {"fingerprint": "model-B items-1", "shards": 2}, resume=False) == set()
    with pytest.raises(ValueError, match="fingerprint"):
        begin(uri, {"shards": 2})


def test_version_1_indexes(tmp_path):
    """Indexes written before ray_sbir.index: Ray-Data-style names under ``manifest.json`` (its ``files``
    give the order), the embedding job's ``_manifest.json``, and QuickDraw indexes without id/uri."""
    rng = np.random.default_rng(5)
    g = normalised(rng, 10, 6)
    uri = tmp_path / "job"
    uri.mkdir()
    names = []
    for j, (a, b) in enumerate([(4, 10), (0, 4)]):  # listed out of name order in the manifest
        table = pa.table({"id": [f"i{i}" for i in range(a, b)], "uri": ["u"] * (b - a), "label": ["c"] * (b - a),
                          "modality": ["photo"] * (b - a),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(g[a:b].reshape(-1)), 6)})
        name = f"abc_{j:06d}_000000.parquet"
        pq.write_table(table, str(uri / name), row_group_size=3)
        names.append(name)
    (uri / "manifest.json").write_text(json.dumps({"count": 10, "dim": 6, "files": names[::-1], "failures": 0}))
    t = read_index(str(uri))
    np.testing.assert_array_equal(t.embeddings, g)
    assert list(t.ids) == [f"i{i}" for i in range(10)] and t.manifest.format_version == 1
    (uri / "manifest.json").write_text(json.dumps({"count": 11, "dim": 6, "files": names}))
    with pytest.raises(ValueError, match="manifest says 11"):
        read_index(str(uri))
    (uri / "manifest.json").write_text(json.dumps({"count": 10, "dim": 5, "files": names}))
    with pytest.raises(ValueError, match="dimension 6, manifest says 5"):
        read_index(str(uri))

    # The embedding job's version 1 manifest: its files, count and dim checked the same way.
    (uri / "manifest.json").unlink()
    (uri / "_manifest.json").write_text(json.dumps({"count": 10, "dim": 6, "files": names[::-1], "checkpoint": "c",
                                                    "embedding": {"kind": "float"}}))
    (uri / "_failures.json").write_text("[]")
    t = read_index(str(uri))
    np.testing.assert_array_equal(t.embeddings, g)
    assert t.manifest.count == 10 and t.manifest.checkpoint == "c"
    (uri / "_manifest.json").write_text(json.dumps({"count": 9, "dim": 6, "files": names}))
    with pytest.raises(ValueError, match="manifest says 9"):
        read_index(str(uri))
    (uri / "_manifest.json").write_text(json.dumps({"count": 10, "format_version": 99}))
    with pytest.raises(ValueError, match="newer than this ray-sbir reads"):
        read_index(str(uri))

    # A version 1 QuickDraw index: no id/uri; reading its items says how to rebuild it.
    qd = tmp_path / "qd"
    qd.mkdir()
    pq.write_table(pa.table({"key_id": ["1"], "label": ["cat"], "countrycode": ["DE"], "recognized": [True],
                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(g[0]), 6)}),
                   str(qd / "part-00000-00000.parquet"))
    (qd / "_manifest.json").write_text(json.dumps({"count": 1, "dim": 6, "modality": "sketch", "source": "s3://qd"}))
    np.testing.assert_array_equal(read_index(str(qd)).embeddings, g[:1])  # searchable as vectors...
    with pytest.raises(ValueError, match="rebuild it with `python jobs/index_quickdraw.py"):
        read_index(str(qd), columns=["id", "uri", "label", "embedding"])  # ...but not servable


def test_read_index_list_column(tmp_path):
    """A plain list<float> embedding column (equal lengths) in a folder without a manifest reads the same."""
    g = normalised(np.random.default_rng(6), 5, 4)
    uri = tmp_path / "lists"
    uri.mkdir()
    pq.write_table(pa.table({"id": list("abcde"), "embedding": pa.array(list(g), pa.list_(pa.float32()))}),
                   str(uri / "part-0.parquet"))
    t = read_index(str(uri))
    np.testing.assert_array_equal(t.embeddings, g)
    assert t.labels is None and list(t.ids) == list("abcde") and t.manifest is None
