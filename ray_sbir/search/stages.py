"""Search stages that compose with any index of :mod:`ray_sbir.search.open` (FAISS's ``IndexRefine`` idea:
a stage wraps an index and answers the same ``search``).

:class:`Reranked` -- the learned re-ranker (Garcia & Vogiatzis 2019, :mod:`ray_sbir.search.rerank`): the base
index's top ``candidates`` rows per query are re-scored by a similarity head on (query, stored vector) pairs
and ordered by that score, descending, ties by lower row; rows the base ranks below ``candidates`` follow in
the base's order with the base's scores (:func:`rerank_candidates`). The serving engine runs these classes
themselves over each request's retrieval (which fetches the candidates' vectors from its shard replicas), so
offline evaluation and the HTTP endpoint rank alike.

:class:`Rescored` -- two-stage search for hash codes: the base (Hamming) index's top ``candidates`` re-scored by
the inner product of the stored float relaxation (:class:`InnerProduct`), the same arithmetic. Applied once over
the merged candidates of all shards, so the answer does not depend on the number of shards.

Adding a stage: one module defining a class ``(base, **options)`` with ``search`` and ``vectors``, decorated
``@STAGES.register("name", params=(("n", int), ...), required=1)`` (its parameters in the pipeline spec's
grammar, in order; optionally ``alias=``, and ``needs="codes"`` or ``"scorer"``) and imported in
``ray_sbir/search/__init__.py``; :func:`create_stage` builds it, the pipeline spec parses it, evaluation and
both serving modes run it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ray_sbir.registry import Registry

__all__ = ["STAGES", "InnerProduct", "Rescored", "Reranked", "create_stage", "filtered_search", "rerank_candidates"]

STAGES: Registry = Registry("search stage", key="search.stages", package="ray_sbir.search")


def create_stage(name: str, base, **options):
    """The stage registered as ``name`` wrapping ``base`` (any index of :mod:`ray_sbir.search`)."""
    return STAGES.get(name)(base, **options)


def rerank_candidates(scorer, queries: np.ndarray, scores: np.ndarray, rows: np.ndarray, vectors: np.ndarray,
                      candidates: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``queries (q, d)``, the base's ``scores``/``rows`` ``(q, m)`` and the stored ``vectors (q, c, d)`` of its
    first ``c = min(candidates, m)`` rows -> ``(scores, rows)``, each ``(q, min(k, m))``."""
    c = min(int(candidates), rows.shape[1])
    if c == 0:
        return scores[:, :k], rows[:, :k]
    learned = scorer.score_pairs(torch.as_tensor(np.asarray(queries, np.float32)),
                                 torch.as_tensor(np.asarray(vectors, np.float32))).cpu().numpy().astype(np.float32)
    order = np.lexsort((rows[:, :c], -learned), axis=1)
    head_rows = np.take_along_axis(rows[:, :c], order, 1)
    out_scores = np.concatenate([np.take_along_axis(learned, order, 1), scores[:, c:]], 1)[:, :k]
    out_rows = np.concatenate([head_rows, rows[:, c:]], 1)[:, :k]
    return out_scores, out_rows


def filtered_search(index, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(queries, k)``, given ``allowed`` (a row mask) only when there is one: an index built
    elsewhere (a bench's, a user's) may not take a filter."""
    return index.search(queries, k) if allowed is None else index.search(queries, k, allowed)


@STAGES.register("rerank", params=(("candidates", int),), required=1, needs="scorer")
class Reranked:
    """``base`` (any index with ``search`` and ``vectors``) re-ranked by ``scorer`` (``score_pairs``)."""

    def __init__(self, base, scorer, candidates: int):
        if candidates < 1:
            raise ValueError(f"rerank candidates must be >= 1, got {candidates}")
        self.base, self.scorer, self.candidates = base, scorer, int(candidates)

    def __len__(self) -> int:
        return len(self.base)

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, np.float32)
        scores, rows = filtered_search(self.base, q, max(k, self.candidates), allowed)
        c = min(self.candidates, rows.shape[1])
        vectors = self.base.vectors(rows[:, :c])
        return rerank_candidates(self.scorer, q, scores, rows, vectors, c, k)

    def vectors(self, rows: Any) -> np.ndarray:
        return self.base.vectors(rows)


class InnerProduct:
    """The scorer of :class:`Rescored`: the inner product of the query and each candidate's stored vector."""

    def describe(self) -> dict:
        return {"score": "inner_product"}

    def score_pairs(self, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.einsum("qd,qcd->qc", queries.float(), items.float())


@STAGES.register("rescore", params=(("candidates", int),), required=1, needs="codes")
class Rescored(Reranked):
    """``base``'s top ``candidates`` re-scored by the inner product of their stored vectors (two-stage Hamming
    search: codes find the neighbourhood cheaply, the floats order it)."""

    def __init__(self, base, candidates: int):
        super().__init__(base, InnerProduct(), candidates)
