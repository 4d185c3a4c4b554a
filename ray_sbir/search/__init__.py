"""Exact search over a gallery's embeddings (plain PyTorch/NumPy; the gallery format is :mod:`ray_sbir.index`'s).

Modules
    ``exact``    :class:`ExactShard`: one contiguous slice on a device, exact top-``k`` by inner product (scan
                 strategies ``filter``, ``direct``, ``topk``; see its docstring)
    ``topk``     :func:`exact_topk` and :func:`merge_topk`: top-``k`` selection with the tie rule
    ``sharded``  :func:`shard_slices`, :class:`ShardedIndex` (split, query every shard, merge), :class:`SearchResult`

Ranking contract (the same as :func:`ray_sbir.eval.metrics.top_k` and :mod:`ray_sbir.search.hamming`'s): scores are inner
products, sorted descending; equal scores are ordered by lower global row index, so every answer is
deterministic and shard-count independent. A Serve deployment gives each replica one :class:`ExactShard` (its
slice from :func:`shard_slices`) and merges the replicas' answers with :func:`merge_topk`.
"""

from ray_sbir.search.exact import ExactShard, storage_itemsize
from ray_sbir.search.sharded import SearchResult, ShardedIndex, shard_slices
from ray_sbir.search.topk import exact_topk, merge_topk

__all__ = ["ExactShard", "SearchResult", "ShardedIndex", "exact_topk", "merge_topk", "shard_slices",
           "storage_itemsize"]
