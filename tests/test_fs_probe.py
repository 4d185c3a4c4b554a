"""A storage URL is asked of its store before anything starts (``ray_sbir.fs.probe``): whether it exists, or one
sentence naming the flag, the URL and the cause, within seconds -- against the loopback S3 (moto) and GCS
(gcp-storage-emulator) servers: a stopped server, no credentials, refused credentials, a missing bucket; and a scheme whose package
is missing."""

from __future__ import annotations

import os
import time

import pytest

from ray_sbir import fs
from ray_sbir.testing.stores import free_port, start_gcs_emulator, start_moto


@pytest.fixture(scope="module")
def s3(request):
    import s3fs

    saved = dict(os.environ)
    proc, endpoint = start_moto()
    store = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    store.mkdir("probe-bucket")
    store.pipe("probe-bucket/data/x.txt", b"1")
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.environ.clear()
        os.environ.update(saved)


def probe_error(uri: str, flag: str = "--prefix") -> str:
    started = time.time()
    with pytest.raises(fs.StorageError) as e:
        fs.probe(uri, flag)
    assert time.time() - started < 10
    return str(e.value)


def test_s3_exists_missing_key_and_missing_bucket(s3):
    assert fs.probe("s3://probe-bucket/data", "--prefix") and fs.probe("s3://probe-bucket", "--out")
    assert not fs.probe("s3://probe-bucket/nope", "--out")
    assert probe_error("s3://no-such-bucket/x", "--index") == \
        "--index s3://no-such-bucket/x: no bucket 'no-such-bucket' there"


def test_s3_stopped_server(s3, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    assert probe_error("s3://probe-bucket/data") == \
        f"--prefix s3://probe-bucket/data: cannot reach {dead} (Connection refused)"


def test_s3_without_credentials(s3, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert probe_error("s3://probe-bucket/data").startswith("--prefix s3://probe-bucket/data: no credentials: set "
                                                            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_s3_refused_credentials():
    """A server that checks access keys (as AWS does) refuses keys it does not know: said as refused."""
    saved = dict(os.environ)  # start_moto sets AWS_* here
    proc, _ = start_moto("unknown-key-id", "wrong-secret", check_credentials=True)
    try:
        assert probe_error("s3://probe-bucket/data", "--index") == \
            "--index s3://probe-bucket/data: the credentials were refused (Forbidden)"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.environ.clear()
        os.environ.update(saved)


def test_gcs_exists_missing_bucket_and_stopped_server(monkeypatch):
    pytest.importorskip("gcsfs")
    import fsspec
    import gcsfs.core

    proc, env = start_gcs_emulator("probe-gcs")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(fsspec.config.conf, "gs", {"token": "anon"})
    fsspec.register_implementation("gs", gcsfs.core.GCSFileSystem, clobber=True)
    gcsfs.core.GCSFileSystem.clear_instance_cache()
    try:
        fs.write_text("gs://probe-gcs/data/x.txt", "1")
        assert fs.probe("gs://probe-gcs/data", "--prefix") and not fs.probe("gs://probe-gcs/nope", "--out")
        assert probe_error("gs://no-such/x") == "--prefix gs://no-such/x: no bucket 'no-such' there"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        gcsfs.core.GCSFileSystem.clear_instance_cache()
    assert probe_error("gs://probe-gcs/data") == (f"--prefix gs://probe-gcs/data: cannot reach "
                                                  f"{env['STORAGE_EMULATOR_HOST']} (Connection refused)")


def test_a_scheme_whose_package_is_missing():
    try:
        import adlfs  # noqa: F401
        pytest.skip("adlfs is installed")
    except ImportError:
        pass
    assert probe_error("az://container/index", "--out").startswith(
        "--out az://container/index: az:// needs adlfs: bash scripts/install.sh --extras azure")


def test_local_paths_are_plain_existence(tmp_path):
    assert fs.probe(str(tmp_path), "--out") and not fs.probe(str(tmp_path / "nope"), "--out")
