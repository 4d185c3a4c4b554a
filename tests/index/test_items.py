"""The ingress's item lookup (``ray_sbir.index.items.GalleryItems``)."""

import numpy as np

from ray_sbir.index import GalleryItems, index_layout, write_index


def test_gallery_items_look_up_rows_like_a_dict():
    """The ingress's id -> row lookup (sorted ids + bisection) answers what a dict of first rows would."""
    import random

    import pyarrow as pa

    rng = random.Random(0)
    ids = [f"photo/{rng.randrange(500):04d}" for _ in range(300)] + ["zebra/ü", "Zebra/é", "a", "", "photo/0001"]
    labels = [None if i % 7 == 0 else f"c{i % 5}" for i in range(len(ids))]
    items = GalleryItems(pa.array(ids), pa.array([f"/img/{i}.png" for i in range(len(ids))]), pa.array(labels))
    first = {}
    for row, item_id in enumerate(ids):
        first.setdefault(item_id, row)
    for item_id, row in first.items():
        assert items.row_of(item_id) == row
    for missing in ("photo/9999", "zebra", "b", "photo/00011"):
        assert items.row_of(missing) is None
    got_ids, got_labels = items.rows([0, len(ids) - 1])
    assert got_ids == [ids[0], ids[-1]] and got_labels == [labels[0], labels[-1]]
    assert sum(items.class_counts().values()) == len(ids)

    empty = GalleryItems(pa.array([], pa.string()), pa.array([], pa.string()), pa.array([], pa.string()))
    assert len(empty) == 0 and empty.row_of("x") is None


def test_gallery_items_read_source_columns(tmp_path):
    uri = str(tmp_path / "qd")
    emb = np.eye(3, 4, dtype=np.float32)
    write_index(uri, ["k1", "k2", "k3"], emb, labels=["cat", "cat", "dog"], uris=["a.ndjson"] * 3, modality="sketch",
                key_id=["k1", "k2", "k3"], countrycode=["DE", None, "FR"], recognized=[True, True, False],
                source_offset=[0, 50, 90], source_length=[50, 40, 33], rows_per_file=2)
    items = GalleryItems.read(uri, index_layout(uri))
    assert items.details([2, 0]) == [{"key_id": "k3", "countrycode": "FR", "recognized": False},
                                     {"key_id": "k1", "countrycode": "DE", "recognized": True}]
    assert items.source_range(1) == (50, 40) and items.row_of("k3") == 2
    plain = str(tmp_path / "photos")
    write_index(plain, ["p"], emb[:1], labels=["cat"], uris=["p.png"])
    photos = GalleryItems.read(plain, index_layout(plain))
    assert photos.details([0]) == [{}] and photos.source_range(0) is None
