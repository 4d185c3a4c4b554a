"""Search over a gallery's embeddings: one interface for every kind of index (plain PyTorch/NumPy; the gallery
format is :mod:`ray_sbir.index`'s).

Modules
    ``kinds``    :class:`EmbeddingKind`: float or binary, and how each scores -- decided once, here
    ``open``     :func:`open_index` (an index folder, from its manifest) and :func:`build_index` (arrays): every
                 kind behind ``search(queries, k) -> (scores, rows)`` and ``vectors(rows)``
    ``exact``    :class:`ExactShard`: float rows on a device, exact top-``k`` by inner product (scan strategies
                 ``filter``, ``direct``, ``topk``; see its docstring)
    ``hamming``  packed binary codes, exact Hamming top-``k`` (:class:`HammingShard`), and
                 :class:`HammingScores`, the binary kind behind the common interface (optionally two-stage)
    ``sharded``  :func:`shard_slices`, :class:`MergedShards` (shards of any kind, merged),
                 :class:`ShardedIndex` (a float gallery with its ids, labels and uris)
    ``stages``   stages wrapping any index: :class:`Rescored` (two-stage Hamming), :class:`Reranked` (learned)
    ``expansion`` alpha query expansion (:class:`QueryExpanded`, a stage) and database-side augmentation
                 (:func:`augment_database`), as an index's manifest records them
    ``rerank``   loading a re-rank checkpoint's similarity head
    ``topk``     :func:`exact_topk` and :func:`merge_topk`: top-``k`` selection with the tie rule

Ranking contract: scores sorted descending (a binary index scores ``bits - 2 * Hamming distance``); equal
scores are ordered by lower global row index, so every answer is deterministic and shard-count independent.
A Serve deployment gives each replica one shard (its slice from :func:`shard_slices`, opened with
:func:`open_index`) and merges the replicas' answers with :func:`merge_topk`; offline evaluation
(:func:`ray_sbir.eval.metrics.retrieval_metrics`) ranks through the same indexes and stages.
"""

from ray_sbir.search.expansion import ExpansionSettings, QueryExpanded, augment_database, expand_queries
from ray_sbir.search.exact import ExactShard, storage_itemsize
from ray_sbir.search.kinds import EmbeddingKind, encode_entry, index_flip_average, index_flip_queries, index_kind
from ray_sbir.search.open import SearchIndex, build_index, open_index
from ray_sbir.search.sharded import MergedShards, SearchResult, ShardedIndex, shard_slices
from ray_sbir.search.stages import STAGES, InnerProduct, Rescored, Reranked, create_stage, rerank_candidates
from ray_sbir.search.topk import exact_topk, merge_topk

__all__ = ["ExpansionSettings", "QueryExpanded", "augment_database", "expand_queries", "STAGES", "create_stage", "InnerProduct", "Rescored", "EmbeddingKind", "ExactShard", "MergedShards", "Reranked", "SearchIndex", "SearchResult", "ShardedIndex",
           "build_index", "encode_entry", "exact_topk", "index_flip_average", "index_flip_queries", "index_kind", "merge_topk", "open_index", "rerank_candidates",
           "shard_slices", "storage_itemsize"]
