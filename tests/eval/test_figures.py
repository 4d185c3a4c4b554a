"""Tests for ray_sbir.eval.figures: retrieval grids and PR-curve PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ray_sbir.eval.figures import (
    GREEN,
    QUERY_COLOR,
    RED,
    grid_geometry,
    pr_curve_png,
    retrieval_grid_png,
    save_png,
    to_pil,
)


def _decode(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def _grid_inputs(n_rows=3, n_res=10, seed=0):
    rng = np.random.default_rng(seed)
    queries = [np.full((50, 40), 230, np.uint8) for _ in range(n_rows)]  # gray sketches, non-square
    results = [[rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(n_res)] for _ in range(n_rows)]
    correct = [[bool((i + j) % 3) for j in range(n_res)] for i in range(n_rows)]
    return queries, results, correct


def test_grid_png_size_and_borders():
    queries, results, correct = _grid_inputs()
    data = retrieval_grid_png(
        queries,
        results,
        correct,
        query_titles=["cat", "car", "tent"],
        result_titles=[[f"class {j}" for j in range(10)] for _ in range(3)],
        thumb=64,
    )
    img = _decode(data)
    geo = grid_geometry(3, 10, 64)
    assert img.size == (geo.width, geo.height)
    assert img.size == (902, 297)  # pinned layout for a 3 x (1 + 10) grid of 64 px thumbnails
    px = np.asarray(img)
    for i in range(3):
        x0, y0, x1, y1 = geo.tile_box(i, 0)
        assert tuple(px[(y0 + y1) // 2, x0 + 1]) == QUERY_COLOR
        for j in range(10):
            x0, y0, x1, y1 = geo.tile_box(i, j + 1)
            want = GREEN if correct[i][j] else RED
            ym = (y0 + y1) // 2
            # left, right and bottom border strips are solid in the expected colour, border is thick
            for x in range(x0, x0 + geo.border):
                assert tuple(px[ym, x]) == want
            assert tuple(px[ym, x1 - 2]) == want
            assert tuple(px[y1 - 2, (x0 + x1) // 2]) == want
            assert geo.border >= 4


def test_grid_marks_differ_in_grayscale():
    """Correct and wrong results must be distinguishable without colour (check vs cross badge)."""
    queries, results, _ = _grid_inputs(1, 2)
    same = [np.full((40, 40, 3), 128, np.uint8)] * 2
    img = _decode(retrieval_grid_png(queries, [same], [[True, False]], thumb=64)).convert("L")
    geo = grid_geometry(1, 2, 64)
    badge = 16
    crops = []
    for col in (1, 2):
        _, y0, x1, _ = geo.tile_box(0, col)
        crops.append(np.asarray(img.crop((x1 - badge - 2, y0, x1, y0 + badge + 2)), dtype=int))
    # normalise away the (possibly different) gray level of green vs red: compare the white stroke masks
    masks = [c > 200 for c in crops]
    assert masks[0].sum() > 5 and masks[1].sum() > 5
    assert (masks[0] != masks[1]).sum() > 10


def test_grid_accepts_various_image_formats_and_title():
    float_chw = np.random.default_rng(1).random((3, 20, 30)).astype(np.float32)  # CHW in [0, 1]
    rgba = np.zeros((16, 16, 4), np.uint8)
    tens = torch.rand(1, 24, 24)
    pil = Image.new("L", (10, 30), 0)
    data = retrieval_grid_png(
        [float_chw, pil], [[rgba, tens], [pil]], [[True, False], [True]], thumb=32, title="epoch 3"
    )
    img = _decode(data)
    geo = grid_geometry(2, 2, 32, title="epoch 3")
    assert img.size == (geo.width, geo.height)
    assert geo.header_h > 0
    assert to_pil(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background
    assert to_pil(float_chw).size == (30, 20)


def test_grid_validates_inputs():
    queries, results, correct = _grid_inputs(2, 3)
    with pytest.raises(ValueError):
        retrieval_grid_png(queries, results[:1], correct)
    with pytest.raises(ValueError):
        retrieval_grid_png(queries, results, [c[:2] for c in correct])
    with pytest.raises(ValueError):
        retrieval_grid_png(queries, results, correct, query_titles=["only one"])
    with pytest.raises(ValueError):
        retrieval_grid_png([], [], [])


def test_pr_curve_png_decodes():
    r = np.linspace(0, 1, 11)
    data = pr_curve_png(
        {"untrained": (r, 0.3 * (1 - r) + 0.1), "trained": (r, 0.9 - 0.5 * r**2)}, "Sketchy: PR",
        size=(5, 4), dpi=100,
    )
    img = _decode(data)
    assert img.size == (500, 400)
    assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 10  # something was drawn
    with pytest.raises(ValueError):
        pr_curve_png({}, "empty")
    with pytest.raises(ValueError):
        pr_curve_png({"bad": (r, r[:5])}, "bad")


def test_save_png_roundtrip(tmp_path):
    r = np.linspace(0, 1, 11)
    data = pr_curve_png({"x": (r, 1 - r)}, "t")
    uri = str(tmp_path / "sub" / "pr.png")
    save_png(uri, data)
    assert (tmp_path / "sub" / "pr.png").read_bytes() == data
