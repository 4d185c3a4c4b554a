"""A QuickDraw gallery end to end: real drawings (the repository's fixture) indexed by the QuickDraw job with a
checkpoint, served by the Serve app, searched by strokes over HTTP; results carry the drawing's word, country and
key id, and ``/items/{key_id}/image`` renders the doodle from its own line of the ndjson file (a ranged read).
"""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures import QUICKDRAW_DIR, QUICKDRAW_PER_CATEGORY
from tests.serving.helpers import start_serve, stop_serve

httpx = pytest.importorskip("httpx")

CATEGORIES = ("cat", "airplane", "The Eiffel Tower", "hot air balloon", "apple", "banana")


@pytest.fixture(scope="module")
def quickdraw_gallery(tmp_path_factory, ray_local):
    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.data.decode import render_spec
    from ray_sbir.distributed.embed import ModelSource
    from ray_sbir.models import create_model
    from ray_sbir.distributed.index_quickdraw import index_quickdraw

    root = tmp_path_factory.mktemp("qd_serving")
    ndjson = root / "ndjson"
    ndjson.mkdir()
    for name in CATEGORIES:
        shutil.copy(os.path.join(QUICKDRAW_DIR, f"{name}.ndjson"), ndjson / f"{name}.ndjson")
    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=32"])
    torch.manual_seed(0)
    checkpoint = str(root / "checkpoint")
    write_checkpoint(checkpoint, {"model": create_model(cfg.model).state_dict()},
                     CheckpointMeta(epoch=1, config=cfg, classes=["train_a"], metrics={}))
    spec = render_spec(cfg, "sketch")
    index = str(root / "index")
    res = index_quickdraw(str(ndjson), ModelSource(checkpoint), index, size=spec.size, line_width=spec.line_width,
                          padding=spec.padding, chunk_bytes=4096)
    assert res.rows == len(CATEGORIES) * QUICKDRAW_PER_CATEGORY and not res.failures
    drawings = [json.loads(line) for name in CATEGORIES
                for line in (ndjson / f"{name}.ndjson").read_text().splitlines()]
    return checkpoint, index, drawings


def test_search_a_quickdraw_index_by_strokes_and_fetch_doodle_thumbnails(quickdraw_gallery):
    from ray_sbir.serving import ServeConfig

    checkpoint, index, drawings = quickdraw_gallery
    cfg = ServeConfig(checkpoint=checkpoint, index=index, search_mode="colocated", max_k=50,
                      colocated={"num_cpus": 0.5, "max_batch_size": 4}, thumbnail_size=64)
    base = start_serve(cfg)
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            info = client.get("/info").json()
            assert sum(info["classes"].values()) == len(drawings) and set(info["classes"]) == set(CATEGORIES)
            for drawing in drawings[::13]:
                r = client.post("/search", json={"strokes": drawing["drawing"], "k": 5})
                assert r.status_code == 200, r.text
                top = r.json()["results"][0]
                # The query is one of the indexed drawings, rendered the same way: it finds itself first.
                assert top["id"] == drawing["key_id"] == top["key_id"] and top["score"] > 0.999
                assert top["class"] == drawing["word"] and top["countrycode"] == drawing["countrycode"]
                assert top["recognized"] == drawing["recognized"]
                png = client.get(top["image_url"])
                assert png.status_code == 200 and png.headers["content-type"] == "image/png"
                img = np.asarray(Image.open(io.BytesIO(png.content)))
                assert img.shape[:2] == (64, 64) and img.min() < 128 < img.max()  # ink on paper
            assert client.get("/items/no-such-key/image").status_code == 404
    finally:
        stop_serve()
