"""A real multi-node Ray cluster on this machine, started with the CLI (``ray start``) the way users do.

Each node is one ``ray start`` in a new session (its own process group); the head has token authentication
on, with this cluster's own token, temp dir and ports, so other Ray instances on the machine are neither
reused nor disturbed. ``ray stop`` can't be scoped to one cluster or one node (it stops every Ray process of
the machine), so a node is ended by signalling its processes alone: its process group, their descendants
(raylet, workers, job drivers) and any process carrying the node's marker in its environment (a worker whose
raylet already died has been re-parented to init).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import pytest

from ray_sbir.testing.stores import free_port

MARKER = "RAY_SBIR_TEST_CLUSTER_NODE"


def ray_cli() -> str:
    sibling = os.path.join(os.path.dirname(sys.executable), "ray")
    return sibling if os.path.exists(sibling) else (shutil.which("ray") or pytest.skip("no `ray` CLI"))


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(name)] = (int(fields[1]), int(fields[2]))
    return table


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


@dataclass
class Node:
    name: str
    pgid: int
    marker: bytes

    def pids(self) -> set[int]:
        table = _proc_table()
        pids = {pid for pid, (_, group) in table.items() if group == self.pgid or _has_marker(pid, self.marker)}
        grown = True
        while grown:
            grown = False
            for pid, (ppid, _) in table.items():
                if ppid in pids and pid not in pids:
                    pids.add(pid)
                    grown = True
        pids.discard(os.getpid())
        return pids

    def signal(self, sig: int) -> set[int]:
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL whatever is left; ``grace_s=0`` is a node lost without warning."""
        if grace_s > 0:
            self.signal(signal.SIGTERM)
            deadline = time.time() + grace_s
            while time.time() < deadline and self.pids():
                time.sleep(0.5)
        deadline = time.time() + 15
        while self.signal(signal.SIGKILL) and time.time() < deadline:
            time.sleep(0.2)


@dataclass
class LocalCluster:
    root: str
    env: dict
    gcs_address: str = ""
    dashboard_address: str = ""
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def create(cls) -> "LocalCluster":
        # Short root: Ray's unix sockets live under it (108-byte path limit).
        root = tempfile.mkdtemp(prefix="rsj-", dir="/tmp" if os.path.isdir("/tmp") else None)
        token_path = os.path.join(root, "auth_token")
        with open(os.open(token_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_hex(32))
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        env.update({
            # Token auth with this cluster's own token: ~/.ray/auth_token (another cluster's) stays untouched.
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path,
            # A loaded 2-core machine can take more than the default 30 s to start the dashboard agent.
            "RAY_agent_register_timeout_ms": "120000",
            "RAY_USAGE_STATS_ENABLED": "0",
        })
        return cls(root=root, env=env)

    def _start(self, name: str, make_args, attempts: int = 3) -> Node:
        """``ray start`` one node; retried because Ray gives a raylet a fixed 30 s to register with the GCS,
        which a heavily loaded 2-core machine can exceed."""
        for _ in range(attempts):
            node, rc, log = self._start_once(name, make_args())  # fresh ports each attempt
            if rc == 0:
                return node
            node.stop(grace_s=0)
            self.nodes.remove(node)
        pytest.fail(f"ray start ({name}) failed {attempts} times (rc={rc}):\n{log[-4000:]}")

    def _start_once(self, name: str, args: list[str]) -> tuple[Node, int | None, str]:
        marker = f"{MARKER}={self.root}/{name}"
        env = {**self.env, MARKER: f"{self.root}/{name}"}
        # Every port explicit: the defaults (10001, 52365, ...) may belong to another Ray on this machine.
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                 f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]
        log_path = os.path.join(self.root, f"ray_start_{name}.log")
        with open(log_path, "w") as log:
            # New session: the node's daemons share this process group, whatever happens to `ray start`.
            proc = subprocess.Popen([ray_cli(), "start", *args, *ports, "--disable-usage-stats"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, proc.pid, marker.encode())
        self.nodes.append(node)
        try:
            rc = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            rc = None
        with open(log_path) as f:
            return node, rc, f.read()

    def start_head(self, num_cpus: int, object_store_memory: int, dashboard: bool = True) -> Node:
        def args() -> list[str]:
            gcs_port, dash_port = free_port(), free_port()
            self.gcs_address = f"127.0.0.1:{gcs_port}"
            self.dashboard_address = f"http://127.0.0.1:{dash_port}"
            return ["--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--port={gcs_port}",
                    f"--dashboard-port={dash_port}", f"--include-dashboard={'true' if dashboard else 'false'}",
                    f"--ray-client-server-port={free_port()}", f"--num-cpus={num_cpus}",
                    f"--object-store-memory={object_store_memory}", f"--temp-dir={os.path.join(self.root, 'ray')}"]

        return self._start("head", args)

    def add_node(self, name: str, num_cpus: int, object_store_memory: int) -> Node:
        """A worker node joining the head (``ray start --address``), as on a second machine."""
        return self._start(name, lambda: [f"--address={self.gcs_address}", "--node-ip-address=127.0.0.1",
                                          f"--num-cpus={num_cpus}", f"--object-store-memory={object_store_memory}"])

    def stop(self) -> None:
        for node in reversed(self.nodes):  # workers first, the head last
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
