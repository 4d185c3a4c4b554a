"""QuickDraw indexing job on real drawings (the repository's Quick, Draw! fixture), local Ray."""

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from ray_sbir import fs
from ray_sbir.config import EncoderConfig, ModelConfig
from ray_sbir.distributed.embed import UNTRAINED, ModelSource
from ray_sbir.index import read_index
from ray_sbir.distributed.index_quickdraw import index_quickdraw, plan_chunks, read_chunk_lines

from tests.fixtures import QUICKDRAW_DIR, QUICKDRAW_PER_CATEGORY


@pytest.fixture
def qd_prefix(tmp_path):
    root = tmp_path / "qd"
    root.mkdir()
    for name in ("cat.ndjson", "airplane.ndjson", "The Eiffel Tower.ndjson", "hot air balloon.ndjson"):
        shutil.copy(os.path.join(QUICKDRAW_DIR, name), root / name)
    with open(root / "cat.ndjson", "a") as f:  # two malformed lines at the end of a real file
        f.write("{broken json\n")
        f.write('{"word": "cat", "key_id": "x", "drawing": []}\n')
    return str(root)


def test_chunks_cover_every_line_once(qd_prefix):
    chunks = plan_chunks(qd_prefix, chunk_bytes=1024)
    assert len(chunks) > 4
    for uri in {c.uri for c in chunks}:
        lines = [line for c in chunks if c.uri == uri for _, line in read_chunk_lines(c)]
        assert b"".join(lines) == fs.read_bytes(uri)


def test_index_quickdraw_resumable_with_failures(ray_local, qd_prefix, tmp_path):
    source = ModelSource(UNTRAINED, ModelConfig(embed_dim=16, sketch=EncoderConfig(backbone="resnet10t", image_size=32)))
    out = str(tmp_path / "index")
    res = index_quickdraw(qd_prefix, source, out, size=32, chunk_bytes=2048, concurrency=2)
    assert res.rows == 4 * QUICKDRAW_PER_CATEGORY
    assert len(res.failures) == 2 and all("cat.ndjson" in f["file"] for f in res.failures)
    table = pq.read_table(out)
    assert table.num_rows == 40 and len(set(table["key_id"].to_pylist())) == 40
    assert set(table["label"].to_pylist()) == {"cat", "airplane", "The Eiffel Tower", "hot air balloon"}
    manifest = json.loads(fs.read_text(fs.join(out, "_manifest.json")))
    assert manifest["count"] == 40 and manifest["dim"] == 16 and manifest["failures"] == 2
    # The one index format: item columns, QuickDraw provenance, and each line's byte range in its file.
    index = read_index(out)
    assert list(index.ids) == list(index.source["key_id"]) and set(index.modality) == {"sketch"}
    for uri, offset, length, key in list(zip(index.uris, index.source["source_offset"],
                                             index.source["source_length"], index.ids))[::7]:
        line = fs.read_bytes(uri)[offset:offset + length]
        assert json.loads(line)["key_id"] == key
    first = index.embeddings.copy()

    # A re-run after a stop: remove one shard (as if its chunk never finished) -> only that chunk is redone.
    shards = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    os.remove(os.path.join(out, shards[0]))
    res2 = index_quickdraw(qd_prefix, source, out, size=32, chunk_bytes=2048, concurrency=2)
    assert res2.chunks_skipped == res2.chunks - 1
    assert res2.rows == 40 and len(res2.failures) == 2
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # no half-written files left behind
    np.testing.assert_array_equal(read_index(out).embeddings, first)

    # Another model into the same folder: the index is rebuilt whole, never a mix of two models' shards.
    other = ModelSource(UNTRAINED, source.model, seed=1)
    res3 = index_quickdraw(qd_prefix, other, out, size=32, chunk_bytes=2048, concurrency=2)
    assert res3.chunks_skipped == 0 and res3.rows == 40
    rebuilt = read_index(out)
    assert list(rebuilt.ids) == list(index.ids) and not np.allclose(rebuilt.embeddings, first, atol=1e-3)


def test_large_ndjson_streams_from_s3_in_chunks(s3_server, qd_prefix):
    """A 10 MiB ndjson object on the loopback S3 server, read the way the indexer and the catalog read it:
    every line once across byte-range chunks, and all drawings by the streaming reader. (fsspec's own
    readline re-copies a 50 MiB block per line on S3 -- about 20 lines/s -- which would time this test out.)"""
    import s3fs

    from ray_sbir.data.quickdraw import read_ndjson

    sample = open(os.path.join(qd_prefix, "airplane.ndjson"), "rb").read()
    body = sample * (10 * 1024**2 // len(sample) + 1)
    s3 = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    s3.mkdir("sbir-qd")
    fs.write_bytes("s3://sbir-qd/big/airplane.ndjson", body)

    chunks = plan_chunks("s3://sbir-qd/big", chunk_bytes=3 * 1024**2)
    assert len(chunks) == 4
    lines = [line for c in chunks for _, line in read_chunk_lines(c)]
    assert b"".join(lines) == body
    bad: list = []
    assert sum(1 for _ in read_ndjson("s3://sbir-qd/big/airplane.ndjson", errors=bad)) == body.count(b"\n")
    assert not bad
