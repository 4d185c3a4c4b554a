"""The Ray Serve app over real HTTP on loopback: search by upload and by strokes, items, info, and every kind of bad
input answered with a 4xx and a JSON message.

A tiny random-init checkpoint (resnet10t, 32-d) and a gallery index of generated doodle photos and sketches are
built by the ``gallery`` fixture (tests/serving/conftest.py; helpers in tests/serving/helpers.py); two shards, so
answers are merged across deployments.
"""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.serving.helpers import (APP_NAME, REPO, bad_requests, check_exact, expected_from_image,
                                   expected_from_strokes, image_variants, sketch_png)

httpx = pytest.importorskip("httpx")


def test_healthz_and_info(served, gallery):
    r = served.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    info = served.get("/info").json()
    assert info["count"] == len(gallery.ids) and info["dim"] == 32 and info["search_mode"] == served.search_mode
    shards = info["shards"]
    assert info["num_shards"] == len(shards) == (2 if served.search_mode == "sharded" else 1)
    assert shards[0]["start"] == 0 and shards[-1]["stop"] == len(gallery.ids)
    assert all(a["stop"] == b["start"] for a, b in zip(shards, shards[1:]))
    assert info["model"]["sketch_backbone"] == "resnet10t" and info["model"]["embed_dim"] == 32
    counts = {c: gallery.labels.count(c) for c in set(gallery.labels)}
    assert info["classes"] == dict(sorted(counts.items()))
    assert info["limits"]["max_k"] == 50
    docs = served.get("/openapi.json").json()
    assert "/search" in docs["paths"] and "/items/{item_id}/image" in docs["paths"]
    assert "multipart/form-data" in docs["paths"]["/search"]["post"]["requestBody"]["content"]
    page = served.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "<canvas" in page.text


def test_search_by_strokes_equals_exact_search(served, gallery):
    item_id, label, strokes = gallery.drawings[0]
    r = served.post("/search", json={"strokes": strokes, "k": 7})
    assert r.status_code == 200, r.text
    check_exact(gallery, r.json(), expected_from_strokes(gallery, strokes), 7)
    # Default k, and k larger than the gallery (merging two shards of different sizes).
    body = served.post("/search", json={"strokes": strokes}).json()
    assert body["k"] == 20 and body["count"] == 20
    check_exact(gallery, body, expected_from_strokes(gallery, strokes), 20)
    body = served.post("/search", json={"strokes": strokes, "k": 50}).json()
    assert body["count"] == len(gallery.ids)
    check_exact(gallery, body, expected_from_strokes(gallery, strokes), 50)
    # k as a query parameter; the body's k wins over it.
    assert served.post("/search", params={"k": 3}, json={"strokes": strokes}).json()["count"] == 3
    assert served.post("/search", params={"k": 3}, json={"strokes": strokes, "k": 4}).json()["count"] == 4
    # A bare list of strokes, and the raw format (a third list of timings) are accepted too.
    assert served.post("/search", json=strokes).json()["count"] == 20
    timed = [[s[0], s[1], list(range(len(s[0])))] for s in strokes]
    assert served.post("/search", json={"strokes": timed, "k": 5}).status_code == 200


def test_filtered_search_is_exact_on_the_matching_rows(served, gallery):
    """A filter restricts the scan (per shard in the sharded mode): k results whenever k rows match, each the
    exact top among them; an unknown column or a wrong type is a 400 naming it; no match is a 200 with none."""
    from ray_sbir.index import GalleryItems, index_layout

    modality = GalleryItems.read(gallery.index, index_layout(gallery.index)).source["modality"].to_pylist()
    _, _, strokes = gallery.drawings[0]
    query = expected_from_strokes(gallery, strokes)
    classes = sorted(set(gallery.labels))
    want = {"label": classes[1:3], "modality": "photo"}
    rows = [i for i, (c, m) in enumerate(zip(gallery.labels, modality)) if c in want["label"] and m == "photo"]
    scores = gallery.embeddings[rows] @ query
    order = np.lexsort((rows, -scores))
    for k in (5, 50):
        body = served.post("/search", json={"strokes": strokes, "k": k, "filter": want}).json()
        assert body["count"] == min(k, len(rows)), body
        assert {r["class"] for r in body["results"]} <= set(want["label"])
        np.testing.assert_allclose([r["score"] for r in body["results"]], scores[order][:k], atol=1e-4)
        if np.abs(np.diff(scores[order][:k + 1])).min() > 1e-3:
            assert [r["id"] for r in body["results"]] == [gallery.ids[rows[i]] for i in order[:k]]
    prefix = gallery.ids[rows[0]][:-1]
    body = served.post("/search", json={"strokes": strokes, "filter": {"id": {"prefix": prefix}}}).json()
    assert body["count"] >= 1 and all(r["id"].startswith(prefix) for r in body["results"])
    r = served.post("/search", json={"strokes": strokes, "filter": {"colour": "red"}})
    assert r.status_code == 400 and "unknown field 'colour'" in r.json()["detail"] and "label" in r.json()["detail"]
    r = served.post("/search", json={"strokes": strokes, "filter": {"label": 3}})
    assert r.status_code == 400 and r.json()["detail"].startswith("filter.label: expected a string")
    body = served.post("/search", json={"strokes": strokes, "filter": {"label": "no-such-class"}}).json()
    assert body["count"] == 0 and body["results"] == []
    assert served.get("/info").json()["filters"]["label"] == "string"


def test_search_by_png_upload_equals_exact_search(served, gallery):
    from ray_sbir.data.images import decode_sketch_image

    png = sketch_png(gallery.drawings[1][2])
    query = expected_from_image(gallery, decode_sketch_image(png, gallery.size))
    r = served.post("/search", params={"k": 5}, files={"file": ("sketch.png", png, "image/png")})
    assert r.status_code == 200, r.text
    check_exact(gallery, r.json(), query, 5)
    # k as a form field
    r = served.post("/search", data={"k": "4"}, files={"file": ("sketch.png", png, "image/png")})
    assert r.status_code == 200 and r.json()["count"] == 4
    # raw body
    r = served.post("/search", content=png, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    check_exact(gallery, r.json(), query, 20)
    # JPEG, RGBA with transparency
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    r = served.post("/search", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["count"] == 20


def test_item_images(served, gallery):
    photo = next(i for i in gallery.ids if i.startswith("photo/"))
    sketch = next(i for i in gallery.ids if ".ndjson:" in i)
    for item_id in (photo, sketch):
        url = next(r["image_url"] for r in served.post("/search", json={"strokes": gallery.drawings[0][2],
                                                                        "k": 50}).json()["results"]
                   if r["id"] == item_id)
        r = served.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = Image.open(io.BytesIO(r.content))
        assert img.format == "PNG" and img.size == (128, 128)
        assert np.asarray(img.convert("L")).min() < 128  # something is drawn
    r = served.get("/items/photo/nope.png/image")
    assert r.status_code == 404 and "unknown item id" in r.json()["detail"]


def test_bad_inputs_get_4xx_with_json_detail(served, gallery):
    failures = []
    for name, kwargs, status, word in bad_requests(gallery):
        r = served.request("POST", "/search", **kwargs)
        try:
            detail = r.json()["detail"]
        except Exception:  # noqa: BLE001 - reported below
            detail = None
        if r.status_code != status or not isinstance(detail, str) or word.lower() not in detail.lower():
            failures.append(f"{name}: got {r.status_code} {r.text[:200]!r}, want {status} with {word!r}")
    # Other routes and methods
    for method, url, status in (("GET", "/items/does-not-exist/image", 404), ("GET", "/nope", 404),
                                ("GET", "/search", 405), ("DELETE", "/items/x/image", 405)):
        r = served.request(method, url)
        if r.status_code != status or not isinstance(r.json().get("detail"), str):
            failures.append(f"{method} {url}: got {r.status_code} {r.text[:200]!r}, want {status}")
    assert not failures, "\n".join(failures)
    # The app still answers correctly afterwards.
    assert served.post("/search", json={"strokes": gallery.drawings[0][2], "k": 2}).json()["count"] == 2


def test_every_request_shape_gets_200_or_a_4xx_with_json(served, gallery):
    """Beyond the listed bad inputs: image modes and formats, odd JSON shapes, paths and query strings. None
    may give a 5xx; every 4xx says why in JSON."""
    strokes = gallery.drawings[0][2]
    js = {"content-type": "application/json"}
    cases = [(f"image {name}", dict(content=data, headers={"content-type": "application/octet-stream"}), None)
             for name, data in image_variants(strokes)]
    for name, body in [("null strokes", b'{"strokes": null}'), ("strokes dict", b'{"strokes": {"x": 1}}'),
                       ("deep strokes", b'{"strokes": [[[[[1]]]]]}'), ("stroke dicts", b'{"strokes": [{"x": [1]}]}'),
                       ("string body", b'"abc"'), ("null body", b"null"), ("true body", b"true"),
                       ("inf coordinate", b'{"strokes": [[[1, 1e400], [1, 2]]]}'),
                       ("k null", b'{"strokes": [[[1, 2], [1, 2]]], "k": null}'),
                       ("k float exp", b'{"strokes": [[[1, 2], [1, 2]]], "k": 1e3}'),
                       ("k huge", b'{"strokes": [[[1, 2], [1, 2]]], "k": 100000000000000000000000}'),
                       ("k list", b'{"strokes": [[[1, 2], [1, 2]]], "k": [5]}'),
                       ("duplicate keys", b'{"strokes": [], "strokes": [[[1, 2], [1, 2]]]}'),
                       ("nested 100k deep", b"[" * 100_000 + b"]" * 100_000),
                       ("BOM", b'\xef\xbb\xbf{"strokes": [[[1, 2], [1, 2]]]}'),
                       ("utf-16", '{"strokes": [[[1, 2], [1, 2]]]}'.encode("utf-16")),
                       ("one point", b'{"strokes": [[[5], [5]]]}'),
                       ("timings", b'{"strokes": [[[1, 2], [1, 2], [0, 10]]]}'),
                       ("x y z lists", b'{"strokes": [[[1, 2], [1, 2], [0, 10], [4, 4]]]}'),
                       ("extra fields", b'{"strokes": [[[1, 2], [1, 2]]], "word": "cat", "x": {"y": []}}')]:
        cases.append((f"json {name}", dict(content=body, headers=js), None))
    for name, params in [("k empty", {"k": ""}), ("k repeated", [("k", "2"), ("k", "3")]), ("k nul", {"k": "\x00"}),
                         ("k spaces", {"k": " 4 "}), ("k unicode digits", {"k": "\u0664"}),
                         ("unknown param", {"zzz": "1"})]:
        cases.append((f"query {name}", dict(params=params, json={"strokes": strokes}), None))
    failures = []
    for name, kwargs, _ in cases:
        r = served.request("POST", "/search", **kwargs)
        try:
            payload = r.json()
        except ValueError:
            payload = None
        ok = (r.status_code == 200 and isinstance(payload, dict) and isinstance(payload.get("results"), list)) or (
            400 <= r.status_code < 500 and isinstance(payload, dict) and isinstance(payload.get("detail"), str))
        if not ok:
            failures.append(f"{name}: {r.status_code} {r.text[:160]!r}")
    long_id = "x" * 20_000
    for method, url in [("GET", f"/items/{long_id}/image"), ("GET", "/items//image"), ("GET", "/items/%00/image"),
                        ("GET", "/items/%2F%2E%2E%2Fetc%2Fpasswd/image"), ("GET", "/items/\u00e9t\u00e9/image"),
                        ("GET", "/info?x=1"), ("GET", "/healthz/"), ("POST", "/info"), ("PUT", "/search"),
                        ("GET", "/../search"), ("GET", "/docs"), ("GET", "/openapi.json")]:
        r = served.request(method, url)
        if r.status_code >= 500:
            failures.append(f"{method} {url[:60]}: {r.status_code} {r.text[:160]!r}")
    assert not failures, "\n".join(failures)
    assert served.post("/search", json={"strokes": strokes, "k": 2}).json()["count"] == 2


def test_concurrent_requests_are_batched(served, gallery):
    from ray import serve

    drawings = [d[2] for d in gallery.drawings]

    def one(i):
        return served.post("/search", json={"strokes": drawings[i % len(drawings)], "k": 5})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(48)))
    assert all(r.status_code == 200 and r.json()["count"] == 5 for r in responses)
    # Same query, same answer, whatever batch it was in.
    by_query: dict[int, list] = {}
    for i, r in enumerate(responses):
        by_query.setdefault(i % len(drawings), []).append([x["id"] for x in r.json()["results"]])
    assert all(all(ids == group[0] for ids in group) for group in by_query.values())
    deployment = "SketchEncoder" if served.search_mode == "sharded" else "SearchIngress"
    stats = serve.get_deployment_handle(deployment, app_name=APP_NAME).stats.remote().result()
    assert stats["max_batch"] > 1, stats
    assert stats["items"] >= 48 and stats["batches"] < stats["items"], stats


def test_serve_config_file_and_entry_points(gallery, tmp_path):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from ray_sbir.serving import ServeConfig, build, demo_defaults

    raw = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(raw)
    app_cfg = schema.applications[0]
    assert app_cfg.import_path == "ray_sbir.serving:build"  # installed on every node, no working_dir needed
    args = {**app_cfg.args, "checkpoint": gallery.checkpoint, "index": gallery.index}
    cfg = ServeConfig.from_dict(args)
    assert cfg.num_shards == 2 and cfg.encoder.autoscaling["max_replicas"] >= 1
    assert build(args) is not None  # builds the bound application (nothing is started)
    # `serve run ray_sbir.serving:build key=value` passes strings
    assert build({**args, "num_shards": "3", "use_gpu": "false", "search_mode": "sharded"}) is not None
    from serve.app import build as serve_app_build

    assert serve_app_build({**args, "num_shards": "2"}) is not None
    with pytest.raises(ValueError, match="unknown config key 'serve.shards'; valid keys of serve: checkpoint, index"):
        ServeConfig.from_dict({**args, "shards": 2})
    with pytest.raises(ValueError, match="unknown config key 'serve.encoder.replicas'; valid keys of serve.encoder: num_replicas"):
        ServeConfig.from_dict({**args, "encoder": {"replicas": 2}})
    with pytest.raises(FileNotFoundError, match="ray-sbir demo"):
        demo_defaults(str(tmp_path / "no_demo"))
    # A demo run's summary gives the defaults.
    demo = tmp_path / "demo"
    (demo / "eval" / "trained" / "index" / "gallery").mkdir(parents=True)
    (demo / "demo_summary.json").write_text(json.dumps({"best_checkpoint": gallery.checkpoint}))
    cfg = ServeConfig.from_dict({"demo_out": str(demo)})
    assert cfg.checkpoint == gallery.checkpoint and cfg.index.endswith("gallery")


def test_auto_search_mode_colocates_galleries_up_to_the_byte_limit(gallery):
    from ray_sbir.serving import ServeConfig, embedding_bytes, resolve_search_mode

    size = len(gallery.ids) * 32 * 4  # fp32 on CPU
    assert embedding_bytes(len(gallery.ids), 32, None, on_gpu=False) == size
    assert embedding_bytes(len(gallery.ids), 32, None, on_gpu=True) == size // 2  # fp16 on a GPU
    assert embedding_bytes(len(gallery.ids), 32, "float16", on_gpu=False) == size // 2

    def mode(**kw):
        return resolve_search_mode(ServeConfig(checkpoint=gallery.checkpoint, index=gallery.index, **kw))

    assert mode() == "colocated"  # the default limit is 1 GiB
    assert mode(colocate_max_bytes=size) == "colocated"
    assert mode(colocate_max_bytes=size - 1) == "sharded"
    assert mode(colocate_max_bytes=size // 2, shard_dtype="float16") == "colocated"
    assert mode(colocate_max_bytes=size // 2, use_gpu=True) == "colocated"  # fp16 on the colocated GPU
    assert mode(colocate_max_bytes=size // 2, use_gpu=True, colocated={"num_gpus": 0}) == "sharded"
    assert mode(search_mode="sharded") == "sharded" and mode(search_mode="colocated", colocate_max_bytes=0) == \
        "colocated"
    with pytest.raises(ValueError, match="search_mode must be one of"):
        mode(search_mode="fast")
    with pytest.raises(ValueError, match="unknown config key 'serve.colocated.replicas'"):
        ServeConfig.from_dict({"checkpoint": gallery.checkpoint, "index": gallery.index,
                               "colocated": {"replicas": 2}})


def test_cli_serve_without_demo_says_what_to_run(tmp_path, capsys):
    from ray_sbir.cli import main

    assert main(["serve", "--demo-out", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "ray-sbir demo" in err and "--checkpoint" in err


def test_cli_serve_refuses_what_a_replica_could_not_load_before_starting_anything(gallery, tmp_path, capsys):
    """One sentence naming the file and the problem, exit 2, and no Ray cluster started or joined."""
    import ray

    from ray_sbir.checkpoint import CheckpointMeta, read_meta, write_checkpoint
    from ray_sbir.cli import main

    before = ray.is_initialized()  # the test session's shared cluster may be up; serve must not start its own

    def refused(*argv) -> str:
        assert main(["serve", *argv]) == 2
        assert ray.is_initialized() == before
        return capsys.readouterr().err

    ok = ["--checkpoint", gallery.checkpoint, "--index", gallery.index]
    err = refused("--checkpoint", gallery.checkpoint, "--index", str(tmp_path))
    assert f"index {tmp_path}" in err and "cannot be served" in err
    err = refused(*ok, "--rerank", gallery.checkpoint)
    assert f"rerank checkpoint {gallery.checkpoint}" in err and "not a rerank one" in err
    err = refused(*ok, "--api-key-env", "RAY_SBIR_TEST_UNSET_KEY")
    assert "RAY_SBIR_TEST_UNSET_KEY is not set" in err
    err = refused(*ok, "--api-key-file", "/nope/key")
    assert "the API key file /nope/key does not exist" in err
    err = refused("--index", "/nope/index")
    assert err.strip() == "ray-sbir: error: --index /nope/index: no such index folder"
    broken = tmp_path / "broken_ckpt"
    write_checkpoint(str(broken), {"model": {}}, read_meta(gallery.checkpoint))  # weights missing
    err = refused("--checkpoint", str(broken), "--index", gallery.index)
    assert f"checkpoint {broken} cannot be loaded" in err
    other = tmp_path / "other_dim"
    meta = read_meta(gallery.checkpoint)
    from ray_sbir.config import load_config
    from ray_sbir.models import create_model

    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=16"])
    write_checkpoint(str(other), {"model": create_model(cfg.model).state_dict()},
                     CheckpointMeta(meta.epoch, cfg, meta.classes, {}))
    err = refused("--checkpoint", str(other), "--index", gallery.index)
    assert "32-d embeddings" in err and "16-d ones" in err


def test_ingress_retries_calls_whose_replica_died():
    """Downstream calls are retried while a replica is gone, and give a 503 (not a hang) when it never returns."""
    import asyncio
    from types import SimpleNamespace

    from fastapi import HTTPException
    from ray.exceptions import ActorDiedError

    from ray_sbir.serving.deployments import SearchIngress, _retryable_errors

    cls = SearchIngress.func_or_class
    me = SimpleNamespace(cfg=SimpleNamespace(retry_timeout_s=2.0), retryable=_retryable_errors(), retries=0)
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ActorDiedError()
        return "ok"

    assert asyncio.run(cls._call(me, "the encoder", flaky)) == "ok" and me.retries == 2

    async def dead():
        raise ActorDiedError()

    with pytest.raises(HTTPException) as e:
        asyncio.run(cls._call(me, "search shard 0", dead))
    assert e.value.status_code == 503 and "search shard 0" in e.value.detail

    async def bug():
        raise ZeroDivisionError()

    with pytest.raises(ZeroDivisionError):  # not retried
        asyncio.run(cls._call(me, "x", bug))


def _scrape(port: int, want=lambda series: True) -> dict[str, float]:
    """``series -> value`` of Ray's Prometheus export on this node (the ``ray_sbir_`` ones), polled until
    ``want(series)`` holds (Ray reports application metrics every few seconds)."""
    deadline, series = time.time() + 90, {}
    while time.time() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("ray_sbir_")}
        if want(series):
            return series
        time.sleep(2)
    raise AssertionError(f"metrics never showed what the test waits for; ray_sbir_ series seen: {sorted(series)[:20]}")


def _total(series: dict[str, float], name: str, **tags: str) -> float:
    return sum(v for k, v in series.items()
               if k.split("{")[0] == name and all(f'{t}="{v2}"' in k for t, v2 in tags.items()))


def test_endpoint_exports_prometheus_metrics(served, gallery):
    """Requests by endpoint and status, per-stage latency histograms, results returned and the index's rows,
    scraped from the node's metrics port as Prometheus would (counts compared with a scrape taken before)."""
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    before = _scrape(port)
    strokes = gallery.drawings[0][2]
    for k in (3, 5):
        r = served.post("/search", json={"strokes": strokes, "k": k})
        assert r.status_code == 200 and r.json()["count"] == k
    assert served.post("/search", json={"strokes": strokes, "k": 0}).status_code == 422
    assert served.get("/info").status_code == 200

    def grown(s, name, by, **tags):
        return _total(s, name, **tags) - _total(before, name, **tags) >= by

    series = _scrape(port, lambda s: (grown(s, "ray_sbir_requests_total", 1, endpoint="search", status="422")
                                      and grown(s, "ray_sbir_requests_total", 2, endpoint="search", status="200")
                                      and grown(s, "ray_sbir_requests_total", 1, endpoint="info", status="200")
                                      and grown(s, "ray_sbir_results_returned_count", 2)
                                      # the index-rows gauge (set with every request) may be exported
                                      # after the counters
                                      and any(k.startswith("ray_sbir_index_rows{") for k in s)))
    for stage in ("validate", "retrieve", "results", "total"):
        assert grown(series, "ray_sbir_stage_seconds_count", 2, stage=stage), stage
        assert grown(series, "ray_sbir_stage_seconds_bucket", 2, stage=stage, le="+Inf"), stage
    # 3 and 5 results: both in the (1, 5] bucket (Ray exports a histogram's _sum from bucket midpoints). Counted as
    # the growth of le=5 minus that of le=1: an earlier test's answer with 0 results may be exported only now.
    def bucket(s, le):
        return _total(s, "ray_sbir_results_returned_bucket", le=le) - \
            _total(before, "ray_sbir_results_returned_bucket", le=le)

    assert bucket(series, "5.0") - bucket(series, "1.0") >= 2
    rows = [v for k, v in series.items() if k.startswith("ray_sbir_index_rows{")]
    assert rows and set(rows) == {float(len(gallery.ids))}
