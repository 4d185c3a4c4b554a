import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ray_sbir.data.catalog import build_catalog, detect_layout
from ray_sbir.data.decode import RenderSpec, decode_batch


def _png(path, color=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((20, 20, 3), 255, np.uint8)
    arr[5:15, 5:15] = color
    Image.fromarray(arr).save(path)


def test_sketchy_layout_with_tx_level(tmp_path):
    for cls in ("cat", "dog"):
        _png(tmp_path / "photo" / "tx_000000000000" / cls / f"n0_{cls}.jpg")
        _png(tmp_path / "sketch" / "tx_000000000000" / cls / f"n0_{cls}-1.png")
        _png(tmp_path / "sketch" / "tx_000000000000" / cls / f"n0_{cls}-2.png")
        _png(tmp_path / "sketch" / "tx_000100000000" / cls / f"n0_{cls}-1.png")  # other variant: ignored
    cat = build_catalog(str(tmp_path))
    assert cat.layout == "sketchy" and cat.classes == ["cat", "dog"]
    assert cat.counts() == {"photo": {"cat": 1, "dog": 1}, "sketch": {"cat": 2, "dog": 2}}
    sk = cat.select(modality="sketch").items.to_pylist()
    assert sk[0]["instance_id"] == "n0_cat"  # pairs the sketch with its photo


def test_sketchy_layout_without_tx_and_tuberlin(tmp_path):
    _png(tmp_path / "a" / "photo" / "cat" / "1.jpg")
    _png(tmp_path / "a" / "sketch" / "cat" / "1-1.png")
    assert detect_layout(str(tmp_path / "a")) == "sketchy"
    _png(tmp_path / "b" / "airplane" / "1.png")
    _png(tmp_path / "b" / "alarm clock" / "2.png")
    cat = build_catalog(str(tmp_path / "b"))
    assert cat.layout == "tuberlin" and cat.classes == ["airplane", "alarm clock"]
    assert set(cat.items["modality"].to_pylist()) == {"sketch"}


def test_photos_layout_is_an_unlabelled_folder(tmp_path):
    _png(tmp_path / "p" / "shoe_1.jpg")
    _png(tmp_path / "p" / "2024" / "lamp.png")  # any depth
    (tmp_path / "p" / "notes.txt").write_text("not an image")
    assert detect_layout(str(tmp_path / "p")) == "photos"
    cat = build_catalog(str(tmp_path / "p"))
    assert cat.layout == "photos" and cat.classes == [""]
    assert sorted(cat.items["item_id"].to_pylist()) == ["2024/lamp.png", "shoe_1.jpg"]
    assert set(cat.items["modality"].to_pylist()) == {"photo"}
    # Only in the root does an image file mean "photos"; a folder of subfolders is read as class folders.
    _png(tmp_path / "q" / "sub" / "a.png")
    assert detect_layout(str(tmp_path / "q")) == "tuberlin"
    assert build_catalog(str(tmp_path / "q"), layout="photos").classes == [""]


def test_quickdraw_layout_counts_malformed_lines(tmp_path):
    good = {"word": "cat", "countrycode": "US", "timestamp": "t", "recognized": True, "key_id": "1",
            "drawing": [[[0, 10, 20], [0, 10, 0]]]}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "key_id": "2", "drawing": []}),
             json.dumps({**good, "key_id": "3"})]
    (tmp_path / "sketch").mkdir()
    (tmp_path / "sketch" / "cat.ndjson").write_text("\n".join(lines) + "\n")
    _png(tmp_path / "photo" / "cat" / "p.png")
    cat = build_catalog(str(tmp_path))
    assert cat.layout == "quickdraw" and len(cat.select(modality="sketch")) == 2
    assert len(cat.errors) == 2 and "cat.ndjson:2" in cat.errors[0] and "cat.ndjson:3" in cat.errors[1]
    with pytest.raises(ValueError, match="cat.ndjson:2"):
        build_catalog(str(tmp_path), strict=True)


def test_manifest_csv_and_parquet(tmp_path):
    _png(tmp_path / "imgs" / "p.png")
    _png(tmp_path / "imgs" / "s.png")
    (tmp_path / "manifest.csv").write_text("uri,modality,label\nimgs/p.png,photo,cat\nimgs/s.png,sketch,cat\n")
    cat = build_catalog(str(tmp_path))
    assert cat.layout == "manifest" and len(cat) == 2
    assert cat.select(modality="photo").items["uri"][0].as_py() == str(tmp_path / "imgs" / "p.png")
    pq.write_table(pa.table({"uri": ["imgs/p.png"], "modality": ["video"], "label": ["cat"]}), tmp_path / "m.parquet")
    with pytest.raises(ValueError, match="modality 'video'"):
        build_catalog(str(tmp_path), manifest=str(tmp_path / "m.parquet"))


def test_a_manifests_own_columns_reach_the_index_for_filters(tmp_path):
    """Columns beyond the layout's (string, boolean, integer) are the items' own: the catalog keeps them, the
    embedding UDF writes them into the index rows, and a search filter names them there."""
    import numpy as np

    from ray_sbir.config import load_config
    from ray_sbir.data.decode import render_spec
    from ray_sbir.distributed.embed import UNTRAINED, EmbedBatch, ModelSource
    from ray_sbir.index import GalleryItems, index_layout, write_index
    from ray_sbir.search.filters import RowFilter, column_kinds

    for name in ("p.png", "q.png"):
        _png(tmp_path / "imgs" / name)
    pq.write_table(pa.table({"uri": ["imgs/p.png", "imgs/q.png"], "modality": ["photo", "photo"],
                             "label": ["cat", "cat"], "collection": ["mine", "museum"], "public": [True, False],
                             "weight": [0.5, 1.0]}), tmp_path / "manifest.parquet")
    cat = build_catalog(str(tmp_path))
    assert cat.items["collection"].to_pylist() == ["mine", "museum"] and cat.items["public"].to_pylist() == [True, False]
    assert "weight" not in cat.items.column_names  # a float is not a filterable value
    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=8"])
    udf = EmbedBatch(ModelSource(UNTRAINED, cfg.model), "photo", render_spec(cfg, "photo"))
    batch = {k: np.array(v.to_pylist(), dtype=object if k in ("item_id", "uri", "label", "collection") else None)
             for k, v in zip(cat.items.column_names, cat.items.columns) if k not in ("modality", "instance_id",
                                                                                     "strokes")}
    table = udf(batch)
    assert table["collection"].to_pylist() == ["mine", "museum"] and table["public"].to_pylist() == [True, False]
    out = str(tmp_path / "index")
    write_index(out, table["id"].to_pylist(), np.eye(2, 8, dtype=np.float32),
                extra_columns={"collection": table["collection"], "public": table["public"]})
    items = GalleryItems.read(out, index_layout(out))
    kinds = column_kinds({k: v.type for k, v in items.filter_columns().items()})
    assert kinds["collection"] == "string" and kinds["public"] == "bool"
    mask = RowFilter.parse({"collection": "museum"}, kinds).mask(items.filter_columns(), 2)
    assert mask.tolist() == [False, True]
    pq.write_table(pa.table({"uri": ["imgs/p.png"], "modality": ["photo"], "label": ["cat"], "embedding": ["x"]}),
                   tmp_path / "clash.parquet")
    with pytest.raises(ValueError, match="clash.parquet: item column 'embedding' clashes with a column of the index"):
        build_catalog(str(tmp_path), manifest=str(tmp_path / "clash.parquet"))


def test_missing_root_and_unknown_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_catalog(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="data.layout: unknown dataset layout .imagenet.; registered: manifest"):
        build_catalog(str(tmp_path), layout="imagenet")


def test_decode_batch_keeps_good_rows_and_reports_bad(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    batch = {"uri": np.array([str(tmp_path / "ok.png"), str(tmp_path / "bad.png"), str(tmp_path / "gone.png")],
                             dtype=object),
             "item_id": np.array(["a", "b", "c"], dtype=object)}
    out = decode_batch(batch, modality="photo", spec=RenderSpec(16))
    assert out["image"].shape == (3, 16, 16, 3)
    assert out["error"][0] == "" and "bad.png" in out["error"][1] and "gone.png" in out["error"][2]
    # QuickDraw rows: packed (x, y, end) strokes as Ray Data hands them over (one array per row; an empty one
    # is a bad row), next to a row without strokes (an image file).
    strokes = np.empty(4, dtype=object)
    strokes[:] = [np.array([0, 0, 0, 50, 50, 0, 100, 0, 1], np.float32), np.zeros(0, np.float32),
                  np.array([0, 0, 0, 9, 9, 0], np.float32), None]
    uris = np.array(["x.ndjson:1", "x.ndjson:2", "x.ndjson:3", str(tmp_path / "ok.png")], dtype=object)
    out = decode_batch({"uri": uris, "strokes": strokes}, modality="sketch", spec=RenderSpec(16))
    assert "strokes" not in out and out["image"].shape == (4, 16, 16)
    assert out["error"][0] == "" and out["image"][0].min() < 128
    assert "x.ndjson:2" in out["error"][1] and "empty drawing" in out["error"][1]
    assert "x.ndjson:3" in out["error"][2] and "does not end a stroke" in out["error"][2]
    assert out["error"][3] == "" and out["image"][3].min() < 128


def test_quickdraw_catalog_carries_packed_strokes(tmp_path):
    from ray_sbir.data.decode import decode_images
    from ray_sbir.data.quickdraw import rasterize, read_ndjson, unpack_strokes

    from tests.fixtures import QUICKDRAW_DIR

    (tmp_path / "sketch").mkdir()
    for name in ("cat", "bicycle"):
        (tmp_path / "sketch" / f"{name}.ndjson").write_bytes((Path(QUICKDRAW_DIR) / f"{name}.ndjson").read_bytes())
    _png(tmp_path / "photo" / "cat" / "p.png")
    cat = build_catalog(str(tmp_path))
    assert cat.items.schema.field("strokes").type == pa.list_(pa.float32())
    photos = cat.select(modality="photo").items
    assert photos["strokes"].null_count == len(photos) == 1
    sketches = cat.select(modality="sketch").items
    by_key = {d.key_id: d for name in ("cat", "bicycle")
              for d in read_ndjson(str(tmp_path / "sketch" / f"{name}.ndjson"))}
    column = sketches["strokes"].to_numpy(zero_copy_only=False)  # what a numpy batch holds: float32 arrays
    assert all(isinstance(r, np.ndarray) and r.dtype == np.float32 for r in column)
    for key, packed in zip(sketches["instance_id"].to_pylist(), column):
        original = by_key[key].strokes
        assert all(np.array_equal(a, b) for a, b in zip(unpack_strokes(packed), original, strict=True))
    spec = RenderSpec(32, 1.5, 0.08)
    images, errors = decode_images(sketches["uri"].to_pylist(), column, "sketch", spec)
    assert not any(errors)
    expected = rasterize([by_key[k].strokes for k in sketches["instance_id"].to_pylist()], 32, 1.5, 0.08)
    np.testing.assert_array_equal(images, expected)
