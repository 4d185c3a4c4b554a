"""The gallery embedding job: every item exactly once in the index or in the failure list."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_sbir import fs
from ray_sbir.data.catalog import build_catalog
from ray_sbir.data.decode import RenderSpec
from ray_sbir.embed import UNTRAINED, ModelSource, embed_items
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
