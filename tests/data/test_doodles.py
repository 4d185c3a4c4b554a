"""The embedded doodle benchmark: layout, QuickDraw format, photos, class vectors, determinism, domain gap."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from ray_sbir.data.doodles import (
    DOODLE_CLASSES, DOODLE_UNSEEN, load_class_vectors, make_doodles, make_photo, make_sketch,
)

SUBSET = ["apple", "pear", "hexagon", "octagon", "door", "bicycle"]
N_SKETCH, N_PHOTO, SIZE = 6, 5, 64


def _tree_digest(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _records(root: str, cls: str) -> list[dict]:
    with open(os.path.join(root, "sketch", f"{cls}.ndjson"), encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().splitlines()]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("doodles"))
    summary = make_doodles(root, sketches_per_class=N_SKETCH, photos_per_class=N_PHOTO, photo_size=SIZE,
                           seed=3, classes=SUBSET)
    return root, summary


def test_class_lists():
    assert 30 <= len(DOODLE_CLASSES) == len(set(DOODLE_CLASSES))
    assert 8 <= len(DOODLE_UNSEEN) <= 10 and set(DOODLE_UNSEEN) < set(DOODLE_CLASSES)
    assert all(c.isalpha() and c.islower() for c in DOODLE_CLASSES)  # single words: word vectors exist
    # The zero-shot split mixes plain shapes and objects.
    assert {"hexagon", "diamond"} & set(DOODLE_UNSEEN) and {"pear", "umbrella"} & set(DOODLE_UNSEEN)


def test_layout_and_counts(small):
    root, summary = small
    assert summary["classes"] == SUBSET
    assert summary["unseen"] == [c for c in DOODLE_UNSEEN if c in SUBSET] == ["pear", "hexagon"]
    assert summary["seen"] == ["apple", "octagon", "door", "bicycle"]
    assert summary["num_sketches"] == N_SKETCH * len(SUBSET) and summary["num_photos"] == N_PHOTO * len(SUBSET)
    json.dumps(summary)  # printable by the CLI
    assert sorted(os.listdir(os.path.join(root, "sketch"))) == sorted(f"{c}.ndjson" for c in SUBSET)
    for cls in SUBSET:
        assert summary["counts"][cls] == {"sketch": N_SKETCH, "photo": N_PHOTO}
        assert len(_records(root, cls)) == N_SKETCH
        photos = sorted(os.listdir(os.path.join(root, "photo", cls)))
        assert photos == [f"{cls}_{i:04d}.png" for i in range(N_PHOTO)]
    with open(os.path.join(root, "unseen_classes.txt"), encoding="utf-8") as f:
        assert f.read() == "pear\nhexagon\n"


def test_sketches_are_quickdraw_simplified(small):
    root, _ = small
    keys = set()
    for cls in SUBSET:
        for rec in _records(root, cls):
            assert list(rec) == ["word", "countrycode", "timestamp", "recognized", "key_id", "drawing"]
            assert rec["word"] == cls and rec["recognized"] is True and len(rec["countrycode"]) == 2
            assert rec["timestamp"].endswith(" UTC") and rec["key_id"].isdigit()
            keys.add(rec["key_id"])
            xs, ys = [], []
            for stroke in rec["drawing"]:
                assert len(stroke) == 2 and len(stroke[0]) == len(stroke[1]) >= 1
                assert all(isinstance(v, int) for v in stroke[0] + stroke[1])
                xs += stroke[0]
                ys += stroke[1]
            # Aligned to the top-left, longer side scaled to exactly 0-255.
            assert min(xs) == 0 and min(ys) == 0 and max(max(xs), max(ys)) == 255
            assert max(xs) <= 255 and max(ys) <= 255
            # RDP-simplified: tens of points, not hundreds.
            assert len(xs) < 200
    assert len(keys) == N_SKETCH * len(SUBSET)  # key_ids are unique


def test_photos_decode_with_size_and_mode(small):
    root, _ = small
    for cls in SUBSET:
        for i in range(N_PHOTO):
            with Image.open(os.path.join(root, "photo", cls, f"{cls}_{i:04d}.png")) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (SIZE, SIZE)


def test_class_vectors_file(small):
    root, _ = small
    with open(os.path.join(root, "class_vectors.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    n, dim = map(int, lines[0].split())
    assert n == len(SUBSET) == len(lines) - 1
    assert [line.split(" ", 1)[0] for line in lines[1:]] == SUBSET
    assert all(len(line.split(" ")) == dim + 1 for line in lines[1:])
    gensim_models = pytest.importorskip("gensim.models")
    kv = gensim_models.KeyedVectors.load_word2vec_format(os.path.join(root, "class_vectors.txt"), binary=False)
    assert kv.vector_size == dim and set(kv.index_to_key) == set(SUBSET)


def test_shipped_vectors_cover_every_class_and_are_semantic():
    vecs = load_class_vectors()
    assert list(vecs) == DOODLE_CLASSES
    dims = {v.shape for v in vecs.values()}
    assert dims == {(384,)}
    for v in vecs.values():
        assert abs(np.linalg.norm(v) - 1) < 1e-3
    cos = lambda a, b: float(vecs[a] @ vecs[b])  # noqa: E731
    # Related classes are closer than unrelated ones (the point of the semantic loss).
    assert cos("apple", "pear") > cos("apple", "ladder")
    assert cos("hexagon", "octagon") > cos("hexagon", "fish")
    assert cos("hammer", "axe") > cos("hammer", "cloud")


def test_deterministic_and_independent_of_other_classes(tmp_path, small):
    root, _ = small
    kwargs = dict(sketches_per_class=N_SKETCH, photos_per_class=N_PHOTO, photo_size=SIZE, seed=3)
    again = str(tmp_path / "again")
    make_doodles(again, classes=SUBSET, **kwargs)
    assert _tree_digest(again) == _tree_digest(root)
    # Generating a class on its own gives the very same files: items do not depend on the class list.
    alone = str(tmp_path / "alone")
    make_doodles(alone, classes=["door"], **kwargs)
    a, b = _tree_digest(alone), _tree_digest(root)
    for name in ["sketch/door.ndjson"] + [f"photo/door/door_{i:04d}.png" for i in range(N_PHOTO)]:
        assert a[name.replace("/", os.sep)] == b[name.replace("/", os.sep)]
    # Another seed gives other data.
    assert make_sketch("door", 0, seed=4) != make_sketch("door", 0, seed=3)


def test_rerun_with_fewer_photos_leaves_no_stale_files(tmp_path):
    root = str(tmp_path / "d")
    make_doodles(root, sketches_per_class=2, photos_per_class=4, photo_size=32, classes=["star"])
    make_doodles(root, sketches_per_class=2, photos_per_class=2, photo_size=32, classes=["star"])
    assert sorted(os.listdir(os.path.join(root, "photo", "star"))) == ["star_0000.png", "star_0001.png"]


def test_every_class_renders():
    for cls in DOODLE_CLASSES:
        for i in range(2):
            rec = make_sketch(cls, i)
            assert rec["word"] == cls and 1 <= len(rec["drawing"]) <= 40
            im = make_photo(cls, i, size=48)
            assert im.size == (48, 48) and im.mode == "RGB"


def test_unknown_class_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"'zebra'.*valid classes: apple, pear"):
        make_doodles(str(tmp_path), classes=["apple", "zebra"])
    with pytest.raises(ValueError, match="sketches_per_class"):
        make_doodles(str(tmp_path), sketches_per_class=-1, classes=["apple"])
    with pytest.raises(ValueError, match="photo_size"):
        make_doodles(str(tmp_path), photo_size=4, classes=["apple"])
    with pytest.raises(ValueError, match="not among"):
        make_doodles(str(tmp_path), classes=["apple"], unseen=["pear"])


def _sketch_raster(rec: dict, size: int) -> np.ndarray:
    from PIL import ImageDraw

    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    s = (size - 1) / 255
    for xs, ys in rec["drawing"]:
        draw.line([(x * s, y * s) for x, y in zip(xs, ys)] or [(0, 0)], fill=0, width=1)
    return np.asarray(im, np.float32)


def test_domain_gap_photos_are_not_sketches(small):
    """Photos are filled, coloured objects on busy backgrounds, not black lines on white paper."""
    root, _ = small
    digests, border_means, saturations, sketch_white = set(), [], [], []
    for cls in SUBSET:
        for i in range(N_PHOTO):
            path = os.path.join(root, "photo", cls, f"{cls}_{i:04d}.png")
            with open(path, "rb") as f:
                data = f.read()
            digests.add(hashlib.sha256(data).hexdigest())
            arr = np.asarray(Image.open(io.BytesIO(data)), np.float32)
            border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
            border_means.append(border.mean())
            saturations.append((arr.max(-1) - arr.min(-1)).mean())
            # Far fewer near-white pixels than a sketch on paper.
            assert (arr.min(-1) > 235).mean() < 0.5, path
        for rec in _records(root, cls):
            sketch_white.append((_sketch_raster(rec, SIZE) > 235).mean())
    assert len(digests) == N_PHOTO * len(SUBSET)  # no two photos are identical
    assert np.mean(sketch_white) > 0.85  # sketches are mostly empty paper ...
    assert np.mean(border_means) < 200  # ... photo backgrounds are not
    assert np.mean(saturations) > 25  # and photos are in colour
