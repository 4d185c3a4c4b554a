"""A free TCP port on loopback, and loopback object stores (S3 by moto, Google Cloud Storage by an emulator; both
dev dependencies, run as servers), for the servers the tests and the benches start (Serve's HTTP, the stores,
``ray start``'s ports)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

__all__ = ["GCS_TEST_ENV", "free_port", "port_is_free", "start_gcs_emulator", "start_moto"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``port`` (a new listener could bind it)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def start_moto(key_id: str = "bench-key-id", secret: str = "bench-secret-key", *,
               check_credentials: bool = False) -> tuple[subprocess.Popen, str]:
    """A loopback S3 server (``moto_server``, a dev dependency), configured the standard AWS way in this
    process's environment (``AWS_ENDPOINT_URL``, keys, region): start Ray afterwards so its workers inherit it.
    ``check_credentials``: the server refuses every request whose access key it does not know (moto's IAM
    authentication from the first request on), as AWS refuses wrong keys. Returns the process (terminate it at
    the end) and the endpoint."""
    import urllib.error
    import urllib.request

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_credentials else None
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:  # it answers (403 where it checks credentials): started
            break
        except Exception:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    else:
        proc.terminate()
        raise RuntimeError("moto_server did not start")
    if proc.poll() is not None:
        raise RuntimeError(f"moto_server exited with {proc.returncode}")
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key_id,
                       "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"})
    return proc, endpoint


GCS_TEST_ENV = {
    # gcsfs's default filesystem first asks the storage-control gRPC API for the bucket type (hierarchical
    # namespace buckets), which an emulator does not serve: 60 s timeouts per bucket. The core one speaks the
    # JSON API alone. Read when gcsfs is imported.
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    # fsspec's standard per-protocol default (FSSPEC_<PROTOCOL>_<KWARG>): no credentials for an emulator.
    "FSSPEC_GS_TOKEN": "anon",
}


def start_gcs_emulator(bucket: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """A loopback Google Cloud Storage server (``gcp-storage-emulator``, a dev dependency, in memory) with
    ``bucket`` created. Returns the process (terminate it at the end) and the environment that points gcsfs
    at it (``STORAGE_EMULATOR_HOST``, the standard variable of Google's clients, plus :data:`GCS_TEST_ENV`)."""
    import shutil
    import sys
    import urllib.request

    exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    exe = exe if os.path.exists(exe) else shutil.which("gcp-storage-emulator")
    if exe is None:
        raise RuntimeError("gcp-storage-emulator is not installed (pip install -e '.[dev]')")
    port = free_port()
    proc = subprocess.Popen([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
                             "--default-bucket", bucket], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/storage/v1/b/{bucket}", timeout=1)
            break
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError(f"gcp-storage-emulator exited with {proc.returncode}") from None
            time.sleep(0.1)
    else:
        proc.terminate()
        raise RuntimeError("gcp-storage-emulator did not start")
    return proc, {"STORAGE_EMULATOR_HOST": endpoint, **GCS_TEST_ENV}
