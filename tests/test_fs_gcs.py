"""``gs://`` through the same URI layer as ``s3://`` (:mod:`ray_sbir.fs`: fsspec's registry, gcsfs from the
``[gcs]`` extra), against a real Google Cloud Storage emulator on loopback (``gcp-storage-emulator``): files
written, listed and read whole, ndjson read line by line over ranged reads as the QuickDraw indexer reads it,
and a QuickDraw index built by ``ray-sbir index-quickdraw`` from ``gs://`` ndjson into ``gs://``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ray_sbir import fs
from tests.fixtures import QUICKDRAW_DIR
from ray_sbir.testing.stores import start_gcs_emulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("gcsfs")
BUCKET = "sbir-gcs"
CLASSES = ("cat", "airplane")


@pytest.fixture(scope="module")
def gcs():
    """The emulator, and gcsfs pointed at it in this process (fsspec's config; gcsfs's core filesystem, see
    tests/ports.py) and, through ``env``, in the processes a test starts."""
    import fsspec
    import gcsfs.core

    proc, env = start_gcs_emulator(BUCKET)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fsspec.config.conf.setdefault("gs", {})["token"] = "anon"
    fsspec.register_implementation("gs", gcsfs.core.GCSFileSystem, clobber=True)
    fsspec.register_implementation("gcs", gcsfs.core.GCSFileSystem, clobber=True)
    gcsfs.core.GCSFileSystem.clear_instance_cache()
    try:
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        fsspec.config.conf.get("gs", {}).pop("token", None)
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_files_on_gcs(gcs):
    base = f"gs://{BUCKET}/files"
    fs.write_text(fs.join(base, "a", "x.json"), '{"k": 1}')
    fs.write_bytes(fs.join(base, "a", "b", "y.bin"), b"\0" * 1000)
    assert fs.read_text(f"{base}/a/x.json") == '{"k": 1}'
    assert fs.exists(f"{base}/a/b/y.bin") and fs.isdir(f"{base}/a") and not fs.exists(f"{base}/nope")
    assert fs.list_files(base) == [f"{base}/a/b/y.bin", f"{base}/a/x.json"]
    assert fs.list_files(base, (".json",)) == [f"{base}/a/x.json"]
    assert fs.list_dirs(f"{base}/a") == [f"{base}/a/b"]
    fs.remove(f"{base}/a/x.json")
    assert not fs.exists(f"{base}/a/x.json")


def test_ndjson_chunks_read_from_gcs(gcs):
    """The indexer's byte-range chunks cover every line of a real QuickDraw file once, read from gs://."""
    from ray_sbir.distributed.index_quickdraw import plan_chunks, read_chunk_lines

    body = open(os.path.join(QUICKDRAW_DIR, "cat.ndjson"), "rb").read() * 20
    fs.write_bytes(f"gs://{BUCKET}/big/cat.ndjson", body)
    chunks = plan_chunks(f"gs://{BUCKET}/big", chunk_bytes=len(body) // 3)
    assert len(chunks) >= 3
    assert b"".join(line for c in chunks for _, line in read_chunk_lines(c)) == body


@pytest.mark.slow
def test_index_quickdraw_from_gcs(gcs, tmp_path):
    """`ray-sbir index-quickdraw --prefix gs://...` as a user runs it (its own local Ray cluster, the emulator's
    address in the environment, as credentials would be on a cluster), read back from gs:// by the library."""
    import torch

    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.index import read_index
    from ray_sbir.models import create_model

    lines = 0
    for name in CLASSES:
        body = open(os.path.join(QUICKDRAW_DIR, f"{name}.ndjson"), "rb").read()
        fs.write_bytes(f"gs://{BUCKET}/quickdraw/simplified/{name}.ndjson", body)
        lines += body.count(b"\n")
    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=16"])
    torch.manual_seed(0)
    ckpt = str(tmp_path / "ckpt")
    write_checkpoint(ckpt, {"model": create_model(cfg.model).state_dict()}, CheckpointMeta(0, cfg, list(CLASSES), {}))
    out = f"gs://{BUCKET}/index/quickdraw"
    env = {**os.environ, **gcs, "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-m", "ray_sbir.cli", "index-quickdraw", "--prefix",
                        f"gs://{BUCKET}/quickdraw/simplified", "--checkpoint", ckpt, "--out", out,
                        "--num-cpus", "2"], capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    index = read_index(out)
    assert len(index) == lines and index.embeddings.shape == (lines, 16)
    assert set(index.labels) == set(CLASSES)
    assert all(uri.startswith(f"gs://{BUCKET}/quickdraw/simplified/") for uri in index.uris)
