"""A gallery split into contiguous shards (:func:`shard_slices`), each an :class:`~ray_sbir.search.exact.ExactShard`,
queried and merged (:class:`ShardedIndex`), with the index's ids, labels and uris (:class:`SearchResult`): an
in-memory structure over arrays (an index folder is opened by :func:`ray_sbir.search.open_index`, whatever its
kind)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ray_sbir.search.exact import ExactShard
from ray_sbir.search.topk import check_k, merge_topk

__all__ = ["MergedShards", "SearchResult", "ShardedIndex", "shard_slices"]


def shard_slices(n: int, num_shards: int) -> list[slice]:
    """Split ``n`` rows into ``num_shards`` contiguous slices whose sizes differ by at most one (the first
    ``n % num_shards`` get the extra row). Empty slices appear only when ``num_shards > n``."""
    if num_shards <= 0:
        raise ValueError(f"num_shards must be > 0, got {num_shards}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    base, extra = divmod(n, num_shards)
    out, start = [], 0
    for s in range(num_shards):
        stop = start + base + (1 if s < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out


def _slices_from_boundaries(n: int, boundaries: Sequence[int]) -> list[slice]:
    b = [int(x) for x in boundaries]
    if len(b) < 2 or b[0] != 0 or b[-1] != n or any(x > y for x, y in itertools.pairwise(b)):
        raise ValueError(f"boundaries must rise from 0 to n={n}, got {list(boundaries)}")
    return [slice(x, y) for x, y in itertools.pairwise(b)]


class MergedShards:
    """Contiguous shards of any kind (each with global rows), searched together: every shard's top-``k``,
    merged by :func:`merge_topk` (the rule Serve's ingress applies to its shard replicas' answers)."""

    def __init__(self, shards: Sequence[Any]):
        if not shards:
            raise ValueError("MergedShards needs at least one shard")
        self.shards = list(shards)
        self.starts = np.array([s.offset for s in self.shards], np.int64)
        self.n = sum(len(s) for s in self.shards)

    def __len__(self) -> int:
        return self.n

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``allowed``: a boolean mask of all the rows; each shard applies its own slice of it."""
        k = check_k(k)
        if allowed is None:
            return merge_topk([shard.search(queries, k) for shard in self.shards], k)
        first = int(self.starts[0])
        return merge_topk([s.search(queries, k, allowed[s.offset - first:s.offset - first + len(s)])
                           for s in self.shards], k)

    def vectors(self, rows: Any) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        flat = rows.reshape(-1)
        owner = np.searchsorted(self.starts, flat, side="right") - 1
        parts = {i: self.shards[i].vectors(flat[owner == i]) for i in np.unique(owner).tolist()}
        dim = next(iter(parts.values())).shape[1] if parts else 0
        out = np.empty((len(flat), dim), np.float32)
        for i, part in parts.items():
            out[owner == i] = part
        return out.reshape(*rows.shape, dim)


@dataclass
class SearchResult:
    """Top-``k`` per query: ``(q, k')`` arrays; string columns are ``None`` when the index has none."""

    scores: np.ndarray
    indices: np.ndarray
    ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    uris: np.ndarray | None = None


def _compact(values: Any, n: int, name: str, dictionary: bool = False) -> pa.Array | None:
    if values is None:
        return None
    arr = values if isinstance(values, pa.Array) else pa.array(np.asarray(values, dtype=object).tolist())
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} embeddings")
    if dictionary and not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()  # class names repeat: 4 bytes per row plus the class list
    return arr


def _take(arr: pa.Array | None, idx: np.ndarray) -> np.ndarray | None:
    if arr is None:
        return None
    out = arr.take(pa.array(idx.reshape(-1)))
    if pa.types.is_dictionary(out.type):
        out = out.dictionary_decode()
    return out.to_numpy(zero_copy_only=False).reshape(idx.shape)


class ShardedIndex:
    """A gallery split into contiguous :class:`ExactShard` s; exact top-``k`` over all of them.

    ``num_shards`` equal slices (sizes differ by at most one) or explicit ``boundaries``
    (``[0, b1, ..., n]``). Each shard scans its slice with all of the process's threads; in the Serve app
    every replica holds one shard instead (see :func:`shard_slices`). ``ids``/``labels``/``uris`` are kept
    compactly (Arrow strings, labels dictionary-encoded) to map answers back to items.
    """

    def __init__(self, embeddings: Any, num_shards: int = 1, *, boundaries: Sequence[int] | None = None,
                 ids: Any = None, labels: Any = None, uris: Any = None, device: Any = None, dtype: Any = None,
                 **shard_kwargs: Any):
        if not isinstance(embeddings, torch.Tensor):
            embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (n, d), got shape {tuple(embeddings.shape)}")
        n = int(embeddings.shape[0])
        self.slices = _slices_from_boundaries(n, boundaries) if boundaries is not None else shard_slices(n, num_shards)
        self.ids = _compact(ids, n, "ids")
        self.labels = _compact(labels, n, "labels", dictionary=True)
        self.uris = _compact(uris, n, "uris")
        self.shards = [ExactShard(embeddings[sl], offset=sl.start, device=device, dtype=dtype, **shard_kwargs)
                       for sl in self.slices]
        self.n = n
        self.dim = int(embeddings.shape[1])

    shard_slices = staticmethod(shard_slices)

    def __len__(self) -> int:
        return self.n

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32 (q, k'), global indices int64 (q, k'))``, ``k' = min(k, n)``."""
        k = check_k(k)
        results = [shard.search(queries, k) for shard in self.shards]
        return merge_topk(results, k)

    def lookup(self, indices: Any) -> SearchResult:
        idx = np.asarray(indices, dtype=np.int64)
        return SearchResult(np.empty(idx.shape, np.float32), idx, _take(self.ids, idx), _take(self.labels, idx),
                            _take(self.uris, idx))

    def query(self, queries: Any, k: int) -> SearchResult:
        """:meth:`search` with the answers mapped to ids, labels and uris."""
        scores, idx = self.search(queries, k)
        res = self.lookup(idx)
        res.scores = scores
        return res

    def memory_bytes(self) -> dict:
        """Bytes held: embeddings (all shards), ids, labels, uris, and the total per item."""
        emb = sum(s.memory_bytes()["embeddings"] for s in self.shards)
        cols = {name: int(arr.nbytes) if arr is not None else 0
                for name, arr in (("ids", self.ids), ("labels", self.labels), ("uris", self.uris))}
        total = emb + sum(cols.values())
        return {"embeddings": emb, **cols, "total": total, "per_item": total / self.n if self.n else 0.0}
