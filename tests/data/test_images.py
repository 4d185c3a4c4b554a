import io

import numpy as np
import pytest
from PIL import Image

from ray_sbir.data.images import (
    BadItem, color_jitter, decode_photo, decode_sketch_image, random_affine, to_model_input,
)


def _png(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def test_decode_photo_fits_and_pads():
    img = np.zeros((40, 80, 3), np.uint8)
    out = decode_photo(_png(img), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 255, 255]  # padding is white, object kept whole
    assert out[16, 16].tolist() == [0, 0, 0]


def test_decode_sketch_gray_and_empty():
    arr = np.full((50, 50), 255, np.uint8)
    with pytest.raises(BadItem, match="empty sketch"):
        decode_sketch_image(_png(arr), 32, "s.png")
    arr[20:30, 10:40] = 0
    out = decode_sketch_image(_png(arr), 32)
    assert out.shape == (32, 32) and out.min() < 50


def test_corrupt_empty_and_truncated_images_are_bad_items():
    with pytest.raises(BadItem, match="x.png: empty file"):
        decode_photo(b"", 32, "x.png")
    with pytest.raises(BadItem, match="not a decodable image"):
        decode_photo(b"this is not an image", 32, "y.jpg")
    good = _png(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(BadItem, match="z.png"):
        decode_photo(good[: len(good) // 2], 32, "z.png")


def test_decompression_bomb_is_refused(monkeypatch):
    import ray_sbir.data.images as images

    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadItem, match="exceeds"):
        decode_photo(_png(np.zeros((20, 20, 3), np.uint8)), 8, "big.png")


def test_augmentations_keep_shape_dtype_and_paper_white():
    rng = np.random.default_rng(0)
    sk = np.full((4, 32, 32), 255, np.uint8)
    out = random_affine(sk, rng)
    assert out.shape == sk.shape and out.dtype == np.uint8
    assert out.min() >= 254  # blank paper stays blank: the border is filled white, not black
    ph = rng.integers(0, 255, size=(3, 32, 32, 3), dtype=np.uint8)
    assert random_affine(ph, rng).shape == ph.shape
    assert color_jitter(ph, rng).shape == ph.shape


def test_to_model_input_shapes():
    x = to_model_input(np.zeros((2, 16, 16), np.uint8))
    assert x.shape == (2, 3, 16, 16)
    y = to_model_input(np.full((2, 16, 16, 3), 255, np.uint8))
    assert y.shape == (2, 3, 16, 16) and y.mean() > 1.5
