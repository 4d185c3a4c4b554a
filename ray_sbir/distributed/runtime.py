"""Starting or joining a Ray cluster, ending the clusters we start, and keeping Ray's console chatter out of ours.

The one place a Ray cluster is started or joined: the ``ray-sbir`` subcommands, ``jobs/``, the demo,
``ray-sbir serve`` and the benches all call :func:`init_ray` (and :func:`stop_ray` for a private cluster), so a job
that only indexes or embeds does not import Ray Train, and every cluster we start gets the same settings: the
dashboard only when asked for (loopback by default), Ray Data's progress bars only on a terminal, every process
tagged so that the cluster ends whole. Device choice is not Ray's business: it is
:func:`ray_sbir.models.base.device_for`, shared with Serve's replicas.
"""

from __future__ import annotations

import logging
import os
import sys

import ray

from ray_sbir.logs import FORMAT_ENV, ray_runtime_env

__all__ = ["LOOPBACK_HOSTS", "PRIVATE_CLUSTER_ENV", "cluster_resources", "end_private_cluster", "init_ray",
           "is_loopback", "keep_cluster_on_loopback", "mark_private_cluster", "parse_dashboard",
           "private_cluster_pids", "progress_bars_wanted", "ray_train_logging", "set_data_progress", "stop_ray",
           "worker_env"]

log = logging.getLogger(__name__)


def _verbose() -> bool:
    return logging.getLogger("ray_sbir").isEnabledFor(logging.DEBUG)


PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def init_ray(num_cpus: int | None = None, object_store_memory: int | None = None, address: str | None = None, *,
             new_cluster: bool = False, loopback: bool = False, dashboard: str | None = None,
             log_to_driver: bool = True, progress_bars: bool | None = None) -> str | None:
    """Connect to the cluster at ``address`` (else ``RAY_ADDRESS``) or start a private local one; returns the
    private cluster's tag (:func:`mark_private_cluster`; ``None`` on a joined cluster, or when Ray was already
    initialised in this process).

    ``new_cluster``: always a new cluster of our own (``address="local"``), even where ``RAY_ADDRESS`` or a
    ``ray start`` on this machine offers one (``ray-sbir serve``, the benches). ``loopback``: that cluster
    listens on 127.0.0.1 only (:func:`keep_cluster_on_loopback`). ``dashboard``: ``HOST:PORT`` of Ray's
    dashboard on a cluster we start (``None``: no dashboard). ``progress_bars``: Ray Data's per-operator bars
    (``None``: :func:`progress_bars_wanted`)."""
    if ray.is_initialized():
        return None
    address = None if new_cluster else (address or os.environ.get("RAY_ADDRESS"))
    # Every worker process of the job sets up logging as this driver did (ray_sbir.logs), and reads storage as it.
    runtime_env = ray_runtime_env()
    runtime_env["env_vars"].update(worker_env())
    kw = {"runtime_env": runtime_env, "logging_level": logging.INFO if _verbose() else logging.WARNING,
          "log_to_driver": log_to_driver}
    tag = None
    if address:
        ray.init(address=address, **kw)
    else:
        # A private one-node cluster is never drained by an autoscaler or a cloud: Ray Train's preemption watcher
        # (an actor per run) has nothing to watch there, and its start prints a C++ error line about its
        # restartable constructor arguments in every run. Clusters joined by address keep it.
        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
        if loopback:
            keep_cluster_on_loopback()
        tag = mark_private_cluster()
        if dashboard:
            host, port = parse_dashboard(dashboard)
            kw.update(include_dashboard=True, dashboard_host=host, dashboard_port=port)
        else:
            kw["include_dashboard"] = False
        context = ray.init(address="local" if new_cluster else None, num_cpus=num_cpus,
                           object_store_memory=object_store_memory, **kw)
        if dashboard:
            log.info("Ray dashboard: http://%s", getattr(context, "dashboard_url", None) or dashboard)
    set_data_progress(progress_bars_wanted() if progress_bars is None else progress_bars)
    return tag


# Storage settings the driver reads that every worker must read the same way (none of them a secret): where the
# store is, the region, the profile, fsspec's per-protocol defaults (FSSPEC_GS_TOKEN=anon for a public bucket).
# On a local cluster the workers inherit them anyway; on a cluster joined at an address they would not.
STORAGE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
               "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
               "AZURE_STORAGE_ACCOUNT_NAME")
# More variables for the workers, named by the user (credentials, for example): comma-separated names. Their values
# travel in the job's runtime environment (visible to whoever may read the job's details on the cluster) and are
# never logged.
WORKER_ENV = "RAY_SBIR_WORKER_ENV"


def worker_env() -> dict[str, str]:
    """The driver's variables every worker gets: :data:`STORAGE_ENV`, every ``FSSPEC_*``, and those named in
    ``RAY_SBIR_WORKER_ENV``."""
    named = [n.strip() for n in os.environ.get(WORKER_ENV, "").split(",") if n.strip()]
    wanted = set(STORAGE_ENV) | set(named) | {k for k in os.environ if k.startswith("FSSPEC_")}
    return {k: os.environ[k] for k in sorted(wanted) if k in os.environ}


def stop_ray(private_cluster: str | None = None) -> None:
    """Disconnect, and end the private cluster ``private_cluster`` (a tag from :func:`init_ray`) whole: every
    process still carrying its tag after Ray's shutdown is ended too (an HAProxy whose Serve actor died)."""
    ray.shutdown()
    if private_cluster:
        end_private_cluster(private_cluster)


def cluster_resources() -> dict[str, float]:
    """The connected cluster's resources (``CPU``, ``GPU``, ...), as its nodes report them now."""
    return ray.cluster_resources()


def parse_dashboard(value: str) -> tuple[str, int]:
    """``--dashboard``'s ``HOST:PORT``, ``PORT`` or ``HOST`` (loopback and 8265 by default); ``ValueError``
    names what is wrong."""
    host, _, port = value.rpartition(":") if ":" in value else ("", "", value)
    if not port.isdigit():  # a bare host
        host, port = value, "8265"
    host = host or "127.0.0.1"
    if not 0 < int(port) < 65536:
        raise ValueError(f"--dashboard {value}: port {port} is not in 1-65535")
    return host, int(port)


def progress_bars_wanted() -> bool:
    """Ray Data's progress bars where a person watches: stderr is a terminal, not CI, not JSON log lines."""
    return (sys.stderr.isatty() and not os.environ.get("CI")
            and os.environ.get(FORMAT_ENV, "").lower() != "json")


def set_data_progress(enabled: bool) -> None:
    """Ray Data's progress bars (whole dataset and per operator) on or off for this driver; its INFO lines about
    plans and resources only with --verbose."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = enabled
    ctx.enable_operator_progress_bars = enabled
    logging.getLogger("ray.data").setLevel(logging.INFO if _verbose() else logging.WARNING)


def ray_train_logging() -> dict:
    """``TorchTrainer`` keyword arguments: Ray Train's own console lines (resources requested, each report, ...)
    only with --verbose."""
    import ray.train

    if not hasattr(ray.train, "LoggingConfig"):  # Ray < 2.5x
        return {}
    return {"logging_config": ray.train.LoggingConfig(log_level="INFO" if _verbose() else "WARNING")}


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Ray's switch for "this machine only" clusters (its default on macOS and Windows): the node's IP is the loopback
# address, so every server of the cluster listens there (GCS, raylet, object manager, workers, the dashboard and
# runtime-env agents, the metrics export), instead of all interfaces. Read by ray._private.ray_constants at import.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def keep_cluster_on_loopback() -> None:
    """Make the local cluster started next listen on loopback only (``ray-sbir serve --host 127.0.0.1``). What Ray
    2.60 cannot move there (each Serve replica's internal gRPC server) is listed in ``docs/cluster.md``
    ("Loopback")."""
    os.environ[SINGLE_MACHINE_ENV] = "0"  # the cluster's processes inherit it
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # already imported (by `import ray`): its flag was read; set it as the variable would
        constants.ENABLE_RAY_CLUSTER = False


# Every process of a private cluster carries this variable, inherited from the process that started the cluster:
# Ray's own processes, its workers and the HAProxy that a Serve actor runs. Ending the cluster ends every process
# that carries it, including an HAProxy that Ray's shutdown leaves behind (re-parented to init when its actor
# dies, still holding the HTTP port).
PRIVATE_CLUSTER_ENV = "RAY_SBIR_PRIVATE_CLUSTER"


def mark_private_cluster() -> str:
    """Tag the processes of the cluster this process starts next (they inherit its environment); returns the tag."""
    import secrets

    os.environ[PRIVATE_CLUSTER_ENV] = tag = f"{os.getpid()}-{secrets.token_hex(6)}"
    return tag


def private_cluster_pids(tag: str) -> list[int]:
    """Processes carrying ``tag`` (read from ``/proc``: Linux; elsewhere none are found), this one excepted."""
    want = f"{PRIVATE_CLUSTER_ENV}={tag}".encode()
    pids = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    pids.append(int(name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def end_private_cluster(tag: str, grace_s: float = 3.0) -> int:
    """SIGTERM every process of the private cluster ``tag``, SIGKILL what is left after ``grace_s``; returns how
    many were signalled."""
    import signal
    import time

    pids = private_cluster_pids(tag)
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and private_cluster_pids(tag):
            time.sleep(0.1)
        pids = private_cluster_pids(tag)
        if not pids:
            break
    return len(pids)
