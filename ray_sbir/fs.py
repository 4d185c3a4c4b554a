"""URI-addressed file access: local paths, ``file://`` and ``s3://`` through one API.

Everything in the library that touches a file goes through here, so object storage needs no separate code
path: fsspec resolves the scheme (s3fs for ``s3://``), and :func:`pyarrow_filesystem` hands the same
filesystem to pyarrow / Ray Data / Ray Train. S3 is configured the standard way (AWS environment variables
and config files); ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points it at an S3-compatible store.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from contextlib import contextmanager
from typing import IO, Iterator

import fsspec
import pyarrow.fs as pafs


def is_remote(uri: str) -> bool:
    """True for URIs with a non-local scheme (``s3://...``)."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    return scheme not in ("", "file", "local")


def _s3_options() -> dict:
    # botocore reads AWS_ENDPOINT_URL itself in recent versions; passing it explicitly also covers older
    # ones and AWS_ENDPOINT_URL_S3 (the service-specific variable takes precedence, as in the AWS CLI).
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(fsspec filesystem, path within it)`` for a URI or local path."""
    if uri.startswith("s3://") or uri.startswith("s3a://"):
        import s3fs

        fs = s3fs.S3FileSystem(**_s3_options())
        return fs, uri.split("://", 1)[1]
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def pyarrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(pyarrow filesystem, path)``: what Ray Data readers/writers and ``RunConfig`` take."""
    fs, path = filesystem(uri)
    if not is_remote(uri):
        return pafs.LocalFileSystem(), os.path.abspath(path)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def join(uri: str, *parts: str) -> str:
    """Join path components onto a URI (POSIX separators for remote URIs)."""
    if is_remote(uri):
        return posixpath.join(uri, *parts)
    return os.path.join(uri, *parts)


def to_uri(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Turn a filesystem-relative path back into a URI of the same scheme as ``like``."""
    if is_remote(like):
        return f"{like.split('://', 1)[0]}://{path}"
    return path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def isdir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.isdir(path)


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_remote(uri):  # object stores have no directories to create
        fs.makedirs(path, exist_ok=True)


def open_uri(uri: str, mode: str = "rb", **kwargs) -> IO:
    """Open a URI like ``open()``; parent folders are created for local writes."""
    fs, path = filesystem(uri)
    if any(m in mode for m in "wa") and not is_remote(uri):
        fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    return fs.open(path, mode, **kwargs)


def open_sequential(uri: str, *, block_size: int | None = None, compression: str | None = None,
                    buffer_size: int = 1 << 20) -> IO:
    """Open a file for reading front to back, line by line: what ndjson readers need.

    fsspec's remote files answer every ``readline()`` by copying their whole read-ahead block (s3fs: 50 MiB),
    about 20 lines/s from S3; a ``BufferedReader`` in front serves lines from 1 MiB buffers instead (about
    200,000 lines/s). ``block_size`` sets the remote read size: a reader of one byte range passes the range's
    length, so it costs one ranged GET."""
    fs, path = filesystem(uri)
    if not is_remote(uri):
        return fs.open(path, "rb", compression=compression)
    kwargs = {"block_size": block_size} if block_size else {}
    raw = io.BufferedReader(fs.open(path, "rb", **kwargs), buffer_size=buffer_size)
    if compression:
        from fsspec.compression import compr

        return compr[compression](raw, mode="rb")
    return raw


def read_bytes(uri: str) -> bytes:
    with open_uri(uri, "rb") as f:
        return f.read()


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file atomically where the store allows: a reader never sees a half-written file.

    Local files are written to a temporary sibling and renamed; object-store PUTs are atomic already.
    """
    fs, path = filesystem(uri)
    if is_remote(uri):
        with fs.open(path, "wb") as f:
            f.write(data)
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:  # noqa: PTH123 - local branch of the URI layer itself
        f.write(data)
    os.replace(tmp, path)


def copy(src: str, dst: str) -> None:
    """Copy one file: server-side within one object store (no bytes through this process), else read and write."""
    src_fs, src_path = filesystem(src)
    dst_fs, dst_path = filesystem(dst)
    if is_remote(src) and type(src_fs) is type(dst_fs):
        src_fs.copy(src_path, dst_path)
    else:
        write_bytes(dst, read_bytes(src))


def write_text(uri: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding))


def list_files(uri: str, suffixes: tuple[str, ...] | None = None, recursive: bool = True) -> list[str]:
    """List files under a folder URI (sorted, as URIs), optionally filtered by lower-case suffix."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"no such folder: {uri}")
    paths = fs.find(path) if recursive else [p for p in fs.ls(path, detail=False) if fs.isfile(p)]
    out = []
    for p in sorted(paths):
        name = posixpath.basename(p)
        if name.startswith("."):
            continue
        if suffixes and not name.lower().endswith(suffixes):
            continue
        out.append(to_uri(fs, p, uri))
    return out


def list_dirs(uri: str) -> list[str]:
    """Immediate sub-folders of a folder URI (sorted, as URIs)."""
    fs, path = filesystem(uri)
    out = [to_uri(fs, p, uri) for p in fs.ls(path, detail=False) if fs.isdir(p)]
    return sorted(o for o in out if not posixpath.basename(o.rstrip("/")).startswith("."))


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """Yield a local path holding the file at ``uri`` (the path itself when already local).

    For libraries that insist on a real filename (gensim's binary loaders, for instance)."""
    if not is_remote(uri):
        yield filesystem(uri)[1]
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, posixpath.basename(uri))
        fs, path = filesystem(uri)
        fs.get(path, local)
        yield local


# ------------------------------------------------------------------------------------------ checking a URL first

PROBE_TIMEOUT_S = 8.0  # the whole check, so that a command says what is wrong within 10 s
# fsspec protocol -> (package, extra of pyproject.toml)
_BACKENDS = {"gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"),
             "abfss": ("adlfs", "azure"), "adl": ("adlfs", "azure"), "s3": ("s3fs", None), "s3a": ("s3fs", None)}


class StorageError(ValueError):
    """A storage URL that cannot be used, said in one sentence: what, where, and what would fix it."""


def probe(uri: str, flag: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``uri`` exists, asked of its store within ``timeout_s``; raises :class:`StorageError` naming
    ``flag``, the URL and the cause when the store cannot answer: its fsspec package is missing (and the extra
    that installs it), its endpoint is unreachable or silent, credentials are missing or refused, or the bucket
    does not exist. Local paths: ``os.path.exists``."""
    if not is_remote(uri):
        return os.path.exists(uri)
    import threading

    scheme = uri.split("://", 1)[0]
    package, extra = _BACKENDS.get(scheme, (None, None))
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as e:
        fix = f"bash scripts/install.sh --extras {extra}" if extra else (f"pip install {package}" if package else "")
        raise StorageError(f"{flag} {uri}: {scheme}:// needs {package or 'an fsspec backend'}"
                           f"{': ' + fix if fix else ''} ({e})") from None
    outcome: dict = {}

    def ask() -> None:
        try:
            _connect(scheme)  # refused or unresolvable at once, before the client library's retries
            outcome["exists"] = _exists_or_raise(uri)
        except BaseException as e:  # noqa: BLE001 - classified below, in the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=ask, name=f"probe {uri}", daemon=True)  # a silent store keeps it: daemon
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise StorageError(f"{flag} {uri}: no answer from {_endpoint(scheme)} within {timeout_s:g} s "
                           "(offline, or a firewall?)")
    if "error" in outcome:
        raise StorageError(f"{flag} {uri}: {_cause(outcome['error'], scheme)}") from None
    return outcome["exists"]


def _exists_or_raise(uri: str) -> bool:
    """``exists`` that lets the store's errors through (fsspec's ``exists`` turns many of them into False), and
    tells a missing bucket from a missing key."""
    scheme, rest = uri.split("://", 1)
    if scheme in ("s3", "s3a"):
        import s3fs

        # one attempt, short timeouts: a stopped endpoint answers "refused" at once instead of after retries
        store = s3fs.S3FileSystem(skip_instance_cache=True, **_s3_options(),
                                  config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 5,
                                                 "read_timeout": 5})
    else:
        store, _ = filesystem(uri)
        rest = store._strip_protocol(uri)
    bucket, _, key = rest.partition("/")
    try:
        store.info(bucket)
    except FileNotFoundError:
        raise FileNotFoundError(f"no bucket {bucket!r} there") from None
    if not key.strip("/"):
        return True
    try:
        store.info(rest)
        return True
    except FileNotFoundError:
        return False


def _connect(scheme: str) -> None:
    """A TCP connect to the store's endpoint (where we know it)."""
    import socket
    from urllib.parse import urlparse

    endpoint = _endpoint(scheme)
    if endpoint == "AWS S3":
        endpoint = "https://s3.amazonaws.com"
    elif endpoint == "storage.googleapis.com":
        endpoint = "https://storage.googleapis.com"
    url = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    if not url.hostname:
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S / 2).close()
    except OSError as e:
        raise ConnectionError(e.strerror or str(e) or type(e).__name__) from None


def _endpoint(scheme: str) -> str:
    if scheme in ("s3", "s3a"):
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    if scheme in ("gs", "gcs"):
        return os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
    return f"the {scheme}:// store"


def _cause(error: BaseException, scheme: str) -> str:
    """One clause for an error of a store's client library (botocore, aiohttp, google-auth, ...), matched by type
    name so that no client library is imported here."""
    names = {c.__name__ for c in type(error).__mro__}
    text = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        return ("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run where an "
                "instance role provides them")
    if "DefaultCredentialsError" in names or "RefreshError" in names:
        return ("no Google credentials: gcloud auth application-default login, a service account "
                "(GOOGLE_APPLICATION_CREDENTIALS), or FSSPEC_GS_TOKEN=anon for a public bucket")
    if isinstance(error, PermissionError):
        return f"the credentials were refused ({text})"
    if isinstance(error, FileNotFoundError):
        return text
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ServerTimeoutError",
                "ConnectionRefusedError", "ConnectionError", "TimeoutError", "ClientOSError"}:
        return f"cannot reach {_endpoint(scheme)} ({text})"
    return f"{type(error).__name__}: {text}"
