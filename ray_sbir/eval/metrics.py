"""Retrieval metrics for zero-shot sketch-based image retrieval (ZS-SBIR).

Protocol (Yelamarthi et al. 2018; Dey et al. 2019 "Doodle to Search"; Dutta & Akata 2019 SEM-PCYC;
Liu et al. 2019 SAKE): every sketch is a query, the photos of the (unseen) test classes form the gallery,
a gallery photo is *relevant* to a query when it has the query's class label, and the gallery is ranked
by the inner product of L2-normalised embeddings (cosine similarity; higher = better). Ties are broken by
gallery index (a stable sort on descending score), so the ranking -- and every number below -- is
deterministic.

Definitions (per query; ``rel_i`` is 1 when the item at rank ``i`` (1-based) is relevant,
``R`` = number of relevant items in the whole gallery, ``N`` = gallery size, ``hits@K`` = relevant items in
the top ``K``):

``AP`` (mAP@all)
    Non-interpolated average precision over the full ranking:
    ``AP = (1/R) * sum_i rel_i * hits@i / i``. This equals ``sklearn.metrics.average_precision_score``
    on the query's full score row when scores have no ties -- which is what the SEM-PCYC
    (``utils.aps``) and Doodle-to-Search (``test.py``) evaluation code computes. SAKE's ``eval_AP_inner``
    instead integrates the VOC-style *interpolated* PR curve (precision replaced by its running maximum
    from the right), which is >= this value; we do not follow that variant.

``AP@K`` (mAP@200)
    AP of the truncated top-``K`` list, normalised by the number of relevant items *retrieved in the top
    K*: ``AP@K = (1/hits@K) * sum_{i<=K} rel_i * hits@i / i`` -- exactly what
    ``sklearn.metrics.average_precision_score(rel[:K], score[:K])`` gives on the truncated list. A query
    with ``hits@K == 0`` scores ``AP@K = 0`` and stays in the mean. This is SEM-PCYC's ``utils.apsak``
    (also the commented-out ``map_200`` in Doodle-to-Search ``test.py``), the convention most ZS-SBIR
    papers report mAP@200 with. (SAKE normalises by ``min(K, R)`` and interpolates instead; its mAP@200
    is therefore <= ours for the same ranking when fewer than ``min(K, R)`` relevant items are retrieved.)

``precision@K``
    ``hits@K / K`` (SEM-PCYC ``utils.prec``, SAKE ``eval_precision``). Doodle-to-Search's ``utils.prec``
    divides by ``min(R, K)`` instead; we do not.

``recall@K``
    ``hits@K / R`` (SEM-PCYC ``utils.rec``).

PR curve
    Interpolated precision ``p_interp(r) = max_{i : recall_i >= r} precision_i`` at 11 (``r = 0, 0.1, ..,
    1``) or 101 recall levels, averaged over queries.

Edge cases (decided here, tested in ``tests/eval/test_metrics.py``):

* ``K > N``: ``K`` is clamped to ``N`` (so precision@K = hits@N / N, recall@K = 1). Result dictionaries
  stay keyed by the requested ``K``.
* Queries whose class has no photo in the gallery (``R == 0``): every metric is undefined for them
  (0/0 recall, AP). They are *excluded* from all averages, their ``per_query_ap`` entry is NaN, and
  :attr:`RetrievalMetrics.num_queries_without_relevant` counts them. If *no* query has a relevant item a
  :class:`ValueError` is raised. (SEM-PCYC's code would count them with AP 0 / undefined; in the
  standard splits every test class has photos, so this never changes a published number.)

Ranking: through :mod:`ray_sbir.search`, the interface the endpoint searches with -- a flat inner-product index
over ``gallery_emb`` by default, or any index given (binary, two-stage, re-ranked): evaluation ranks exactly as
serving does. Memory: queries are ranked in chunks of ``chunk_size``; only ``chunk_size x N`` ranked rows (plus
a few arrays of that shape for relevance flags and running hit counts) exist at a time; the full query x
gallery matrix is never built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np
import torch

__all__ = ["RetrievalMetrics", "retrieval_metrics", "average_precision", "hamming_radius_precision"]


@dataclass
class RetrievalMetrics:
    """Result of :func:`retrieval_metrics`; averages are over queries that have a relevant item."""

    map_all: float
    map_at: dict[int, float]
    precision_at: dict[int, float]
    recall_at: dict[int, float]
    per_query_ap: np.ndarray  # (num_queries,), NaN for queries without a relevant gallery item
    per_class: dict[Any, dict[str, float]]
    pr_curve: tuple[np.ndarray, np.ndarray]  # (recall levels, mean interpolated precision)
    num_queries: int = 0
    gallery_size: int = 0
    num_queries_without_relevant: int = 0
    per_query_ap_at: dict[int, np.ndarray] = field(default_factory=dict)
    per_query_precision_at: dict[int, np.ndarray] = field(default_factory=dict)

    def to_dict(self, include_per_query: bool = False) -> dict[str, Any]:
        """JSON-serialisable summary.

        Scalars appear both flat (``"map@200"``, ``"precision@100"``, ``"recall@100"``) and nested
        (``"map_at": {"200": ..}``, ``"precision_at"``, ``"recall_at"``, keyed by ``str(K)``); ``per_class`` is
        keyed by ``str(label)``; ``pr_curve`` is ``{"recall": [...], "precision": [...]}``.
        ``include_per_query`` adds ``per_query_ap`` (``None`` for queries without a relevant item).
        """
        out: dict[str, Any] = {
            "map_all": float(self.map_all),
            **{f"map@{k}": float(v) for k, v in self.map_at.items()},
            **{f"precision@{k}": float(v) for k, v in self.precision_at.items()},
            **{f"recall@{k}": float(v) for k, v in self.recall_at.items()},
            # the same numbers nested, keyed by str(K) (JSON object keys are strings)
            "map_at": {str(k): float(v) for k, v in self.map_at.items()},
            "precision_at": {str(k): float(v) for k, v in self.precision_at.items()},
            "recall_at": {str(k): float(v) for k, v in self.recall_at.items()},
            "num_queries": int(self.num_queries),
            "gallery_size": int(self.gallery_size),
            "num_queries_without_relevant": int(self.num_queries_without_relevant),
            "per_class": {
                str(c): {name: float(v) for name, v in m.items()} for c, m in self.per_class.items()
            },
            "pr_curve": {
                "recall": [float(x) for x in self.pr_curve[0]],
                "precision": [float(x) for x in self.pr_curve[1]],
            },
        }
        if include_per_query:
            out["per_query_ap"] = [None if math.isnan(x) else float(x) for x in self.per_query_ap]
        return out

    def summary(self) -> str:
        """One line for logs, e.g. ``mAP@all 0.412 | mAP@200 0.455 | P@100 0.501 | P@200 0.487``."""
        parts = [f"mAP@all {self.map_all:.4f}"]
        parts += [f"mAP@{k} {v:.4f}" for k, v in self.map_at.items()]
        parts += [f"P@{k} {v:.4f}" for k, v in self.precision_at.items()]
        parts += [f"R@{k} {v:.4f}" for k, v in self.recall_at.items()]
        return " | ".join(parts)


# ----------------------------------------------------------------------------------------- helpers


def _matrix(x: Any, normalize: bool) -> np.ndarray:
    """``(n, d)`` float32 rows (numpy or torch in), L2-normalised when ``normalize``."""
    m = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if m.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, dim), got shape {m.shape}")
    m = m.astype(np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12) if normalize else m


def _gallery_index(gallery_emb: Any, device: Any, normalize: bool):
    """The flat inner-product index :func:`retrieval_metrics` ranks with when it is given no index."""
    from ray_sbir.search import ExactShard

    g = _matrix(gallery_emb, normalize)
    if g.shape[0] == 0:
        raise ValueError("empty gallery")
    return ExactShard(g, device=device or "cpu", dtype="float32")


def _iter_ranked(index, q: np.ndarray, chunk_size: int):
    """Yield ``(start, ranked global rows (c, N))`` per query chunk: the whole gallery, in the order ``index``
    ranks it (:mod:`ray_sbir.search`: score descending, ties by lower row; stages applied)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    n = len(index)
    for start in range(0, q.shape[0], chunk_size):
        _, rows = index.search(q[start:start + chunk_size], n)
        yield start, torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))


def _encode_labels(query_labels: Any, gallery_labels: Any) -> tuple[np.ndarray, np.ndarray, list]:
    """Map arbitrary hashable labels (ints, strings, numpy scalars) to dense int ids."""

    def to_list(labels: Any) -> list:
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        arr = np.asarray(labels)
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        return [x.item() if isinstance(x, np.generic) else x for x in arr.tolist()]

    ql, gl = to_list(query_labels), to_list(gallery_labels)
    vocab: dict[Hashable, int] = {}
    for lab in gl + ql:
        vocab.setdefault(lab, len(vocab))
    classes = list(vocab)
    return (
        np.fromiter((vocab[x] for x in ql), dtype=np.int64, count=len(ql)),
        np.fromiter((vocab[x] for x in gl), dtype=np.int64, count=len(gl)),
        classes,
    )


def average_precision(relevance: Sequence[bool] | np.ndarray, k: int | None = None) -> float:
    """AP of one ranked relevance list (rank order), by the module's conventions.

    ``k=None``: AP over the whole list, normalised by its number of relevant items (NaN when there are
    none). ``k`` given: AP@K of the truncated list, normalised by relevant items in the top ``K`` (0 when
    there are none). Reference implementation for tests and small lists.
    """
    rel = np.asarray(relevance, dtype=bool)
    if k is not None:
        rel = rel[: max(int(k), 0)]
    hits = np.cumsum(rel)
    denom = int(rel.sum())
    if denom == 0:
        return float("nan") if k is None else 0.0
    ranks = np.arange(1, len(rel) + 1)
    return float(np.sum((hits / ranks)[rel]) / denom)


# ------------------------------------------------------------------------------------------ public


def retrieval_metrics(
    query_emb: Any,
    query_labels: Any,
    gallery_emb: Any,
    gallery_labels: Any,
    *,
    ks: Sequence[int] = (100, 200),
    map_ks: Sequence[int] = (200,),
    recall_ks: Sequence[int] = (100, 200),
    chunk_size: int = 256,
    device: Any = None,
    pr_points: int = 11,
    normalize: bool = True,
    index: Any = None,
) -> RetrievalMetrics:
    """Evaluate sketch -> photo retrieval (see the module docstring for every definition).

    Args:
        query_emb: ``(Q, D)`` sketch embeddings, numpy or torch (what the model's ``encode`` returns).
        query_labels: ``Q`` class labels (ints or strings; any hashable scalar).
        gallery_emb: ``(N, D)`` photo embeddings, ranked by inner product; ignored when ``index`` is given.
        gallery_labels: ``N`` class labels, in the gallery's row order.
        ks: cut-offs for precision@K.
        map_ks: cut-offs for mAP@K (AP of the top-K list, normalised by relevant items retrieved in it).
        recall_ks: cut-offs for recall@K.
        chunk_size: queries ranked at once; peak memory is O(chunk_size * N).
        device: torch device of the flat index and of the metric arithmetic (CPU when None).
        pr_points: recall levels of the interpolated PR curve: 11 (0, 0.1, .., 1) or 101.
        normalize: L2-normalise both sides first (inner product = cosine). Set False for embeddings that are
            already normalised, or to score exactly as search does.
        index: any index of :mod:`ray_sbir.search` over the gallery (binary, two-stage, re-ranked, sharded):
            the ranking is then exactly the one that index (and so the endpoint) returns.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    q = _matrix(query_emb, normalize and index is None)
    index = index if index is not None else _gallery_index(gallery_emb, dev, normalize)
    n_q, n_g = q.shape[0], len(index)
    q_ids, g_ids, classes = _encode_labels(query_labels, gallery_labels)
    _check_counts(q_ids, g_ids, n_q, n_g, pr_points)
    ks, map_ks, recall_ks = (tuple(int(k) for k in seq) for seq in (ks, map_ks, recall_ks))
    for k in ks + map_ks + recall_ks:
        if k < 1:
            raise ValueError(f"cut-off K must be >= 1, got {k}")
    n_rel_all = np.bincount(g_ids, minlength=len(classes))[q_ids]  # (Q,)
    acc = _Accumulator(n_q, n_g, ks, map_ks, recall_ks, pr_points, dev)
    g_ids_t = torch.from_numpy(g_ids).to(dev)
    for start, idx in _iter_ranked(index, q, chunk_size):
        stop = start + idx.shape[0]
        qid = torch.from_numpy(q_ids[start:stop]).to(dev)
        rel = g_ids_t[idx.to(dev)] == qid[:, None]  # (c, N) bool, rank order
        acc.add(start, rel, torch.from_numpy(n_rel_all[start:stop]).to(dev, torch.float64))
    return acc.result(q_ids, classes, n_rel_all > 0)


def _check_counts(q_ids: np.ndarray, g_ids: np.ndarray, n_q: int, n_g: int, pr_points: int) -> None:
    if len(q_ids) != n_q or len(g_ids) != n_g:
        raise ValueError(f"label counts ({len(q_ids)}, {len(g_ids)}) do not match embeddings ({n_q}, {n_g})")
    if n_q == 0:
        raise ValueError("no queries")
    if pr_points < 2:
        raise ValueError("pr_points must be >= 2")


class _Accumulator:
    """Per-query AP, AP@K, precision@K, recall@K and interpolated PR, filled chunk by chunk from relevance
    rows in rank order."""

    def __init__(self, n_q: int, n_g: int, ks, map_ks, recall_ks, pr_points: int, dev: torch.device):
        self.n_g, self.ks, self.map_ks, self.recall_ks, self.dev = n_g, ks, map_ks, recall_ks, dev
        self.clamp = {k: min(k, n_g) for k in set(ks + map_ks + recall_ks)}
        self.levels = np.linspace(0.0, 1.0, pr_points)
        self.levels_t = torch.from_numpy(self.levels).to(dev, torch.float64)
        self.ap = np.full(n_q, np.nan)
        self.ap_at = {k: np.zeros(n_q) for k in map_ks}
        self.prec_at = {k: np.zeros(n_q) for k in ks}
        self.rec_at = {k: np.zeros(n_q) for k in recall_ks}
        self.pr = np.zeros((n_q, pr_points))
        self.ranks = torch.arange(1, n_g + 1, device=dev, dtype=torch.float64)  # (N,)

    def add(self, start: int, rel: torch.Tensor, n_rel: torch.Tensor) -> None:
        stop = start + rel.shape[0]
        hits = torch.cumsum(rel, dim=1, dtype=torch.int32)  # (c, N) relevant items in the top i
        valid = n_rel > 0
        safe_n_rel = torch.where(valid, n_rel, torch.ones_like(n_rel))
        prec_i = hits.to(torch.float64) / self.ranks  # (c, N) precision at each rank (exact: AP to 1e-12)
        rel_prec = prec_i * rel  # precision at the ranks of relevant items, 0 elsewhere
        ap = rel_prec.sum(dim=1, dtype=torch.float64) / safe_n_rel  # AP over the full ranking
        self.ap[start:stop] = torch.where(valid, ap, torch.full_like(ap, float("nan"))).cpu().numpy()
        for k in self.map_ks:  # AP of the top-K list, normalised by relevant items retrieved there (0 when none)
            kk = self.clamp[k]
            h = hits[:, kk - 1].to(torch.float64)
            num = rel_prec[:, :kk].sum(dim=1, dtype=torch.float64)
            self.ap_at[k][start:stop] = torch.where(h > 0, num / h.clamp(min=1), torch.zeros_like(h)).cpu().numpy()
        del rel_prec
        for k in self.ks:
            self.prec_at[k][start:stop] = (hits[:, self.clamp[k] - 1].to(torch.float64) / self.clamp[k]).cpu().numpy()
        for k in self.recall_ks:
            self.rec_at[k][start:stop] = (hits[:, self.clamp[k] - 1].to(torch.float64) / safe_n_rel).cpu().numpy()
        # Interpolated PR: first rank whose hit count reaches ceil(level * R); max precision from there on.
        need = torch.ceil(self.levels_t[None, :] * safe_n_rel[:, None] - 1e-9).clamp(min=0).to(torch.int32)
        pos = torch.searchsorted(hits, need.contiguous(), right=False).clamp(max=self.n_g - 1)
        envelope = torch.flip(torch.cummax(torch.flip(prec_i, dims=[1]), dim=1).values, dims=[1])
        self.pr[start:stop] = torch.gather(envelope, 1, pos.to(torch.int64)).to(torch.float64).cpu().numpy()

    def result(self, q_ids: np.ndarray, classes: list, valid_mask: np.ndarray) -> RetrievalMetrics:
        if not valid_mask.any():
            raise ValueError("no query has a relevant item in the gallery (no shared class labels)")

        def mean(a: np.ndarray, mask: np.ndarray = valid_mask) -> float:
            return float(np.mean(a[mask]))

        per_class: dict[Any, dict[str, float]] = {}
        for cid in np.unique(q_ids[valid_mask]):
            m = valid_mask & (q_ids == cid)
            entry = {"map_all": mean(self.ap, m)}
            entry.update({f"map@{k}": mean(self.ap_at[k], m) for k in self.map_ks})
            entry.update({f"precision@{k}": mean(self.prec_at[k], m) for k in self.ks})
            entry.update({f"recall@{k}": mean(self.rec_at[k], m) for k in self.recall_ks})
            entry["num_queries"] = float(m.sum())
            per_class[classes[cid]] = entry
        return RetrievalMetrics(
            map_all=mean(self.ap), map_at={k: mean(self.ap_at[k]) for k in self.map_ks},
            precision_at={k: mean(self.prec_at[k]) for k in self.ks},
            recall_at={k: mean(self.rec_at[k]) for k in self.recall_ks}, per_query_ap=self.ap, per_class=per_class,
            pr_curve=(self.levels, self.pr[valid_mask].mean(axis=0)), num_queries=len(q_ids), gallery_size=self.n_g,
            num_queries_without_relevant=int((~valid_mask).sum()),
            per_query_ap_at={k: np.where(valid_mask, self.ap_at[k], np.nan) for k in self.map_ks},
            per_query_precision_at={k: np.where(valid_mask, self.prec_at[k], np.nan) for k in self.ks},
        )


def hamming_radius_precision(query_codes: np.ndarray, query_labels: Sequence, gallery_codes: np.ndarray,
                             gallery_labels: Sequence, radius: int = 2, chunk_size: int = 256) -> dict[str, float]:
    """Precision of hash lookup within Hamming ``radius`` (packed codes, :mod:`ray_sbir.search.hamming`): per query,
    the share of relevant items among the gallery items at distance <= ``radius``; a query with none there
    scores 0 and stays in the mean (the convention of DCMH and ZSIH's "precision within Hamming radius 2").
    Also returns the share of queries whose ball is empty, which that convention hides."""
    from ray_sbir.search.hamming import hamming_distances

    q_lab, g_lab, _ = _encode_labels(query_labels, gallery_labels)
    precisions, empty = [], 0
    for start in range(0, len(query_codes), chunk_size):
        d = np.asarray(hamming_distances(query_codes[start:start + chunk_size], gallery_codes))
        inside = d <= radius
        hits = (inside & (q_lab[start:start + chunk_size, None] == g_lab[None, :])).sum(1)
        found = inside.sum(1)
        empty += int((found == 0).sum())
        precisions.append(np.where(found > 0, hits / np.maximum(found, 1), 0.0))
    p = np.concatenate(precisions) if precisions else np.zeros(0)
    return {f"precision_hamming_radius{radius}": float(p.mean()) if len(p) else float("nan"),
            f"empty_hamming_radius{radius}": empty / max(len(p), 1)}
