"""Training-free re-ranking by the gallery's own neighbourhoods: alpha-weighted query expansion (a search stage)
and database-side augmentation (a rewrite of the gallery's vectors, paid once at index time).

Both follow Radenovic, Tolias & Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018,
sec. 5 ("alpha-weighted query expansion, alpha-QE" and "database-side augmentation, DBA", after Arandjelovic &
Zisserman 2012 and Gordo et al. 2017). With ``^`` marking unit length and ``x_1..x_n`` a vector's top-``n``
neighbours in the gallery:

    alpha-QE:   q'  = normalize( q^ + sum_i max(q^ . x_i^, 0)^alpha  x_i^ ),   then search again with q'
    alpha-DBA:  x_j' = normalize( x_j^ + sum_i max(x_j^ . x_i^, 0)^alpha x_i^ ), i over j's n nearest *other* rows

The vector itself has weight 1 (its similarity to itself). The neighbours' weights are their cosine similarity
to the expanded vector (clipped at 0) raised to ``alpha``: with alpha = 0 this is average query expansion,
large alpha keeps only the closest neighbours. For a binary index the neighbours are found by its own ranking
(Hamming, or two-stage) and averaged as their stored float relaxation; the expanded query is binarised by the
index as any query is, and DBA's augmented floats give the new codes (:meth:`EmbeddingKind.codes`).

On a sketch query over a photo gallery QE is cross-modal: the sketch's first photos pull the query into the
photo domain, which is why it helps zero-shot SBIR as much as it does (``docs/benchmarks.md``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_sbir.search.stages import STAGES, filtered_search

logger = logging.getLogger("ray_sbir.search")

__all__ = ["ExpansionSettings", "QueryExpanded", "augment_database", "expand_queries", "index_search_settings",
           "search_entry"]


@dataclass(frozen=True)
class ExpansionSettings:
    """``n`` neighbours (0: off) weighted by similarity^``alpha``; what an index manifest's ``search`` entry
    records for query expansion (``query_expansion``) and database-side augmentation (``dba``)."""

    n: int = 0
    alpha: float = 3.0

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"neighbours n must be an integer >= 0, got {self.n!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")

    @property
    def on(self) -> bool:
        return self.n > 0

    def to_dict(self) -> dict:
        return {"n": self.n, "alpha": float(self.alpha)}

    @classmethod
    def from_dict(cls, d: dict | None, where: str) -> "ExpansionSettings":
        if not d:
            return cls()
        if not isinstance(d, dict) or set(d) - {"n", "alpha"}:
            raise ValueError(f"{where}: expected {{n, alpha}}, got {d!r}")
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


def search_entry(query_expansion: ExpansionSettings, dba: ExpansionSettings) -> dict:
    """The manifest's ``search`` entry: how the index is searched (query expansion) and how its vectors were
    made (database-side augmentation), both ``{n, alpha}`` (n = 0: off)."""
    return {"query_expansion": query_expansion.to_dict(), "dba": dba.to_dict()}


def index_search_settings(layout) -> dict[str, ExpansionSettings]:
    """``{"query_expansion": ..., "dba": ...}`` from an index's manifest (off when it records none)."""
    entry = (layout.manifest.extra.get("search") if layout.manifest else None) or {}
    if not isinstance(entry, dict):
        raise ValueError(f"index manifest: 'search' must be a mapping, got {entry!r}")
    return {key: ExpansionSettings.from_dict(entry.get(key), f"index manifest search.{key}")
            for key in ("query_expansion", "dba")}


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def expand_queries(queries: np.ndarray, neighbours: np.ndarray, alpha: float,
                   valid: np.ndarray | None = None) -> np.ndarray:
    """``queries (q, d)`` and their ``neighbours (q, n, d)`` -> unit ``(q, d)`` float32: each query plus its
    neighbours weighted by ``max(cosine, 0)^alpha`` (``valid (q, n)`` bool masks neighbours out)."""
    q = _unit(np.asarray(queries, np.float32))
    v = _unit(np.asarray(neighbours, np.float32).reshape(len(q), -1, q.shape[1]))
    sims = np.einsum("qd,qnd->qn", q, v)
    # max(s, 0)^alpha, with 0 for s <= 0 also when alpha = 0 (NumPy's 0**0 is 1)
    weights = np.where(sims > 0, np.maximum(sims, 0.0) ** np.float32(alpha), 0.0)
    if valid is not None:
        weights = np.where(valid, weights, 0.0)
    return _unit(q + np.einsum("qn,qnd->qd", weights.astype(np.float32), v)).astype(np.float32)


@STAGES.register("query_expansion", params=(("n", int), ("alpha", float)), required=1, alias="qe")
class QueryExpanded:
    """``base`` (any index) searched twice: the query's top ``n`` rows expand it (:func:`expand_queries`), and
    the expanded query's answer is the stage's. The serving engine runs this class too, over each request's
    retrieval (``ray_sbir.serving.engine.RequestIndex``)."""

    def __init__(self, base, n: int, alpha: float = ExpansionSettings.alpha):
        self.settings = ExpansionSettings(int(n), float(alpha))
        if not self.settings.on:
            raise ValueError("query expansion needs n >= 1 neighbours")
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def expand(self, queries: Any, allowed: Any = None) -> np.ndarray:
        """The expanded queries; with ``allowed`` (a row mask) the neighbours come from those rows only."""
        q = np.asarray(queries, np.float32)
        _, rows = filtered_search(self.base, q, self.settings.n, allowed)
        if rows.shape[1] == 0:  # no row allowed: nothing to expand with
            return expand_queries(q, np.zeros((len(q), 0, q.shape[1]), np.float32), self.settings.alpha)
        neighbours = self.base.vectors(rows.reshape(-1)).reshape(len(q), rows.shape[1], -1)
        return expand_queries(q, neighbours, self.settings.alpha)

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return filtered_search(self.base, self.expand(queries, allowed), k, allowed)

    def vectors(self, rows: Any) -> np.ndarray:
        return self.base.vectors(rows)


def augment_database(index, embeddings: np.ndarray, settings: ExpansionSettings, *, offset: int = 0,
                     batch_size: int = 1024) -> np.ndarray:
    """Database-side augmentation of ``embeddings`` (global rows ``offset..``, all held by ``index``, which
    ranks the whole gallery): each row plus its ``settings.n`` nearest other rows, weighted as in
    :func:`expand_queries`. Returns unit float32 rows, same shape. The neighbours are the original vectors (the
    index is not updated while it is read)."""
    x = np.array(embeddings, np.float32)  # a writable copy: rows read from Parquet are read-only views
    n = settings.n
    out = np.empty((len(x), x.shape[1]), np.float32)
    t0 = time.perf_counter()
    for a in range(0, len(x), batch_size):
        q = x[a:a + batch_size]
        _, rows = index.search(q, n + 1)
        not_self = rows != (offset + a + np.arange(len(q)))[:, None]
        # Each row's first n neighbours other than itself (itself is usually first; ties may move it).
        pick = np.argsort(~not_self, axis=1, kind="stable")[:, :n]
        chosen = np.take_along_axis(rows, pick, 1)
        valid = np.take_along_axis(not_self, pick, 1)
        neighbours = index.vectors(chosen.reshape(-1)).reshape(len(q), chosen.shape[1], -1)
        out[a:a + len(q)] = expand_queries(q, neighbours, settings.alpha, valid)
    logger.info("database-side augmentation of %d rows (n=%d, alpha=%g) in %.1f s", len(x), n, settings.alpha,
                time.perf_counter() - t0)
    return out
