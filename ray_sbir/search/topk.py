"""Exact top-k selection with the search contract's tie rule (equal scores: lower index first), shared by the
exact float search (:mod:`ray_sbir.search.exact`), the Hamming search and the serving merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["check_k", "exact_topk", "merge_best", "merge_topk", "to_numpy"]


def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def exact_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row of ``scores`` ``(q, m)``: ``(values, column indices)``, sorted by value descending,
    equal values by lower index -- also when the k-th value is tied with values left out.

    ``torch.topk`` picks an arbitrary subset of a tied group at the boundary; one pass ``scores >= kth``
    counts whether any row has more candidates than ``k``. Rows that do (rare with float scores, common
    with integer ones) are rebuilt from every index strictly above the k-th value plus the lowest indices
    equal to it. Then a stable sort by index, then by value, gives the contract order."""
    m = scores.shape[1]
    if m <= k:
        vals, idx = scores, torch.arange(m, device=scores.device).expand(scores.shape[0], m)
    else:
        vals, idx = torch.topk(scores, k, dim=1, sorted=False)
        kth = vals.amin(dim=1, keepdim=True)
        over = torch.nonzero((scores >= kth).sum(dim=1) > k).flatten().tolist()
        if over:
            vals, idx = vals.clone(), idx.clone()
            for r in over:
                above = torch.nonzero(scores[r] > kth[r]).flatten()
                tied = torch.nonzero(scores[r] == kth[r]).flatten()[:k - above.numel()]
                idx[r] = torch.cat([above, tied])
                vals[r] = scores[r, idx[r]]
    idx, order = torch.sort(idx, dim=1)
    vals = torch.gather(vals, 1, order)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, torch.gather(idx, 1, order)


def merge_best(best: tuple[torch.Tensor, torch.Tensor] | None, new: tuple[torch.Tensor, torch.Tensor], k: int,
               descending: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a later chunk's sorted top-``k`` ``(values, rows)`` into the running best of the earlier chunks
    (``None`` at first): one stable sort of ``[best | new]``, so on a tie the running entry, with the lower
    row, stays first."""
    if best is None:
        return new
    values, rows = torch.cat([best[0], new[0]], 1), torch.cat([best[1], new[1]], 1)
    values, order = torch.sort(values, dim=1, descending=descending, stable=True)
    return values[:, :k], torch.gather(rows, 1, order[:, :k])


def merge_topk(results: Sequence[tuple[Any, Any]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact global top-``k`` from per-shard ``(scores, indices)`` answers (numpy or torch, ``(q, k_s)``
    each, widths may differ): ``(scores float32 (q, k'), indices int64 (q, k'))`` with ``k' = min(k, sum
    k_s)``, sorted by descending score, ties by lower index."""
    k = check_k(k)
    if not results:
        raise ValueError("merge_topk needs at least one (scores, indices) result")
    scores, indices = [], []
    for s, i in results:
        s, i = to_numpy(s).astype(np.float32, copy=False), to_numpy(i).astype(np.int64, copy=False)
        if s.ndim != 2 or s.shape != i.shape:
            raise ValueError(f"each result must be two (q, k) arrays of the same shape, got {s.shape}, {i.shape}")
        scores.append(s)
        indices.append(i)
    nq = {s.shape[0] for s in scores}
    if len(nq) != 1:
        raise ValueError(f"results disagree on the number of queries: {sorted(nq)}")
    s = np.concatenate(scores, axis=1)
    i = np.concatenate(indices, axis=1)
    kk = min(k, s.shape[1])
    if len(results) == 1 and kk == s.shape[1]:
        return s, i
    order = np.lexsort((i, -s), axis=1)[:, :kk]  # by score descending, then index ascending
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
