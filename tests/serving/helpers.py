"""Shared helpers of the Serve app's tests (tests/serving, tests/distributed): the exact in-process answers to
compare with and the bad requests every front must refuse; the tiny gallery and the app started on a free loopback
port come from :mod:`ray_sbir.testing` (the serving benches start them too), re-exported here."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ray_sbir.testing.galleries import Gallery, make_gallery, make_rerank_checkpoint, serve_config_for  # noqa: F401
from ray_sbir.testing.serve import (APP_NAME, HAProxyLog, replica_actor, start_serve, stop_serve,  # noqa: F401
                                   wait_for_healthz, wait_for_replicas)

httpx = pytest.importorskip("httpx")

REPO = Path(__file__).resolve().parents[2]


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def sketch_png(strokes, size: int = 96) -> bytes:
    from ray_sbir.data.quickdraw import rasterize

    pts = [np.stack([np.asarray(s[0], np.float32), np.asarray(s[1], np.float32)], 1) for s in strokes]
    return png_bytes(rasterize([pts], size=size, line_width=2.0, padding=0.1)[0])


def expected_from_image(g: Gallery, image: np.ndarray) -> np.ndarray:
    """The query embedding of a sketch image, computed in-process with the same encoder (and mirror average)."""
    from ray_sbir.data.images import to_model_input
    from ray_sbir.models.inference import encode

    with torch.inference_mode():
        x = to_model_input(torch.from_numpy(np.array(image[None])))
        return encode(g.model, x, "sketch", flip_average=g.flip_average).numpy()[0]


def expected_from_strokes(g: Gallery, strokes) -> np.ndarray:
    from ray_sbir.data.quickdraw import rasterize

    pts = [np.stack([np.asarray(s[0], np.float32), np.asarray(s[1], np.float32)], 1) for s in strokes]
    return expected_from_image(g, rasterize([pts], size=g.size, line_width=g.line_width, padding=g.padding)[0])


def check_exact(g: Gallery, body: dict, query: np.ndarray, k: int, tol: float = 1e-4) -> None:
    """The answer is the exact top-k of the whole gallery for ``query`` (the index opened in-process)."""
    from ray_sbir.search import open_index

    results = body["results"]
    assert body["k"] == k and body["count"] == len(results) == min(k, len(g.ids))
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    row_of = {item_id: i for i, item_id in enumerate(g.ids)}
    assert all(r["id"] in row_of for r in results)
    assert len({r["id"] for r in results}) == len(results)
    for r in results:
        assert r["class"] == g.labels[row_of[r["id"]]]
        assert r["image_url"].endswith("/image") and r["image_url"].startswith("/items/")
    exp_scores, exp_rows = open_index(g.index, expand=False).search(query[None], k)
    np.testing.assert_allclose(scores, exp_scores[0], atol=tol)
    all_scores = g.embeddings @ query
    for r in results:  # each returned score is that item's true score
        assert abs(all_scores[row_of[r["id"]]] - r["score"]) < tol
    returned = {row_of[r["id"]] for r in results}
    rest = [s for i, s in enumerate(all_scores) if i not in returned]
    if rest:  # nothing left out scores higher than the last returned item
        assert max(rest) <= min(scores) + tol
    gaps = np.diff(exp_scores[0])
    if len(gaps) == 0 or np.abs(gaps).min() > 10 * tol:  # no near-ties: the very same ids, in order
        assert [r["id"] for r in results] == [g.ids[i] for i in exp_rows[0]]


def _bomb_png(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    data = bytearray(png_bytes(np.full((8, 8), 255, np.uint8)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17]))
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def _big_blank_png(side: int) -> bytes:
    img = np.full((side, side), 255, np.uint8)
    img[side // 3:side // 2, side // 3:side // 2] = 0
    return png_bytes(img)


def bad_requests(gallery: Gallery) -> list[tuple[str, dict, int, str]]:
    """(name, httpx.request kwargs, expected status, a word of the expected detail)."""
    good = sketch_png(gallery.drawings[0][2])
    png = {"content-type": "image/png"}
    js = {"content-type": "application/json"}
    stroke = [[0, 10, 20], [0, 10, 0]]
    boundary = "XyZ123"
    mp = {"content-type": f"multipart/form-data; boundary={boundary}"}
    return [
        ("empty body", dict(content=b"", headers=png), 400, "empty"),
        ("empty json body", dict(content=b"", headers=js), 400, "empty"),
        ("not an image", dict(content=b"hello, I am not a PNG" * 3, headers=png), 400, "not a decodable image"),
        ("truncated png", dict(content=good[: len(good) // 2], headers=png), 400, "image"),
        ("png header only", dict(content=good[:40], headers=png), 400, "image"),
        ("blank image", dict(content=png_bytes(np.full((40, 40), 255, np.uint8)), headers=png), 422, "no ink"),
        ("bomb header", dict(content=_bomb_png(100_000, 100_000), headers=png), 413, "pixels"),
        ("over pixel limit", dict(content=_big_blank_png(1100), headers=png), 413, "pixels"),
        ("body over byte limit", dict(content=b"\x89PNG" + bytes(300 * 1024), headers=png), 413, "limit"),
        ("chunked body over limit", dict(content=(bytes(64 * 1024) for _ in range(6)), headers=png), 413, "limit"),
        ("unsupported type", dict(content=b"<html></html>", headers={"content-type": "text/html"}), 415,
         "Content-Type"),
        ("multipart without file", dict(content=(f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n5"
                                                f"\r\n--{boundary}--\r\n").encode(), headers=mp), 400, "file"),
        ("multipart truncated", dict(content=(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                                             f"filename=\"a.png\"\r\n\r\n").encode() + good[:100], headers=mp),
         400, "truncated"),
        ("multipart no boundary", dict(content=b"abc", headers={"content-type": "multipart/form-data"}), 400,
         "boundary"),
        ("multipart bad image", dict(files={"file": ("a.png", b"nope", "image/png")}), 400, "not a decodable image"),
        ("multipart bad k", dict(files={"file": ("a.png", good, "image/png")}, data={"k": "many"}), 422, "k"),
        ("invalid json", dict(content=b'{"strokes": [[[1,2],[3,4]]', headers=js), 400, "invalid JSON"),
        ("json not utf-8", dict(content=b'{"strokes": "\xff\xfe"}', headers=js), 400, "JSON"),
        ("json number", dict(content=b"42", headers=js), 422, "strokes"),
        ("missing strokes", dict(json={"drawing": [stroke]}), 422, "strokes"),
        ("unknown field", dict(json={"strokes": [stroke], "top_k": 5}), 400, "unknown field 'top_k'"),
        ("strokes not a list", dict(json={"strokes": "abc"}), 422, "strokes"),
        ("empty strokes", dict(json={"strokes": []}), 422, "empty"),
        ("empty stroke", dict(json={"strokes": [[[], []]]}), 422, "empty"),
        ("stroke not x/y lists", dict(json={"strokes": [[1, 2, 3, 4]]}), 422, "stroke 0"),
        ("stroke lengths differ", dict(json={"strokes": [[[1, 2, 3], [1, 2]]]}), 422, "different lengths"),
        ("non-numeric coordinate", dict(json={"strokes": [[[1, "2"], [1, 2]]]}), 422, "non-numeric"),
        ("boolean coordinate", dict(json={"strokes": [[[1, True], [1, 2]]]}), 422, "non-numeric"),
        ("NaN coordinate", dict(content=b'{"strokes": [[[1, NaN], [1, 2]]]}', headers=js), 422, "non-finite"),
        ("huge coordinate", dict(json={"strokes": [[[1, 1e12], [1, 2]]]}), 422, "out of range"),
        ("too many strokes", dict(json={"strokes": [[[i], [i]] for i in range(201)]}), 422, "too many strokes"),
        ("too many points", dict(json={"strokes": [[[0] * 25_000, [0] * 25_000]]}), 422, "too many points"),
        ("k zero", dict(json={"strokes": [stroke], "k": 0}), 422, "between 1 and 50"),
        ("k negative", dict(json={"strokes": [stroke], "k": -3}), 422, "between 1 and 50"),
        ("k above max", dict(json={"strokes": [stroke], "k": 51}), 422, "between 1 and 50"),
        ("k float", dict(json={"strokes": [stroke], "k": 2.5}), 422, "integer"),
        ("k bool", dict(json={"strokes": [stroke], "k": True}), 422, "integer"),
        ("k string", dict(json={"strokes": [stroke], "k": "5"}), 422, "integer"),
        ("k query not a number", dict(params={"k": "ten"}, json={"strokes": [stroke]}), 422, "integer"),
        ("k query zero", dict(params={"k": "0"}, content=good, headers=png), 422, "between"),
        ("k query too big", dict(params={"k": "1000"}, content=good, headers=png), 422, "between"),
    ]


def mixed_load_plan(gallery: Gallery, requests: int, seed: int = 0) -> list[tuple[str, dict, int]]:
    """``(name, httpx.request kwargs, expected status)`` for a load test: 70% valid searches (strokes and PNG
    uploads), 30% of :func:`bad_requests` (bar the slow-to-send ones), in a seeded random order."""
    good_bodies = [("strokes", {"json": {"strokes": d[2], "k": 10}}) for d in gallery.drawings]
    good_bodies += [("png", {"content": sketch_png(d[2]), "headers": {"content-type": "image/png"}})
                    for d in gallery.drawings[:2]]
    bad = [(name, kw, status) for name, kw, status, _ in bad_requests(gallery)
           if "chunked" not in name and "too many points" not in name]
    rng = random.Random(seed)
    plan = []
    for _ in range(requests):
        if rng.random() < 0.3:
            name, kw, status = rng.choice(bad)
            plan.append((f"bad:{name}", kw, status))
        else:
            name, kw = rng.choice(good_bodies)
            plan.append((f"good:{name}", kw, 200))
    return plan


def image_variants(strokes) -> list[tuple[str, bytes]]:
    """The sketch saved in many of the modes and formats Pillow writes (each should search or get a 4xx)."""
    base = Image.open(io.BytesIO(sketch_png(strokes, 96))).convert("L")
    out = []
    for fmt, mode, kw in [("PNG", "1", {}), ("PNG", "L", {}), ("PNG", "LA", {}), ("PNG", "P", {}),
                          ("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "I;16", {}), ("PNG", "I", {}),
                          ("JPEG", "L", {}), ("JPEG", "RGB", {"quality": 30}), ("JPEG", "CMYK", {}),
                          ("JPEG", "RGB", {"progressive": True}), ("GIF", "P", {}), ("BMP", "RGB", {}),
                          ("BMP", "1", {}), ("WEBP", "RGB", {"lossless": True}), ("WEBP", "RGBA", {}),
                          ("TIFF", "RGB", {}), ("ICO", "RGBA", {}), ("PPM", "RGB", {}), ("TGA", "RGB", {})]:
        img = base.convert(mode) if mode not in ("I;16", "I") else Image.fromarray(
            (np.asarray(base, np.uint16) * 257).astype(np.uint16 if mode == "I;16" else np.int32))
        buf = io.BytesIO()
        try:
            img.save(buf, format=fmt, **kw)
        except (OSError, ValueError, KeyError):  # a mode this Pillow cannot write in that format
            continue
        out.append((f"{fmt} {mode} {kw}", buf.getvalue()))
    # An animated GIF (two frames) and a JPEG with an EXIF rotation.
    buf = io.BytesIO()
    base.convert("P").save(buf, format="GIF", save_all=True, append_images=[base.convert("P").rotate(90)])
    out.append(("animated GIF", buf.getvalue()))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    base.convert("RGB").save(buf, format="JPEG", exif=exif)
    out.append(("JPEG EXIF rotated", buf.getvalue()))
    return out
