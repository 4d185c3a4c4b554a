"""What the CLI checks before any Ray cluster starts or is joined, each failure one sentence naming the flag: the
numbers and addresses of flags, where outputs go, whether a cluster listens at ``--address``, and whether the
cluster (the local one about to start, or the one just joined) has the CPUs and GPUs the command asks for.

Every check raises ``ValueError`` (the CLI prints it after ``ray-sbir: error:`` and exits 2)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

__all__ = ["Request", "check_address", "check_cluster_resources", "check_host", "check_local_request",
           "check_remote_inputs",
           "check_port", "check_positive", "check_writable_folder", "gpu_available"]

# How long --address may take to answer a TCP connect before we say nothing listens there.
ADDRESS_TIMEOUT_S = 5.0


def check_positive(flag: str, value: float | None, *, minimum: float = 1, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < minimum:
        raise ValueError(f"{flag} must be >= {minimum:g}, got {value}")


def check_port(flag: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"{flag} {port}: a TCP port is 1-65535")


def check_host(flag: str, host: str) -> None:
    """``host`` must be an address of this machine to bind (or a name that resolves)."""
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"{flag} {host}: not an address or a host name that resolves ({e})") from None


# flags naming inputs that must exist (the value "untrained" of --checkpoint is no location)
INPUT_FLAGS = ("config", "checkpoint", "index", "prefix", "append_to", "rerank")


def check_remote_inputs(args) -> None:
    """Every input flag that is a storage URL (s3://, gs://, az://) is asked of its store first, within seconds:
    one sentence for an unreachable endpoint, missing or refused credentials, a missing bucket, a missing
    package, or no such folder (:func:`ray_sbir.fs.probe`). Local paths are checked where they are read."""
    from ray_sbir import fs

    for name in INPUT_FLAGS:
        uri = getattr(args, name, None)
        if isinstance(uri, str) and fs.is_remote(uri) and not fs.probe(uri, _flag(name)):
            raise ValueError(f"{_flag(name)} {uri}: nothing there")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_writable_folder(flag: str, uri: str) -> None:
    """A local output folder must be creatable and writable (its nearest existing parent a writable folder); a
    remote one's store must answer and its bucket exist (:func:`ray_sbir.fs.probe`)."""
    from ray_sbir import fs

    if fs.is_remote(uri):
        fs.probe(uri, flag)
        return
    path = os.path.abspath(os.path.expanduser(uri))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(f"{flag} {uri}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "cannot be written" if probe == path else f"cannot be created ({probe} is not writable)"
        raise ValueError(f"{flag} {uri}: {what}")


def check_address(address: str | None) -> None:
    """A cluster address that names a host and port must answer a TCP connect within a few seconds (Ray itself
    retries for over a minute, printing its GCS warnings). ``auto``, ``local`` and ``ray://`` client addresses
    are left to Ray."""
    if not address or address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address {address}: expected HOST:PORT of a Ray cluster's head (e.g. 10.0.0.5:6379), "
                         "'auto', or RAY_ADDRESS")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as e:
        cause = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e)).lower()
        raise ValueError(f"--address {address}: no Ray cluster answers there ({cause} after at most "
                         f"{ADDRESS_TIMEOUT_S:g} s)") from None


@dataclass(frozen=True)
class Request:
    """What a command will ask the cluster for: ``cpus`` it reserves at once (training workers, actors),
    ``spare_cpus`` it needs free beside them (Ray Data's reading and decoding), ``gpus``, and who asks."""

    what: str
    cpus: float = 0.0
    gpus: float = 0.0
    spare_cpus: float = 0.0


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def check_local_request(request: Request, num_cpus: int | None) -> None:
    """The local cluster about to start (``--num-cpus``, else every core) must hold ``request``."""
    if request.gpus and not gpu_available():
        raise ValueError(f"{request.what} asks for {request.gpus:g} GPU(s), and this machine has none that torch "
                         "can use: drop it, or give --address of a cluster with GPUs")
    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    if request.cpus + request.spare_cpus > cpus:
        raise ValueError(f"{request.what} needs {request.cpus + request.spare_cpus:g} CPUs "
                         f"({_spelled(request)}) and the local cluster has {cpus} (--num-cpus)")


def check_cluster_resources(request: Request, resources: dict, address: str) -> None:
    """The joined cluster (``ray.cluster_resources()`` right after connecting) must hold ``request``, or the work
    would wait forever for resources no node has. A cluster that adds nodes on demand may have none yet:
    ``RAY_SBIR_SKIP_RESOURCE_CHECK=1`` then submits anyway."""
    if os.environ.get("RAY_SBIR_SKIP_RESOURCE_CHECK") == "1":
        return
    have_cpus, have_gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    short = []
    if request.gpus > have_gpus:
        short.append(f"{request.gpus:g} GPU(s), it has {have_gpus:g}")
    if request.cpus + request.spare_cpus > have_cpus:
        short.append(f"{request.cpus + request.spare_cpus:g} CPUs ({_spelled(request)}), it has {have_cpus:g}")
    if short:
        raise ValueError(f"{request.what} needs {'; '.join(short)} on the cluster at {address}: lower the request, "
                         "add nodes, or set RAY_SBIR_SKIP_RESOURCE_CHECK=1 where nodes are added on demand")


def _spelled(request: Request) -> str:
    parts = [f"{request.cpus:g} reserved"]
    if request.spare_cpus:
        parts.append(f"{request.spare_cpus:g} left to Ray Data")
    return ", ".join(parts)
