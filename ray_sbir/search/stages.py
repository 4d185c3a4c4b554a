"""Search stages that compose with any index of :mod:`ray_sbir.search.open` (FAISS's ``IndexRefine`` idea:
a stage wraps an index and answers the same ``search``).

:class:`Reranked` -- the learned re-ranker (Garcia & Vogiatzis 2019, :mod:`ray_sbir.search.rerank`): the base
index's top ``candidates`` rows per query are re-scored by a similarity head on (query, stored vector) pairs
and ordered by that score, descending, ties by lower row; rows the base ranks below ``candidates`` follow in
the base's order with the base's scores. :func:`rerank_candidates` is the stage's arithmetic, shared with the
serving engine (which fetches the candidates' vectors from its shard replicas), so offline evaluation and the
HTTP endpoint rank alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["Reranked", "rerank_candidates"]


def rerank_candidates(scorer, queries: np.ndarray, scores: np.ndarray, rows: np.ndarray, vectors: np.ndarray,
                      candidates: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``queries (q, d)``, the base's ``scores``/``rows`` ``(q, m)`` and the stored ``vectors (q, c, d)`` of its
    first ``c = min(candidates, m)`` rows -> ``(scores, rows, base scores)``, each ``(q, min(k, m))``."""
    c = min(int(candidates), rows.shape[1])
    if c == 0:
        return scores[:, :k], rows[:, :k], scores[:, :k]
    learned = scorer.score_pairs(torch.as_tensor(np.asarray(queries, np.float32)),
                                 torch.as_tensor(np.asarray(vectors, np.float32))).cpu().numpy().astype(np.float32)
    order = np.lexsort((rows[:, :c], -learned), axis=1)
    head_rows = np.take_along_axis(rows[:, :c], order, 1)
    out_scores = np.concatenate([np.take_along_axis(learned, order, 1), scores[:, c:]], 1)[:, :k]
    out_rows = np.concatenate([head_rows, rows[:, c:]], 1)[:, :k]
    first = np.concatenate([np.take_along_axis(scores[:, :c], order, 1), scores[:, c:]], 1)[:, :k]
    return out_scores, out_rows, first


class Reranked:
    """``base`` (any index with ``search`` and ``vectors``) re-ranked by ``scorer`` (``score_pairs``)."""

    def __init__(self, base, scorer, candidates: int):
        if candidates < 1:
            raise ValueError(f"rerank candidates must be >= 1, got {candidates}")
        self.base, self.scorer, self.candidates = base, scorer, int(candidates)

    def __len__(self) -> int:
        return len(self.base)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, np.float32)
        scores, rows = self.base.search(q, max(k, self.candidates))
        c = min(self.candidates, rows.shape[1])
        vectors = self.base.vectors(rows[:, :c])
        out_scores, out_rows, _ = rerank_candidates(self.scorer, q, scores, rows, vectors, c, k)
        return out_scores, out_rows

    def vectors(self, rows: Any) -> np.ndarray:
        return self.base.vectors(rows)
