"""The gallery embedding job: every item exactly once in the index or in the failure list."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_sbir import fs
from ray_sbir.data.catalog import build_catalog
from ray_sbir.data.decode import RenderSpec
from ray_sbir.distributed.embed import UNTRAINED, ModelSource, embed_items
from tests.conftest import tiny_config


def test_embedding_job_one_row_per_item_and_failures(ray_local, tiny_doodles, tmp_path):
    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"))
    catalog = build_catalog(tiny_doodles)
    photos = catalog.select(modality="photo")
    # Two bad items: a corrupt file and a missing one; both must be reported, nothing good dropped.
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    extra = pa.table({"item_id": ["bad/corrupt", "bad/missing"], "uri": [str(bad), str(tmp_path / "missing.png")],
                      "modality": ["photo", "photo"], "label": ["x", "x"], "instance_id": [None, None],
                      "strokes": [None, None]}, schema=photos.items.schema)
    photos.items = pa.concat_tables([photos.items, extra])
    out = str(tmp_path / "index")
    res = embed_items(photos, "photo", ModelSource(UNTRAINED, cfg.model), out, RenderSpec(32), batch_size=16,
                      concurrency=2)
    assert res.count == photos.items.num_rows - 2
    assert sorted(f["id"] for f in res.failures) == ["bad/corrupt", "bad/missing"]
    assert "not a decodable image" in " ".join(f["error"] for f in res.failures)

    table = pq.read_table(out)
    ids = table["id"].to_pylist()
    assert len(ids) == len(set(ids)) == res.count
    assert set(ids) | {"bad/corrupt", "bad/missing"} == set(photos.items["item_id"].to_pylist())
    assert pa.types.is_fixed_size_list(table.schema.field("embedding").type)
    emb = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    assert emb.shape == (res.count, cfg.model.embed_dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    manifest = json.loads(fs.read_text(fs.join(out, "_manifest.json")))
    assert manifest["count"] == res.count and manifest["dim"] == cfg.model.embed_dim and manifest["failures"] == 2


def _photos_with_bad_item_at_end(tiny_doodles, tmp_path):
    photos = build_catalog(tiny_doodles).select(modality="photo")
    bad = tmp_path / "truncated.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    extra = pa.table({"item_id": ["bad/truncated"], "uri": [str(bad)], "modality": ["photo"], "label": ["x"],
                      "instance_id": [None], "strokes": [None]}, schema=photos.items.schema)
    photos.items = pa.concat_tables([photos.items, extra])
    return photos


def _shard_files(out):
    return sorted(u.rsplit("/", 1)[-1] for u in fs.list_files(out, (".parquet",), recursive=False))


def test_stopped_embedding_job_resumes_by_shard(ray_local, tiny_doodles, tmp_path):
    """A strict run stops at the bad item in the last shard; the re-run keeps the complete shards, embeds only
    the rest, and the result equals an uninterrupted run's."""
    import pytest

    from ray_sbir.distributed.embed import BadItemsError

    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"))
    photos = _photos_with_bad_item_at_end(tiny_doodles, tmp_path)
    n = photos.items.num_rows
    per_shard = 16
    shards = -(-n // per_shard)
    source = ModelSource(UNTRAINED, cfg.model)
    out = str(tmp_path / "index")
    with pytest.raises(BadItemsError, match="truncated.png"):
        embed_items(photos, "photo", source, out, RenderSpec(32), batch_size=8, rows_per_shard=per_shard,
                    strict=True)
    kept = _shard_files(out)
    assert 0 < len(kept) < shards and f"part-{shards - 1:05d}.parquet" not in kept
    assert not fs.exists(fs.join(out, "_manifest.json"))  # an incomplete index is not marked complete
    mtimes = {f: (tmp_path / "index" / f).stat().st_mtime_ns for f in kept}

    res = embed_items(photos, "photo", source, out, RenderSpec(32), batch_size=8, rows_per_shard=per_shard)
    assert res.shards == shards and res.shards_skipped == len(kept)
    assert {f: (tmp_path / "index" / f).stat().st_mtime_ns for f in kept} == mtimes  # not rewritten
    assert _shard_files(out) == [f"part-{i:05d}.parquet" for i in range(shards)]
    assert [f["id"] for f in res.failures] == ["bad/truncated"] and res.count == n - 1
    assert not [f for f in os.listdir(out) if ".tmp" in f]

    fresh = embed_items(photos, "photo", source, str(tmp_path / "fresh"), RenderSpec(32), batch_size=8,
                        rows_per_shard=per_shard)
    resumed, whole = pq.read_table(out), pq.read_table(str(tmp_path / "fresh"))
    assert resumed["id"].to_pylist() == whole["id"].to_pylist() == photos.items["item_id"].to_pylist()[:-1]
    np.testing.assert_allclose(np.stack(resumed["embedding"].to_numpy(zero_copy_only=False)),
                               np.stack(whole["embedding"].to_numpy(zero_copy_only=False)), atol=1e-5)
    assert fresh.shards_skipped == 0


def test_embedding_job_with_other_items_replaces_the_index(ray_local, tiny_doodles, tmp_path):
    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"))
    photos = build_catalog(tiny_doodles).select(modality="photo")
    source = ModelSource(UNTRAINED, cfg.model)
    out = str(tmp_path / "index")
    first = embed_items(photos, "photo", source, out, RenderSpec(32), rows_per_shard=16)
    assert first.shards_skipped == 0
    again = embed_items(photos, "photo", source, out, RenderSpec(32), rows_per_shard=16)
    assert again.shards_skipped == again.shards  # complete and identical: nothing re-embedded
    photos.items = photos.items.slice(0, 20)
    fewer = embed_items(photos, "photo", source, out, RenderSpec(32), rows_per_shard=16)
    assert fewer.shards_skipped == 0 and fewer.count == 20 and _shard_files(out) == ["part-00000.parquet",
                                                                                       "part-00001.parquet"]
