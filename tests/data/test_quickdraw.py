"""Quick, Draw! ndjson parsing/validation and batched antialiased rasterisation."""

from __future__ import annotations

import gzip
import json
import os
import pickle

import numpy as np
import pytest

import ray_sbir.data.quickdraw as quickdraw
from ray_sbir.data.quickdraw import (
    Drawing,
    MalformedDrawing,
    drawing_to_json,
    normalize_strokes,
    pack_strokes,
    parse_line,
    rasterize,
    rasterize_packed,
    read_ndjson,
    strokes_from_lists,
    unpack_strokes,
)

from tests.fixtures import QUICKDRAW_CATEGORIES, QUICKDRAW_DIR, QUICKDRAW_PER_CATEGORY


def _sample_files() -> list[str]:
    return sorted(os.path.join(QUICKDRAW_DIR, f) for f in os.listdir(QUICKDRAW_DIR) if f.endswith(".ndjson"))


@pytest.fixture(scope="module")
def real_drawings() -> dict[str, list[Drawing]]:
    return {os.path.basename(p)[: -len(".ndjson")]: list(read_ndjson(p, strict=True)) for p in _sample_files()}


def _line(drawing, **extra) -> str:
    obj = {"word": "cat", "countrycode": "US", "timestamp": "2017-03-01 00:00:00.0 UTC", "recognized": True,
           "key_id": "1", "drawing": drawing}
    obj.update(extra)
    return json.dumps(obj)


def _reference(strokes, size, line_width, padding) -> np.ndarray:
    """Brute force: distance from every pixel centre to every segment, float64, no windows or chunks."""
    pts = np.concatenate([np.asarray(s, np.float64)[:, :2] for s in strokes])
    lo, hi = pts.min(0), pts.max(0)
    extent = (hi - lo).max()
    scale = size * (1 - 2 * padding) / extent if extent > 0 else 1.0
    segs = []
    for s in strokes:
        p = (np.asarray(s, np.float64)[:, :2] - (lo + hi) / 2) * scale + size / 2
        p = np.repeat(p, 2, 0) if len(p) == 1 else p
        segs.append(np.concatenate([p[:-1], p[1:]], 1))
    seg = np.concatenate(segs)  # [S, 4]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    pix = np.stack([xx.ravel(), yy.ravel()], 1)[:, None, :]  # [P, 1, 2]
    a, d = seg[None, :, :2], seg[None, :, 2:] - seg[None, :, :2]
    t = np.clip(((pix - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0, 1)
    dist = np.linalg.norm(pix - a - t[..., None] * d, axis=-1).min(1)
    cov = np.clip(line_width / 2 + 0.5 - dist, 0, 1)
    return np.round(255 * (1 - cov)).reshape(size, size)


# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_every_real_file(real_drawings):
    files = _sample_files()
    assert len(files) == QUICKDRAW_CATEGORIES
    total = 0
    for word, drawings in real_drawings.items():
        assert len(drawings) == QUICKDRAW_PER_CATEGORY
        for d in drawings:
            assert d.word == word  # file names are the category names, spaces included
            assert d.key_id and isinstance(d.key_id, str) and isinstance(d.recognized, bool)
            assert d.strokes and all(s.dtype == np.float32 and s.ndim == 2 and s.shape[1] == 2 for s in d.strokes)
            pts = np.concatenate(d.strokes)
            assert pts.min() >= 0 and pts.max() <= 255
        total += len(drawings)
    assert total == QUICKDRAW_CATEGORIES * QUICKDRAW_PER_CATEGORY
    errors: list[MalformedDrawing] = []
    assert sum(1 for _ in read_ndjson(files[0], errors=errors)) == QUICKDRAW_PER_CATEGORY and errors == []


def test_parse_line_fields_and_int_key_id():
    d = parse_line(_line([[[0, 10, 20], [5, 5, 30]], [[7], [8]]], key_id=5027286841556992, recognized=False))
    assert d.key_id == "5027286841556992" and d.word == "cat" and d.countrycode == "US" and d.recognized is False
    assert d.timestamp.startswith("2017") and d.num_points == 4
    np.testing.assert_array_equal(d.strokes[0], [[0, 5], [10, 5], [20, 30]])
    assert d.strokes[1].shape == (1, 2)
    assert parse_line(_line([[[1], [2]]]).encode()).word == "cat"  # bytes lines too


def test_raw_format_with_timings_is_normalised():
    raw = [[[100.5, 300.25, 900.0], [400.0, 420.0, 600.0], [0, 120, 250]], [[500, 510], [200, 800], [400, 460]]]
    d = parse_line(_line(raw, key_id=42))
    pts = np.concatenate(d.strokes)
    assert all(s.shape[1] == 2 for s in d.strokes)  # timings dropped by default
    assert pts.min(0).tolist() == [0, 0] and pts.max() == pytest.approx(255)
    # longest side is x (799.5 wide, 600 high): y keeps the aspect ratio
    assert pts[:, 0].max() == pytest.approx(255) and pts[:, 1].max() == pytest.approx(600 * 255 / 799.5, rel=1e-5)
    kept = parse_line(_line(raw), keep_time=True)
    assert kept.strokes[0].shape == (3, 3) and kept.strokes[0][:, 2].tolist() == [0, 120, 250]
    np.testing.assert_allclose(kept.strokes[0][:, :2], d.strokes[0])
    untouched = parse_line(_line(raw), normalize=False)
    assert untouched.strokes[0][0].tolist() == [100.5, 400.0]
    # a raw file reads the same way as a simplified one
    img = rasterize([d.strokes])
    assert img.shape == (1, 64, 64) and img.min() == 0


def test_normalize_strokes():
    out = normalize_strokes([np.array([[10, 20], [30, 60]], np.float32), np.array([[12, 25]], np.float32)])
    np.testing.assert_allclose(np.concatenate(out), [[0, 0], [127.5, 255], [12.75, 31.875]])
    assert normalize_strokes([np.array([[7, 9]], np.float32)])[0].tolist() == [[0, 0]]  # a dot is only shifted


def test_malformed_lines_are_skipped_and_reported(tmp_path):
    good = [[[0, 50, 100], [0, 50, 0]]]
    lines = [
        _line(good, key_id="good1"),                                          # 1
        '{"word": "cat", "key_id": "x", "drawing": [[[1, 2], [3, 4]]',        # 2 bad JSON
        json.dumps({"word": "cat", "key_id": "nodrawing"}),                   # 3 missing drawing
        _line([[[0, 1, 2], [0, 1]]], key_id="mismatch"),                      # 4 x/y length mismatch
        _line([[[0, "a"], [0, 1]]], key_id="nonnumeric"),                     # 5 non-numeric
        _line([], key_id="empty"),                                            # 6 empty drawing
        _line([[[0, 1], [0, 1]]], key_id="nan").replace("[0, 1]]", "[0, NaN]]", 1),  # 7 NaN
        "",                                                                   # 8 blank: skipped silently
        _line([[[], []]], key_id="emptystrokes"),                             # 9 only empty strokes
        json.dumps({"key_id": "noword", "drawing": good}),                    # 10 missing word
        "[1, 2, 3]",                                                          # 11 not an object
        _line([[[0, 1], [0, 1], [0, 1], [0, 1]]], key_id="4lists"),           # 12 four lists
        _line([[[0, True], [0, 1]]], key_id="bool"),                          # 13 bool is not a number
        _line([[[0, 1e400], [0, 1]]], key_id="inf").replace("Infinity", "1e400"),  # 14 overflow -> inf
        _line(good, key_id="good2"),                                          # 15
    ]
    path = tmp_path / "cat.ndjson"
    path.write_text("\n".join(lines) + "\n")
    errors: list[MalformedDrawing] = []
    drawings = list(read_ndjson(str(path), errors=errors))
    assert [d.key_id for d in drawings] == ["good1", "good2"]
    assert [e.line_no for e in errors] == [2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14]
    assert all(e.source == str(path) for e in errors)
    reasons = {e.line_no: e.reason for e in errors}
    assert "invalid JSON" in reasons[2]
    assert "missing 'drawing'" in reasons[3]
    assert "different lengths" in reasons[4]
    assert "non-numeric" in reasons[5] and "non-numeric" in reasons[13]
    assert reasons[6] == "empty drawing" and reasons[9] == "empty drawing"
    assert "non-finite" in reasons[7] and "non-finite" in reasons[14]
    assert "missing 'word'" in reasons[10]
    assert "not a JSON object" in reasons[11]
    assert "2 (x, y) or 3" in reasons[12]
    assert str(errors[0]) == f"{path}:2: malformed drawing: {reasons[2]}"

    with pytest.raises(MalformedDrawing, match=r"cat\.ndjson:2: .*invalid JSON") as info:
        list(read_ndjson(str(path), strict=True))
    assert info.value.line_no == 2 and info.value.source == str(path)
    # without an error list bad lines are still skipped (and logged), never raised
    assert len(list(read_ndjson(str(path)))) == 2


def test_malformed_drawing_pickles():
    e = pickle.loads(pickle.dumps(MalformedDrawing("s3://b/cat.ndjson", 7, "empty drawing")))
    assert (e.source, e.line_no, e.reason) == ("s3://b/cat.ndjson", 7, "empty drawing")
    assert str(e) == "s3://b/cat.ndjson:7: malformed drawing: empty drawing"


def test_file_uri_gzip_crlf_and_roundtrip(tmp_path):
    d = parse_line(_line([[[0, 10.4, 255], [3, 4.6, 200]], [[9], [9]]], key_id="k"))
    text = drawing_to_json(d)
    assert json.loads(text)["drawing"] == [[[0, 10, 255], [3, 5, 200]], [[9], [9]]]
    path = tmp_path / "my cat.ndjson"
    path.write_bytes((text + "\r\n\r\n" + text + "\r\n").encode())
    back = list(read_ndjson("file://" + str(path), strict=True))
    assert len(back) == 2 and back[0].key_id == "k" and back[0].word == "cat" and back[0].countrycode == "US"
    np.testing.assert_array_equal(back[0].strokes[0], [[0, 3], [10, 5], [255, 200]])
    gz = tmp_path / "cat.ndjson.gz"
    gz.write_bytes(gzip.compress((text + "\n").encode()))
    assert [x.key_id for x in read_ndjson(str(gz), strict=True)] == ["k"]


# --- rasterisation -------------------------------------------------------------------------------------


def test_rasterize_real_batch(real_drawings):
    size, pad, lw = 64, 0.08, 2.0
    batch = [ds[0].strokes for ds in real_drawings.values()]  # one drawing per category
    img = rasterize(batch, size, lw, pad)
    assert img.dtype == np.uint8 and img.shape == (len(batch), size, size)
    avail = size * (1 - 2 * pad)
    for i, im in enumerate(img):
        ink = im < 128
        assert ink.any(), i
        rows, cols = np.nonzero(ink.any(1))[0], np.nonzero(ink.any(0))[0]
        # centred: the ink's bounding box is symmetric about the canvas centre (within a pixel)...
        assert abs((rows[0] + rows[-1] + 1) / 2 - size / 2) <= 1.0, i
        assert abs((cols[0] + cols[-1] + 1) / 2 - size / 2) <= 1.0, i
        # ...its longest side fills the padded canvas, and no ink reaches into the padding (beyond the stroke)
        longest = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        assert avail - 1 <= longest <= avail + lw + 1, i
        margin = size * pad - lw / 2 - 1
        assert min(rows[0], cols[0]) >= margin and max(rows[-1], cols[-1]) <= size - 1 - margin, i
        # antialiased: intermediate grey levels along the strokes; paper stays white
        assert ((im > 0) & (im < 255)).sum() >= 10, i
        assert im[0].min() == 255 and im[:, 0].min() == 255
    # the batch is just the drawings side by side: each image equals rasterising it alone
    np.testing.assert_array_equal(img[5], rasterize([batch[5]], size, lw, pad)[0])


@pytest.mark.parametrize("size,lw,precision", [(64, 2.0, "highest"), (32, 1.5, "highest"), (128, 3.5, "highest"),
                                               (64, 0.7, "highest"), (64, 2.0, "medium")])
def test_rasterize_matches_brute_force_reference(real_drawings, size, lw, precision):
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)  # "medium": the elementwise path, not reduced-precision matmul
    try:
        _check_reference(real_drawings, size, lw)
    finally:
        torch.set_float32_matmul_precision(before)


def _check_reference(real_drawings, size, lw):
    batch = [ds[i].strokes for ds in list(real_drawings.values())[:40:8] for i in (0, 1)]
    img = rasterize(batch, size, lw, 0.08)
    for i, strokes in enumerate(batch):
        ref = _reference(strokes, size, lw, 0.08)
        assert np.abs(img[i].astype(int) - ref).max() <= 1, i


def test_horizontal_line_hand_check():
    # x 0..255 at y 100: fitted to x 5.12..58.88 and centred at y 32; 2 px wide: rows 31 and 32 exactly.
    img = rasterize([[np.array([[0, 100], [255, 100]], np.float32)]], size=64, line_width=2.0, padding=0.08)[0]
    other = np.delete(img, [31, 32], axis=0)
    assert (other == 255).all()
    for row in (img[31], img[32]):
        assert (row[5:59] == 0).all()  # pixel centres 5.5 .. 58.5 lie on the line
        assert (row[:4] == 255).all() and (row[60:] == 255).all()
        # round caps: pixel centres (4.5, 31.5/32.5) lie 0.796 px from the end point: coverage 0.704
        assert 70 <= row[4] <= 80 and 70 <= row[59] <= 80
    # vertical: the same, transposed; and y grows downwards (image rows), x rightwards (columns)
    vert = rasterize([[np.array([[3, 0], [3, 255]], np.float32)]])[0]
    np.testing.assert_array_equal(vert, img.T)
    top = rasterize([[np.array([[0, 0], [255, 0]], np.float32), np.array([[128, 255]], np.float32)]])[0]
    assert top[:20].min() == 0 and top[20:50].min() == 255 and top[50:].min() < 128


def test_single_point_is_a_dot():
    img = rasterize([[np.array([[5, 5]], np.float32)]], size=64, line_width=2.0)[0]
    dot = img[31:33, 31:33]
    # pixel centres 0.707 px from the point: coverage 1.5 - 0.707 = 0.793 -> 255 * 0.207 = 53
    assert (np.abs(dot.astype(int) - 53) <= 1).all()
    img[31:33, 31:33] = 255
    assert (img == 255).all()
    # a dot beside a line: both drawn
    both = rasterize([[np.array([[0, 0], [100, 0]], np.float32), np.array([[50, 100]], np.float32)]])[0]
    assert both[:32].min() == 0 and both[40:].min() < 128


def test_empty_batch_and_empty_drawing_errors():
    out = rasterize([], size=48)
    assert out.shape == (0, 48, 48) and out.dtype == np.uint8
    import torch

    t = rasterize([[np.array([[0, 0], [9, 9]], np.float32)]], size=16, device="cpu", as_tensor=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.shape == (1, 16, 16)
    ok = [np.array([[0, 0], [10, 10]], np.float32)]
    with pytest.raises(ValueError, match="batch index 1: empty drawing"):
        rasterize([ok, []])
    with pytest.raises(ValueError, match="batch index 2: empty drawing"):
        rasterize([ok, ok, [np.zeros((0, 2), np.float32)]])
    with pytest.raises(ValueError, match="batch index 1: non-finite"):
        rasterize([ok, [np.array([[0, np.nan]], np.float32)]])


def test_long_drawings_chunked_and_time_column_ignored(monkeypatch):
    # a raw-like spiral with thousands of points, plus a drawing whose strokes keep a time column
    t = np.linspace(0, 12 * np.pi, 5000)
    spiral = [np.stack([t * np.cos(t) * 40 + 900, t * np.sin(t) * 30 + 500], 1).astype(np.float32)]
    timed = [np.array([[0, 0, 0], [255, 255, 100]], np.float32), np.array([[0, 255, 200]], np.float32)]
    batch = [spiral, timed, spiral[:1]]
    full = rasterize(batch, size=96, line_width=1.5)
    monkeypatch.setattr(quickdraw, "_CHUNK_ELEMENTS", 1000)  # many small chunks: same result
    np.testing.assert_array_equal(rasterize(batch, size=96, line_width=1.5), full)
    np.testing.assert_array_equal(full[1], rasterize([[s[:, :2] for s in timed]], size=96, line_width=1.5)[0])
    assert (full[0] < 128).mean() > 0.1  # the spiral is drawn
    np.testing.assert_array_equal(full[2], full[0])


def test_line_width_does_not_scale_with_size():
    line = [[np.array([[0, 10], [255, 10]], np.float32)]]
    for size in (32, 64, 128):
        img = rasterize(line, size=size, line_width=3.0)[0]
        assert (img[:, size // 2] < 255).sum() == 4  # 3 px wide line: 4 partly/fully inked rows
        assert (img[:, size // 2] == 0).sum() == 2


# --- strokes as lists (requests) and packed arrays (catalogs) ---------------------------------------------


def test_strokes_from_lists_validates_like_parse_line():
    strokes = strokes_from_lists([[[0, 5, 10], [1, 2, 3]], [[], []], [[7], [8], [100]]])
    assert [s.shape for s in strokes] == [(3, 2), (1, 3)] and all(s.dtype == np.float64 for s in strokes)
    np.testing.assert_array_equal(strokes[1], [[7, 8, 100]])
    for bad, msg in [("x", "not a list of strokes"), ([], "empty drawing"), ([[[], []]], "empty drawing"),
                     ([[1, 2, 3, 4]], "stroke 0 is not a list"), ([[1, [2]]], "stroke 0 x is not a list"),
                     ([[[1], [2]], [[1, 2], [3]]], "stroke 1 has coordinate"),
                     ([[[1, "2"], [1, 2]]], "stroke 0 x holds a non-numeric"), ([[[1, 2], [True, 2]]], "stroke 0 y"),
                     ([[[1, float("nan")], [1, 2]]], "non-finite"), ([[[1, 10 ** 400], [1, 2]]], "out of range")]:
        with pytest.raises(ValueError, match=msg):
            strokes_from_lists(bad)
        with pytest.raises(MalformedDrawing, match=msg):  # the same check, the same words, for an ndjson line
            parse_line(_line(bad))


def test_pack_strokes_roundtrip_and_layout():
    strokes = [np.array([[0, 5], [10, 5], [20, 30]], np.float32), np.zeros((0, 2), np.float32),
               np.array([[7, 8, 120]], np.float32)]  # an empty stroke vanishes, timings are dropped
    packed = pack_strokes(strokes)
    assert packed.dtype == np.float32 and packed.ndim == 1
    np.testing.assert_array_equal(packed.reshape(-1, 3), [[0, 5, 0], [10, 5, 0], [20, 30, 1], [7, 8, 1]])
    back = unpack_strokes(packed)
    assert len(back) == 2 and back[1].shape == (1, 2)
    np.testing.assert_array_equal(back[0], strokes[0])
    np.testing.assert_array_equal(unpack_strokes(packed.tolist())[1], [[7, 8]])  # Arrow's to_pylist form
    assert pack_strokes([]).shape == (0,)


def test_rasterize_packed_equals_rasterize(real_drawings):
    batch = [d.strokes for ds in real_drawings.values() for d in ds[:3]]
    batch += [[np.array([[5, 5]], np.float32)],  # a lone dot, and dots between lines
              [np.array([[1, 2]], np.float32), np.array([[3, 4], [90, 9]], np.float32), np.array([[7, 1]], np.float32)]]
    for size, lw, pad in [(64, 2.0, 0.08), (28, 1.5, 0.0), (96, 3.5, 0.2)]:
        expected = rasterize(batch, size, lw, pad)
        np.testing.assert_array_equal(rasterize_packed([pack_strokes(s) for s in batch], size, lw, pad), expected)
    # rows as lists (Arrow's to_pylist) and an object column with one array per row (a Ray Data numpy batch)
    column = np.empty(len(batch), dtype=object)
    column[:] = [pack_strokes(s) for s in batch]
    np.testing.assert_array_equal(rasterize_packed(column, 96, 3.5, 0.2), expected)
    np.testing.assert_array_equal(rasterize_packed([r.tolist() for r in column[:4]], 96, 3.5, 0.2), expected[:4])
    assert rasterize_packed([], size=8).shape == (0, 8, 8)


def test_rasterize_packed_errors_name_the_row():
    ok = pack_strokes([np.array([[0, 0], [10, 10]], np.float32)])
    for rows, msg in [([ok, np.zeros(0, np.float32)], "batch index 1: empty drawing"),
                      ([ok, ok, ok[:5]], "batch index 2: a packed drawing"),
                      ([ok, ok.reshape(-1, 3)], "batch index 1: a packed drawing"),
                      ([np.array([0, 0, 0, 1, 1, 0], np.float32), ok], "batch index 0: the last point"),
                      ([ok, np.array([0, np.nan, 1], np.float32)], "batch index 1: non-finite")]:
        with pytest.raises(ValueError, match=msg):
            rasterize_packed(rows)
