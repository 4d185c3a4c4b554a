"""Exact (brute-force) inner-product search of one contiguous gallery slice: :class:`ExactShard`.

The gallery index (files, columns, manifest) is :mod:`ray_sbir.index`'s; this module only scores.
:class:`ExactShard` holds one contiguous slice of the gallery on a device and answers exact top-``k``
inner-product queries with **global** row indices, under the ranking contract of :mod:`ray_sbir.search`
(descending score, equal scores by lower row).

How a shard scans its slice (bounded memory: ``chunk x q`` scores at a time)
    For each chunk of gallery rows (``chunk_size``, or automatic), ``S = G_chunk @ Q^T`` is written by
    one ``torch.mm`` into a preallocated ``(chunk, q)`` buffer. The running top-``k`` per query is kept
    sorted; its ``k``-th score ``t`` is a threshold: an item of a later chunk can enter the top-``k`` only
    when its score is *strictly* greater than ``t`` (on equality the running item wins, having the lower
    index).

    * ``strategy="filter"`` (default): instead of a ``torch.topk`` over every chunk -- which on CPU costs
      more than the matrix product itself, since it copies every score into (value, index) pairs -- the
      chunk is reduced to per-block maxima (blocks of 64 rows, one vectorised ``amax``), only the few
      blocks whose maximum beats ``t`` are gathered and compared element-wise, and the survivors are
      merged into the running top-``k`` ("concat running best with the chunk's candidates and
      re-select", with a stable sort so ties keep the lower index). After the first chunks the threshold
      is high and almost nothing survives, so the scan runs close to the speed of the bare ``sgemm``
      (about 85% of it for 256 queries on CPU; see ``docs/benchmarks.md``). The first chunk (running
      top-``k`` not yet full) takes the chunk's own top-``k`` as candidates; a chunk where the filter lets
      too much through (adversarially ordered data) falls back to the same. Candidates are merged in
      batches (about ``k`` per query at a time), so a ``k`` much larger than the chunk stays cheap.
    * ``strategy="topk"``: the textbook variant, ``torch.topk`` of every chunk merged into the running
      best (kept as a reference and for comparison in ``bench/bench_search.py``).

    * ``strategy="direct"`` (the default on CUDA): one ``(q, rows)`` product ``Q @ G^T`` per chunk (on a GPU
      the whole shard is one chunk up to 256M scores, 1 GiB), one ``torch.topk`` per query row, then the
      tie repair of :func:`exact_topk` (one comparison pass over the scores, which costs ``4 q`` bytes per row
      against the ``2 d`` bytes per row of the gallery read by the product). This is the naive ``mm + topk``
      plus that pass: on a GPU the chunked filter scan pays a dozen small kernels and host syncs per chunk
      (about 1.2 ms per call measured on an H200, 4x the naive code for one query), while a single query
      reads the gallery once, so the product runs at memory bandwidth and everything else must be O(1)
      kernels. On CPU the filter strategy stays the default (``torch.topk`` there costs more than the
      product).
    * ``strategy="auto"`` (default): ``direct`` on CUDA for batches under 512 queries, ``filter`` otherwise
      (large batches: a top-k over every score costs more than the filter's block maxima).

    All are exact, including ties (a chunk whose top-``k`` boundary falls inside a group of equal scores
    takes all of them as candidates, and the stable re-selection keeps the lowest indices).

Devices, precision, threads
    ``device=None`` picks CUDA when available, else CPU. Storage ``dtype`` defaults to float16 on CUDA
    (half the memory, tensor-core matmuls; scores come out in float32 via ``torch.mm(..., out_dtype=...)``
    where available) and float32 on CPU. float16 storage is allowed on CPU too (half the memory): each
    chunk is then upcast to float32 before the product (CPU float16 matmuls are very slow), at about 10%
    of throughput; ``compute_dtype="float16"`` forces a true float16 product (slow on CPU). Scores
    are returned as float32. float16 storage rounds the embeddings to about 3 significant digits, so items
    whose scores differ by less than ~1e-3 may swap ranks relative to a float32 search; ids are identical
    whenever the score gaps exceed that. On CPU the product uses torch's intra-op threads
    (``num_threads``, default: the process setting -- in a Ray actor, its ``num_cpus``); a shard is
    searched by one caller at a time (its scratch buffers are reused under a lock).
"""


from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch

from ray_sbir.search.topk import check_k, exact_topk, merge_best

__all__ = ["ExactShard", "shard_local_rows", "storage_itemsize"]


# Automatic chunk size: about this many scores per chunk (rows = elements // q), clamped to [min, max] rows.
# Tuned in bench/bench_search.py (see docs/benchmarks_search.md): on CPU the matmul rate hardly depends on
# the chunk, but every chunk costs a dozen small tensor ops, so larger chunks suit small query batches.
AUTO_CHUNK = {"cpu": (1 << 21, 4096, 1 << 18), "cuda": (1 << 24, 1 << 16, 1 << 20)}
BLOCK = 64  # rows per block maximum in the filter strategy
STRATEGIES = ("auto", "filter", "topk", "direct")
# direct strategy: scores per chunk (q x rows float32); a GPU takes a whole 10M-row shard for 16 queries at once
AUTO_DIRECT = {"cpu": 1 << 24, "cuda": 1 << 28}
# From the H200 table of issue 9: at 1024 queries the chunked filter scan beat mm+topk 1.1-2.4x (topk over
# (1024, n) scores dominates there), at 256 and below mm+topk won up to 4x.
DIRECT_MAX_QUERIES = 512


def shard_local_rows(indices: Any, offset: int, n: int) -> np.ndarray:
    """Global row indices -> rows of the shard holding ``[offset, offset + n)``; ``IndexError`` outside it."""
    local = np.asarray(indices, dtype=np.int64) - offset
    if local.size and (local.min() < 0 or local.max() >= n):
        raise IndexError(f"indices outside this shard's rows [{offset}, {offset + n})")
    return local


def _resolve_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        out = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}.get(np.dtype(dtype))
    if out not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"unsupported dtype {dtype!r}; use float32, float16 or bfloat16")
    return out


def rows_dtype(dtype: Any, device: Any) -> type:
    """The numpy dtype to read a gallery's rows in for an :class:`ExactShard` storing ``dtype`` on ``device``:
    float16 where it stores float16 (read straight into it, never held as float32), else float32 (numpy has no
    bfloat16)."""
    return np.float16 if _resolve_dtype(dtype, _resolve_device(device)) == torch.float16 else np.float32


def storage_itemsize(dtype: Any, on_gpu: bool) -> int:
    """Bytes per embedding value that :class:`ExactShard` stores for ``dtype`` (``None``: float16 on a GPU,
    float32 on CPU), without building a shard; unsupported dtypes raise as the shard would."""
    return _resolve_dtype(dtype, torch.device("cuda" if on_gpu else "cpu")).itemsize


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (torch's process-wide setting), restored afterwards."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


class ExactShard:
    """One contiguous slice of the gallery, held on a device; exact top-``k`` by inner product.

    Args:
        embeddings: ``(n, d)`` rows of this shard (numpy or torch; ``n`` may be 0).
        offset: global row index of the shard's first row; results carry ``offset + local row``.
        ids: optional string ids of the shard's rows (``len n``) for :meth:`lookup`.
        device: ``None`` -> CUDA when available, else CPU.
        dtype: storage dtype (``float32``/``float16``/``bfloat16``); ``None`` -> float16 on CUDA, float32
            on CPU. See the module docstring for float16 on CPU.
        compute_dtype: dtype of the matrix product; ``None`` -> the storage dtype on CUDA, float32 on CPU.
        chunk_size: gallery rows scored at a time (memory ``chunk_size x q`` float32 scores); ``None`` ->
            automatic: about 2M scores per chunk on CPU (8192 rows for 256 queries, at least 4096 rows),
            16M on CUDA.
        num_threads: torch intra-op threads while searching (``None``: leave the process setting, which
            in a Ray actor follows its ``num_cpus``).
        strategy: ``"auto"`` (default: ``"direct"`` on CUDA below 512 queries, else ``"filter"``), ``"filter"``,
            ``"direct"`` or ``"topk"``; see the module docstring.
    """

    def __init__(self, embeddings: Any, *, offset: int = 0, ids: Sequence[str] | None = None, device: Any = None,
                 dtype: Any = None, compute_dtype: Any = None, chunk_size: int | None = None,
                 num_threads: int | None = None, strategy: str = "auto"):
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        if compute_dtype is None:
            self.compute_dtype = self.dtype if self.device.type == "cuda" else torch.float32
        else:
            self.compute_dtype = _resolve_dtype(compute_dtype, self.device)
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.num_threads = num_threads
        self.offset = int(offset)

        if isinstance(embeddings, torch.Tensor):
            emb = embeddings.detach()
        else:
            arr = np.asarray(embeddings)
            if arr.dtype not in (np.float32, np.float16):
                arr = arr.astype(np.float32)
            if not arr.flags.writeable:  # torch wants writable memory; we never write to it
                arr = arr.copy()
            emb = torch.from_numpy(arr)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be (n, d), got shape {tuple(emb.shape)}")
        if emb.shape[1] == 0:
            raise ValueError("embeddings must have at least one dimension")
        if not emb.is_floating_point():
            emb = emb.float()
        # Zero-copy when the data already has the right dtype/device and layout (a contiguous numpy slice).
        self.embeddings = emb.to(self.device, self.dtype).contiguous()
        for start in range(0, self.embeddings.shape[0], 65536):  # bounded temporary memory
            if not bool(torch.isfinite(self.embeddings[start:start + 65536]).all()):
                raise ValueError("gallery embeddings contain NaN or Inf (or overflow the storage dtype)")
        self.n, self.dim = (int(s) for s in self.embeddings.shape)
        if ids is not None:
            ids = ids if isinstance(ids, pa.Array) else pa.array([str(i) for i in ids], pa.string())
            if len(ids) != self.n:
                raise ValueError(f"ids has {len(ids)} entries for {self.n} embeddings")
        self.ids = ids
        self._buffers: dict = {}
        self._lock = threading.Lock()  # the scratch buffers are per shard: one search at a time

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"ExactShard(n={self.n}, dim={self.dim}, offset={self.offset}, device={self.device}, "
                f"dtype={self.dtype}, chunk_size={self.chunk_size}, strategy={self.strategy!r})")

    # -- memory
    def memory_bytes(self) -> dict:
        emb = self.embeddings.numel() * self.embeddings.element_size()
        ids = int(self.ids.nbytes) if self.ids is not None else 0
        return {"embeddings": emb, "ids": ids, "total": emb + ids,
                "per_item": (emb + ids) / self.n if self.n else 0.0}

    def lookup(self, indices: Any) -> np.ndarray:
        """String ids for global row indices held by this shard (same shape as ``indices``)."""
        if self.ids is None:
            raise ValueError("this shard was built without ids")
        local = shard_local_rows(indices, self.offset, self.n)
        return self.ids.take(pa.array(local.reshape(-1))).to_numpy(zero_copy_only=False).reshape(local.shape)

    def vectors(self, indices: Any) -> np.ndarray:
        """Stored embeddings (as float32) of global row indices held by this shard: ``(*rows.shape, d)``; what
        a re-rank stage scores."""
        local = shard_local_rows(indices, self.offset, self.n)
        flat = self.embeddings[torch.from_numpy(local.reshape(-1)).to(self.device)].float().cpu().numpy()
        return flat.reshape(*local.shape, self.dim)

    # -- search
    def _prepare_queries(self, queries: Any) -> torch.Tensor:
        if isinstance(queries, torch.Tensor):
            qt = queries.detach()
        else:
            arr = np.asarray(queries)
            if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
                raise ValueError(f"queries must be a numeric array, got dtype {arr.dtype}")
            qt = torch.from_numpy(np.ascontiguousarray(arr))
        if qt.ndim == 1:
            qt = qt.unsqueeze(0)
        if qt.ndim != 2:
            raise ValueError(f"queries must be (q, d) or (d,), got shape {tuple(qt.shape)}")
        if qt.shape[1] != self.dim:
            raise ValueError(f"query dimension {qt.shape[1]} does not match the index dimension {self.dim}")
        if not qt.is_floating_point():
            qt = qt.double()
        bad = ~torch.isfinite(qt).all(dim=1)
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()[:10].tolist()
            raise ValueError(f"queries contain NaN or Inf (query rows {rows})")
        qt = qt.to(self.device, self.compute_dtype)
        if not bool(torch.isfinite(qt).all()):
            raise ValueError(f"queries overflow the compute dtype {self.compute_dtype}")
        return qt

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get(name)
        numel = math.prod(shape)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)

    def chunk_rows(self, num_queries: int) -> int:
        """Gallery rows per chunk for a batch of ``num_queries``."""
        if self.chunk_size is not None:
            return self.chunk_size
        elements, lo, hi = AUTO_CHUNK["cuda" if self.device.type == "cuda" else "cpu"]
        return max(lo, min(hi, elements // max(num_queries, 1) // BLOCK * BLOCK))

    def _rows(self, start: int, m: int) -> torch.Tensor:
        """Gallery rows ``start:start+m`` in the compute dtype (converted into a reused buffer when the
        storage dtype differs)."""
        g = self.embeddings[start:start + m]
        if g.dtype == self.compute_dtype:
            return g
        buf = self._buffer("gallery", (m, self.dim), self.compute_dtype)
        buf.copy_(g)
        return buf

    def _product(self, left: torch.Tensor, right: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``left @ right`` as float32 scores: into ``out`` for a float32 product, else with float32 output
        where CUDA's ``torch.mm(..., out_dtype=...)`` exists, else upcast."""
        if self.compute_dtype == torch.float32:
            return torch.mm(left, right, out=out)
        if self.device.type == "cuda":
            try:
                return torch.mm(left, right, out_dtype=torch.float32)
            except (TypeError, RuntimeError):
                pass
        return torch.mm(left, right).float()

    _excluded: torch.Tensor | None = None  # rows a filtered scan leaves out (their scores -inf), else None

    def _scores(self, q_t: torch.Tensor, start: int, m: int, out: torch.Tensor) -> torch.Tensor:
        """``(m, q)`` float32 scores of rows ``start:start+m`` against the queries (``q_t`` is ``(d, q)``)."""
        s = self._product(self._rows(start, m), q_t, out[:m])
        if self._excluded is not None:
            s.masked_fill_(self._excluded[start:start + m, None], float("-inf"))
        return s

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k``: ``(scores float32 (q, k'), global indices int64 (q, k'))``, ``k' = min(k, n)``,
        sorted by descending score, ties by lower index. ``allowed`` (a boolean mask of the shard's rows,
        :mod:`ray_sbir.search.filters`): only those rows, ``k' = min(k, allowed rows)``; at most
        :data:`~ray_sbir.search.filters.GATHER_FRACTION` of the rows are scored alone (gathered), more are
        scanned with the other rows' scores at -inf."""
        k = check_k(k)
        q_t = self._prepare_queries(queries)
        nq = q_t.shape[0]
        local = None
        if allowed is not None:
            from ray_sbir.search.filters import selected_rows

            local = selected_rows(allowed, self.n)
        kk = min(k, self.n if local is None else len(local))
        if nq == 0 or kk == 0:
            return np.zeros((nq, kk), np.float32), np.zeros((nq, kk), np.int64)
        with self._lock, torch.inference_mode(), _threads(self.num_threads):
            if local is not None and len(local) < self.n:
                vals, rows = self._search_allowed(q_t, kk, local)
            elif self.strategy_for(nq) == "direct":
                vals, rows = self._scan_direct(q_t, kk)
            else:
                vals, rows = self._scan(q_t.t(), kk)
        return vals.cpu().numpy(), (rows + self.offset).cpu().numpy()

    def _search_allowed(self, q: torch.Tensor, kk: int, local: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``kk`` among the ascending local rows ``local`` (``kk`` <= their number)."""
        from ray_sbir.search.filters import GATHER_FRACTION

        if len(local) > GATHER_FRACTION * self.n:  # most rows: the scan, the others' scores at -inf
            self._excluded = torch.ones(self.n, dtype=torch.bool, device=self.device)
            self._excluded[torch.from_numpy(local).to(self.device)] = False
            try:
                return self._scan_direct(q, kk) if self.strategy_for(q.shape[0]) == "direct" else \
                    self._scan(q.t(), kk)
            finally:
                self._excluded = None
        # Few rows: score those alone, chunk by chunk in row order (merge_best keeps the lower row on a tie).
        nq, best = q.shape[0], None
        rows_t = torch.from_numpy(local).to(self.device)
        chunk = max(kk, self.chunk_rows(nq))
        for a in range(0, len(local), chunk):
            part = rows_t[a:a + chunk]
            g = self.embeddings[part].to(self.compute_dtype)
            s = self._product(q, g.t(), self._buffer("gathered", (nq, len(part)), torch.float32))
            vals, idx = exact_topk(s, min(kk, len(part)))
            best = merge_best(best, (vals.clone(), part[idx]), kk)
        return best

    def strategy_for(self, num_queries: int) -> str:
        """The scan strategy a batch of ``num_queries`` runs (``auto``: ``direct`` on CUDA below
        :data:`DIRECT_MAX_QUERIES` queries, ``filter`` otherwise)."""
        if self.strategy != "auto":
            return self.strategy
        return "direct" if self.device.type == "cuda" and num_queries < DIRECT_MAX_QUERIES else "filter"

    def _scan(self, q_t: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
        nq = q_t.shape[1]
        dev = self.device
        run_v = torch.full((nq, kk), float("-inf"), dtype=torch.float32, device=dev)
        run_i = torch.full((nq, kk), self.n, dtype=torch.int64, device=dev)  # sentinel: never returned
        chunk = self.chunk_rows(nq)
        out = self._buffer("scores", (min(chunk, self.n), nq), torch.float32)
        # Candidates wait in ``pending`` until there are about kk per query, then are merged in one sort:
        # merging after every chunk would cost a (q, kk) sort per chunk, which dominates when kk is large
        # compared to the chunk. Until then the threshold is that of the last merge: lower, so still safe.
        pending, n_pending, budget = [], 0, max(nq * kk, 1 << 14)
        merged = 0  # rows merged into the running top-k (its k-th score is a threshold once merged >= kk)
        for start in range(0, self.n, chunk):
            m = min(chunk, self.n - start)
            s = self._scores(q_t, start, m, out)  # (m, nq)
            cand = self._candidates(s, run_v[:, kk - 1] if merged >= kk else None, kk)
            if cand is not None:
                qs, rows, vals = cand
                pending.append((qs, rows + start, vals.float()))
                n_pending += qs.numel()
            if n_pending >= budget or (merged < kk and start + m >= kk):
                run_v, run_i = _merge_running(run_v, run_i, pending)
                pending, n_pending = [], 0
                merged = start + m
        if pending:
            run_v, run_i = _merge_running(run_v, run_i, pending)
        return run_v, run_i

    def _scan_direct(self, q: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``direct`` strategy: per chunk one ``(q, rows)`` product and :func:`exact_topk`, merged into the
        running best (running entries first, so a tie keeps the lower row)."""
        nq = q.shape[0]
        chunk = self.chunk_size or max(kk, AUTO_DIRECT["cuda" if self.device.type == "cuda" else "cpu"] // nq)
        best = None
        for start in range(0, self.n, chunk):
            m = min(chunk, self.n - start)
            s = self._product(q, self._rows(start, m).t(), self._buffer("direct", (nq, m), torch.float32))
            if self._excluded is not None:
                s.masked_fill_(self._excluded[None, start:start + m], float("-inf"))
            vals, rows = exact_topk(s, kk)
            best = merge_best(best, (vals, rows + start), kk)
        return best

    def _candidates(self, s: torch.Tensor, t: torch.Tensor | None, kk: int):
        """Chunk items that may enter the running top-k: ``(query, local row, score)`` tensors (rows within
        the chunk), or ``None`` when there are none. ``t`` is the running k-th score (``None`` until full)."""
        m = s.shape[0]
        if t is None or self.strategy == "topk":
            return _chunk_topk_candidates(s, t, kk)
        mb = m // BLOCK
        parts = []
        if mb:
            head = s[:mb * BLOCK].view(mb, BLOCK, -1)
            blk_max = head.amax(dim=1)  # (mb, q)
            blk, qj = torch.nonzero(blk_max > t, as_tuple=True)
            nblk = blk.numel()
            if nblk * 4 > blk_max.numel():
                # The filter lets a quarter of the blocks through: compare every element instead, and if
                # that still leaves many candidates, cut them down with the chunk's own top-k.
                rows, qs = torch.nonzero(s > t, as_tuple=True)
                if rows.numel() > 8 * kk * s.shape[1]:
                    return _chunk_topk_candidates(s, t, kk)
                return qs, rows, s[rows, qs]
            if nblk:
                vals = head[blk, :, qj]  # (nblk, BLOCK)
                p, off = torch.nonzero(vals > t[qj].unsqueeze(1), as_tuple=True)
                parts.append((qj[p], blk[p] * BLOCK + off, vals[p, off]))
        if mb * BLOCK < m:  # rows after the last full block
            tail = s[mb * BLOCK:]
            rows, qs = torch.nonzero(tail > t, as_tuple=True)
            if rows.numel():
                parts.append((qs, rows + mb * BLOCK, tail[rows, qs]))
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat(x) for x in zip(*parts))


def _chunk_topk_candidates(s: torch.Tensor, t: torch.Tensor | None, kk: int):
    """Candidates from the chunk's own top-``kk`` (exact with ties: when the top-k boundary falls inside a
    group of equal scores, every member of the group is a candidate)."""
    m = s.shape[0]
    if m <= kk:  # the whole chunk
        mask = s > t if t is not None else None
    else:
        top = torch.topk(s, kk, dim=0, sorted=False).values  # (kk, q)
        kth = top.amin(dim=0)  # (q,) the chunk's k-th score
        mask = s >= kth
        if t is not None:
            mask &= s > t
    if mask is None:
        rows, qs = torch.meshgrid(torch.arange(m, device=s.device), torch.arange(s.shape[1], device=s.device),
                                  indexing="ij")
        rows, qs = rows.reshape(-1), qs.reshape(-1)
    else:
        rows, qs = torch.nonzero(mask, as_tuple=True)
    if rows.numel() == 0:
        return None
    return qs, rows, s[rows, qs]


def _merge_running(run_v: torch.Tensor, run_i: torch.Tensor, pending: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge candidates ``[(query, global row, score), ...]`` (in scan order) into the sorted running top-k.

    The running entries all have lower rows than the candidates and are sorted by (score desc, row asc);
    the candidates are laid out per query in ascending row order; a stable descending sort of
    ``[running | candidates]`` therefore breaks every tie by the lower row."""
    nq, kk = run_v.shape
    if len(pending) == 1:
        qs, rows, vals = pending[0]
    else:
        qs, rows, vals = (torch.cat(x) for x in zip(*pending))
    if qs.numel() == 0:
        return run_v, run_i
    # Group candidates by query, ascending rows within a query (one sort of the combined key).
    key = qs.to(torch.int64) * (int(rows.max()) + 1) + rows
    key, order = torch.sort(key)
    qs, rows, vals = qs[order], rows[order], vals[order]
    counts = torch.bincount(qs, minlength=nq)
    width = int(counts.max())
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(qs.numel(), device=qs.device) - first[qs]
    pad_v = torch.full((nq, width), float("-inf"), dtype=torch.float32, device=run_v.device)
    pad_i = torch.full((nq, width), torch.iinfo(torch.int64).max, dtype=torch.int64, device=run_v.device)
    pad_v[qs, pos] = vals
    pad_i[qs, pos] = rows
    all_v = torch.cat([run_v, pad_v], dim=1)
    all_i = torch.cat([run_i, pad_i], dim=1)
    sv, order = torch.sort(all_v, dim=1, descending=True, stable=True)
    return sv[:, :kk].contiguous(), torch.gather(all_i, 1, order[:, :kk])
