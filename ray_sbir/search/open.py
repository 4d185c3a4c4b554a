"""One search interface for every kind of index, as FAISS puts flat and binary indexes behind one ``search``.

Every index answers ``search(queries (q, d) float32, k) -> (scores float32 (q, k'), global rows int64 (q, k'))``,
``k' = min(k, n)``, scores descending, equal scores by lower row (:mod:`ray_sbir.search.topk`'s rule), restricted
to the rows of a boolean ``allowed`` mask when one is given (filtered search, :mod:`ray_sbir.search.filters`:
applied inside each kind's scan, so ``k' = min(k, allowed rows)``), and
``vectors(rows) -> (m, d)`` float32, the stored embeddings a later stage re-scores. The queries are what the
model's ``encode`` returns, for every kind. Kinds (decided by :class:`~ray_sbir.search.kinds.EmbeddingKind`):

* float: :class:`~ray_sbir.search.exact.ExactShard`, exact inner product on CPU or CUDA;
* binary: :class:`~ray_sbir.search.hamming.HammingScores`, Hamming distance on the packed codes (score
  ``bits - 2 * distance``); two-stage with ``hamming_candidates`` > 0: the :class:`~ray_sbir.search.stages.Rescored`
  stage over the (merged) Hamming index re-scores that many nearest rows by their stored float relaxation;
* float with sign codes (:mod:`ray_sbir.search.sign_codes`): the same Hamming index over the codes of a random
  rotation (queries coded alike), two-stage by default (the manifest's ``candidates``), re-scored by the floats.

Shards of any kind merge with :class:`~ray_sbir.search.sharded.MergedShards` (Serve merges its shard replicas'
answers with the same :func:`~ray_sbir.search.topk.merge_topk`), and stages such as
:class:`~ray_sbir.search.stages.Reranked` wrap any index. :func:`open_index` opens rows of an index folder from
its manifest; :func:`build_index` builds one from arrays in memory (validation during training).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ray_sbir.search.kinds import EmbeddingKind, index_kind

__all__ = ["SearchIndex", "build_index", "index_spec", "open_index"]


class SearchIndex(Protocol):
    def __len__(self) -> int: ...

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]: ...

    def vectors(self, rows: Any) -> np.ndarray: ...


def build_index(kind: EmbeddingKind, embeddings: np.ndarray, *, codes: np.ndarray | None = None, offset: int = 0,
                num_shards: int = 1, device: Any = "cpu", dtype: Any = None, num_threads: int | None = None,
                hamming_candidates: int = 0, keep_floats: bool = True) -> SearchIndex:
    """An index over ``embeddings`` (global rows from ``offset``) of ``kind``; coded kinds use ``codes`` (packed,
    computed from the embeddings when not given) and keep their floats for re-scoring in ``dtype`` float16 when
    asked (else as given). ``num_shards`` > 1: contiguous shards, merged."""
    keep_floats = keep_floats or bool(hamming_candidates) or not kind.binary  # sign codes re-score by floats
    if num_shards > 1:
        from ray_sbir.search.sharded import MergedShards, shard_slices

        index = MergedShards([
            build_index(kind, embeddings[sl], codes=None if codes is None else codes[sl], offset=offset + sl.start,
                        device=device, dtype=dtype, num_threads=num_threads, keep_floats=keep_floats)
            for sl in shard_slices(len(embeddings), num_shards) if sl.stop > sl.start])
    elif kind.coded:
        from ray_sbir.search.hamming import HammingScores, HammingShard

        codes = kind.codes(embeddings) if codes is None else codes
        shard = HammingShard(codes, kind.bits, offset=offset, device=device, num_threads=num_threads)
        floats = None
        if keep_floats:  # held for re-scoring; float16 halves them (the rows are converted when scored)
            floats = embeddings.astype(_floats_dtype(kind, dtype, device), copy=False)
        index = HammingScores(shard, floats, encode=kind.codes)
    else:
        from ray_sbir.search.exact import ExactShard

        return ExactShard(embeddings, offset=offset, device=device, dtype=dtype, num_threads=num_threads)
    return _two_stage(index, kind, hamming_candidates)


def _floats_dtype(kind: EmbeddingKind, dtype: Any, device: Any) -> type:
    """The numpy dtype an index keeps its float rows in: a float index's storage (float16 on a GPU by default);
    a coded index's re-scoring floats, float16 only when ``dtype`` asks (its Hamming scan runs on the CPU)."""
    from ray_sbir.search.exact import rows_dtype

    if kind.coded:
        return np.float32 if dtype is None else rows_dtype(dtype, "cpu")
    return rows_dtype(dtype, device)


def _two_stage(index, kind: EmbeddingKind, hamming_candidates: int):
    """A coded index with ``hamming_candidates`` > 0 is two-stage: the pipeline ``hamming > rescore:N`` over all
    its shards (the spec's own builder, as :func:`open_index` nests every spec)."""
    if not (kind.coded and hamming_candidates):
        return index
    from ray_sbir.search.pipeline import build_pipeline, default_spec

    return build_pipeline(default_spec(kind, rescore_candidates=hamming_candidates), index)


def index_spec(layout, spec: Any = None, *, hamming_candidates: int | None = None, expand: bool = True,
               where: str = "search spec"):
    """The pipeline (a ``SearchSpec``) an index is ranked by, checked against its kind: ``spec`` (string, list or
    ``SearchSpec``), else its own (:func:`~ray_sbir.search.pipeline.default_spec` from its manifest:
    ``hamming_candidates`` as :func:`open_index` takes it, and its query expansion unless ``expand`` is False)."""
    from ray_sbir.search.expansion import ExpansionSettings, index_search_settings
    from ray_sbir.search.pipeline import SearchSpec, default_spec

    kind = index_kind(layout)
    if spec is None:
        qe = index_search_settings(layout)["query_expansion"] if expand else ExpansionSettings()
        spec = default_spec(kind, qe, hamming_candidates)
    spec = SearchSpec.parse(spec, where)
    spec.check(kind, where)
    return spec


def open_index(uri: str, start: int = 0, stop: int | None = None, *, layout=None, device: Any = "cpu",
               dtype: Any = None, num_threads: int | None = None, hamming_candidates: int | None = None,
               keep_floats: bool = False, expand: bool = True, spec: Any = None, scorer: Any = None
               ) -> SearchIndex:
    """Rows ``start:stop`` (default: all) of the index folder ``uri``, ranked by the pipeline ``spec``
    (:mod:`ray_sbir.search.pipeline`: a string, list or ``SearchSpec``; ``scorer`` for a ``rerank`` stage), or
    when None as its manifest says (:func:`~ray_sbir.search.pipeline.default_spec`): its kind, two-stage when its
    codes say so (``hamming_candidates``: None, the manifest's re-scoring; 0, Hamming alone, as a serving shard
    opens: the engine re-scores over the merged shards; n, that many), and with ``expand`` the query expansion its
    ``search`` entry records (:mod:`ray_sbir.search.expansion`; a serving shard opens with ``expand=False``: the
    engine expands over the merged shards). Float rows of a hashing model's index are read only when needed
    (two-stage, query expansion, or ``keep_floats`` for a re-rank stage)."""
    from ray_sbir.search.pipeline import build_pipeline

    import pyarrow as pa

    from ray_sbir.index import index_layout, read_code_rows, read_embedding_rows

    layout = layout or index_layout(uri)
    stop = layout.count if stop is None else stop
    kind = index_kind(layout)
    spec = index_spec(layout, spec, hamming_candidates=hamming_candidates, expand=expand,
                      where=f"index {uri}: search spec")
    keep_floats = keep_floats or bool(spec.stages)  # every stage reads the stored floats
    codes = read_code_rows(uri, layout, start, stop) if kind.coded else None
    floats_needed = not kind.binary or keep_floats
    emb = (read_embedding_rows(uri, layout, start, stop, _floats_dtype(kind, dtype, device)) if floats_needed
           else np.zeros((stop - start, 0), np.float32))
    index = build_index(kind, emb, codes=codes, offset=start, device=device, dtype=dtype, num_threads=num_threads,
                        keep_floats=bool(keep_floats))
    del emb
    # Arrow keeps the Parquet read buffers pooled: without this a 1M x 256 shard replica held 2.3 GB of
    # RSS for 512 MB of embeddings (bench/bench_serving.py).
    pa.default_memory_pool().release_unused()
    return build_pipeline(spec, index, scorer=scorer)
