"""Growing a gallery with the Ray embedding job (``ray_sbir.distributed.grow``, ``ray-sbir embed --append-to``):
only the items the base lacks are embedded, the new version equals a from-scratch index of the same items row
for row, the base is untouched, and another model is refused before anything is embedded."""

from __future__ import annotations

import numpy as np
import pytest

from ray_sbir.config import SearchConfig
from ray_sbir.data.catalog import build_catalog
from ray_sbir.data.decode import RenderSpec
from ray_sbir.distributed.embed import UNTRAINED, ModelSource, embed_items
from ray_sbir.distributed.grow import grow_index
from ray_sbir.index import read_index
from tests.conftest import tiny_config


def test_grow_embeds_only_new_items(ray_local, tiny_doodles, tmp_path):
    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"))
    photos = build_catalog(tiny_doodles).select(modality="photo")
    classes = photos.classes
    source = ModelSource(UNTRAINED, cfg.model)
    v1 = str(tmp_path / "v1")
    embed_items(photos.select(labels=classes[:5]), "photo", source, v1, RenderSpec(32), rows_per_shard=16)
    base = read_index(v1)
    removed = [str(base.ids[0]), str(base.ids[7])]

    manifest, res = grow_index(v1, str(tmp_path / "v2"), photos, "photo", source, RenderSpec(32),
                               remove_ids=removed, rows_per_shard=16)
    new_rows = photos.select(labels=classes[5:]).items.num_rows
    assert res.count == new_rows  # the base's items were not embedded again
    v2 = read_index(str(tmp_path / "v2"))
    assert manifest.count == len(base.ids) - 2 + new_rows and manifest.extra["version"] == 2
    assert set(v2.ids) == (set(base.ids) - set(removed)) | set(photos.items["item_id"].to_pylist()) - set(base.ids)
    assert set(v2.labels) == set(classes)
    # Row for row the same vectors as one index of everything, embedded from scratch by the same model.
    full = str(tmp_path / "full")
    embed_items(photos, "photo", source, full, RenderSpec(32))
    every = read_index(full)
    where = {i: k for k, i in enumerate(every.ids)}
    assert np.allclose(v2.embeddings, every.embeddings[[where[i] for i in v2.ids]], atol=1e-5)
    assert len(read_index(v1).ids) == len(base.ids)  # the served version is untouched
    assert not (tmp_path / "v2_added").exists()  # the staging folder is gone
    # Another model: refused before embedding anything.
    other = ModelSource(UNTRAINED, cfg.model, seed=1)
    with pytest.raises(ValueError, match="is not the model that embedded it"):
        grow_index(str(tmp_path / "v2"), str(tmp_path / "v3"), photos, "photo", other, RenderSpec(32))
    assert not (tmp_path / "v3").exists()


def test_grow_quickdraw_index_reads_only_new_ndjson_files(ray_local, tmp_path):
    import shutil

    from ray_sbir.config import EncoderConfig, ModelConfig
    from ray_sbir.distributed.grow import grow_quickdraw_index
    from ray_sbir.distributed.index_quickdraw import index_quickdraw
    from tests.fixtures import QUICKDRAW_DIR, QUICKDRAW_PER_CATEGORY

    prefix = tmp_path / "qd"
    prefix.mkdir()
    names = ["cat.ndjson", "airplane.ndjson", "The Eiffel Tower.ndjson", "hot air balloon.ndjson"]
    for name in names[:2]:
        shutil.copy(f"{QUICKDRAW_DIR}/{name}", prefix / name)
    source = ModelSource(UNTRAINED, ModelConfig(embed_dim=16, sketch=EncoderConfig(backbone="resnet10t",
                                                                                  image_size=32)))
    kw = dict(size=32, chunk_bytes=4096)
    v1, v2 = str(tmp_path / "v1"), str(tmp_path / "v2")
    index_quickdraw(str(prefix), source, v1, **kw)
    for name in names[2:]:  # two new files arrive
        shutil.copy(f"{QUICKDRAW_DIR}/{name}", prefix / name)
    base = read_index(v1)
    removed = [str(base.ids[3])]

    manifest, res = grow_quickdraw_index(v1, str(prefix), v2, source, remove_ids=removed, **kw)
    assert res.rows == 2 * QUICKDRAW_PER_CATEGORY  # only the new files were read and embedded
    grown = read_index(v2)
    assert manifest.count == 4 * QUICKDRAW_PER_CATEGORY - 1 and manifest.extra["version"] == 2
    assert set(grown.labels) == {"cat", "airplane", "The Eiffel Tower", "hot air balloon"}
    assert removed[0] not in set(grown.ids) and list(grown.ids) == list(grown.source["key_id"])
    # Row for row the vectors of one index of all four files, built from scratch by the same model.
    full = str(tmp_path / "full")
    index_quickdraw(str(prefix), source, full, **kw)
    every = read_index(full)
    where = {i: k for k, i in enumerate(every.ids)}
    assert np.allclose(grown.embeddings, every.embeddings[[where[i] for i in grown.ids]], atol=1e-5)
    assert len(read_index(v1).ids) == len(base.ids) and not (tmp_path / "v2_added").exists()
    # Nothing new under the prefix: the next version is written without embedding anything.
    manifest3, res3 = grow_quickdraw_index(v2, str(prefix), str(tmp_path / "v3"), source, **kw)
    assert res3 is None and manifest3.count == manifest.count and manifest3.extra["version"] == 3


def test_flip_average_rows_manifest_and_growth(ray_local, tiny_doodles, tmp_path):
    """``search.flip_average``'s embedding job: each row is the library's mirror average of the item, the
    manifest records it (what evaluate and the endpoint read to encode queries alike), the job's fingerprint
    differs from the plain one, and a version grown without it is refused before anything is embedded."""
    import torch

    from ray_sbir.data.decode import decode_images
    from ray_sbir.data.images import to_model_input
    from ray_sbir.index import index_layout
    from ray_sbir.models.inference import encode
    from ray_sbir.search import index_flip_average, index_flip_queries

    cfg = tiny_config(tiny_doodles, str(tmp_path / "runs"))
    photos = build_catalog(tiny_doodles).select(modality="photo")
    first = photos.select(labels=photos.classes[:3])
    flipped = ModelSource(UNTRAINED, cfg.model, flip_average=True)
    out = str(tmp_path / "flip")
    embed_items(first, "photo", flipped, out, RenderSpec(32))
    index = read_index(out)
    assert index_flip_average(index_layout(out)) and index_flip_queries(index_layout(out))
    uris = dict(zip(first.items["item_id"].to_pylist(), first.items["uri"].to_pylist()))
    images, errors = decode_images([uris[i] for i in index.ids], None, "photo", RenderSpec(32))
    model = flipped.load("cpu")
    with torch.no_grad():
        expected = encode(model, to_model_input(torch.from_numpy(images)), "photo", flip_average=True).numpy()
    assert np.allclose(index.embeddings, expected, atol=1e-5)
    assert flipped.identity() != ModelSource(UNTRAINED, cfg.model).identity()
    assert flipped.queries().flip_average  # evaluate's query source

    # search.flip_queries: false: the same rows, the manifest says queries are encoded once (no mirror).
    gallery_only = ModelSource(UNTRAINED, cfg.model).with_search(SearchConfig(flip_average=True, flip_queries=False))
    out_g = str(tmp_path / "flip_gallery")
    embed_items(first, "photo", gallery_only, out_g, RenderSpec(32))
    assert index_flip_average(index_layout(out_g)) and not index_flip_queries(index_layout(out_g))
    np.testing.assert_array_equal(read_index(out_g).embeddings, index.embeddings)
    assert not gallery_only.queries().flip_average and gallery_only.identity() != flipped.identity()

    with pytest.raises(ValueError, match="flip_average"):
        grow_index(out, str(tmp_path / "v2"), photos, "photo", ModelSource(UNTRAINED, cfg.model), RenderSpec(32))
    assert not (tmp_path / "v2").exists() and not (tmp_path / "v2_added").exists()
