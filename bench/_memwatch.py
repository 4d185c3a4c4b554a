"""Memory sampler shared by the scale benches: process RSS and Ray object-store usage, every ``interval`` s.

Reads ``/proc`` directly (Linux), so it needs no psutil; this is the same RSS psutil reports.

Processes: this (driver) process and all its descendants, which for a cluster started with
``ray.init(address="local")`` are every Ray process (GCS, raylet, agents, workers). Two sums are kept:

- ``rss``: the sum of every process's resident set. An upper bound: pages shared between processes (the
  object store's shared memory mapped by several workers, shared libraries) are counted once per process.
- ``private``: the sum of ``rss - shared`` (``/proc/<pid>/statm``), the resident pages that are not file- or
  shmem-backed (anonymous memory: Python heaps, tensors).
  Shared pages (plasma, libraries) are left out; add the object store figure for the store's part.

Object store: the local raylet's ``store_stats`` (``object_store_bytes_used``, the plasma bytes in use;
``object_store_bytes_fallback``, objects that overflowed to the filesystem; ``spilled_bytes_total``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MiB = 1024**2
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from ``/proc/<pid>/stat`` (Linux; no psutil needed)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])  # the name field may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _statm(pid: int) -> tuple[int, int] | None:
    """(rss, shared) bytes of a process from ``/proc/<pid>/statm``; None once it has exited."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            fields = f.read().split()
        return int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Sample:
    t: float
    progress: float | None
    rss: int
    private: int
    max_proc_rss: int
    nprocs: int
    store_used: int
    store_fallback: int
    spilled: int


def _within(s: Sample, lo: float, hi: float) -> bool:
    # Progress window (lo, hi]; the first window also takes the samples from before any progress (0).
    return s.progress is not None and (lo < s.progress <= hi or (lo == 0 and s.progress == 0))


@dataclass
class MemWatch:
    interval: float = 0.5
    progress: Callable[[], float] | None = None  # returns the job's progress in [0, 1], sampled with memory
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memwatch", daemon=True)
        self._root = os.getpid()
        self._node = None
        self._t0 = time.time()

    # ------------------------------------------------------------------------------------------------ sampling
    def _store(self) -> tuple[int, int, int]:
        try:
            import ray
            from ray._private.internal_api import node_stats

            if not ray.is_initialized():
                return 0, 0, 0
            if self._node is None:
                node = ray._private.worker.global_worker.node
                self._node = (node.node_ip_address, node.node_manager_port)
            s = node_stats(*self._node, include_memory_info=False).store_stats
            return int(s.object_store_bytes_used), int(s.object_store_bytes_fallback), int(s.spilled_bytes_total)
        except Exception:  # raylet going down at shutdown, etc.
            return 0, 0, 0

    def sample(self) -> Sample:
        rss = private = top = n = 0
        for pid in _descendants(self._root):
            m = _statm(pid)
            if m is None:
                continue
            rss += m[0]
            private += max(0, m[0] - m[1])
            top = max(top, m[0])
            n += 1
        used, fallback, spilled = self._store()
        prog = None
        if self.progress is not None:
            try:
                prog = float(self.progress())
            except Exception:
                prog = None
        s = Sample(time.time() - self._t0, prog, rss, private, top, n, used, fallback, spilled)
        self.samples.append(s)
        return s

    def _run(self):
        while not self._stop.is_set():
            t = time.time()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.time() - t)))

    def start(self) -> MemWatch:
        self._t0 = time.time()
        self._thread.start()
        return self

    def stop(self) -> MemWatch:
        self._stop.set()
        self._thread.join(timeout=30)
        return self

    # --------------------------------------------------------------------------------------------- summaries
    def peak(self, key: str, lo: float | None = None, hi: float | None = None) -> int:
        """Peak of ``key`` over the samples whose progress lies in ``(lo, hi]`` (all samples by default)."""
        vals = [getattr(s, key) for s in self.samples if lo is None or _within(s, lo, hi)]
        return max(vals) if vals else 0

    def summary(self) -> dict:
        return {
            "samples": len(self.samples),
            "peak_rss_sum_mib": round(self.peak("rss") / MiB, 1),
            "peak_private_sum_mib": round(self.peak("private") / MiB, 1),
            "peak_single_process_rss_mib": round(self.peak("max_proc_rss") / MiB, 1),
            "peak_object_store_mib": round(self.peak("store_used") / MiB, 1),
            "object_store_fallback_mib": round(self.peak("store_fallback") / MiB, 1),
            "spilled_mib": round(self.peak("spilled") / MiB, 1),
            "max_processes": max((s.nprocs for s in self.samples), default=0),
        }

    def by_progress(self, edges=(0.0, 0.25, 0.5, 0.75, 1.0)) -> list[dict]:
        """Peak memory in each progress window ``(edges[i], edges[i+1]]``: flat rows = no growth with data."""
        rows = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            rows.append({
                "progress": f"{int(lo * 100)}-{int(hi * 100)}%",
                "samples": sum(1 for s in self.samples if _within(s, lo, hi)),
                "peak_rss_sum_mib": round(self.peak("rss", lo, hi) / MiB, 1),
                "peak_private_sum_mib": round(self.peak("private", lo, hi) / MiB, 1),
                "peak_object_store_mib": round(self.peak("store_used", lo, hi) / MiB, 1),
            })
        return rows
