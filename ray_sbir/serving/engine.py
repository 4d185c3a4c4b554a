"""The search engine both serving modes run: retrieve -> stages (rescore, query expansion, re-rank) -> results. Plain Python and
NumPy/torch, no Serve imports: the deployments only decide where each stage lives.

Stages
    *Retrieval* (a :class:`Retrieval`): a sketch image in, the query embedding and the first stage's top
    ``k`` ``(scores, global rows)`` out, ranked by the index's own scoring (inner product of float embeddings,
    or ``bits - 2 * Hamming distance`` of hash codes), plus ``vectors(rows)``: the stored embeddings of given
    rows (what the later stages score). :class:`LocalRetrieval` holds the encoder and the whole gallery in
    the calling process (the colocated mode; requests share forward passes and scans through a
    :class:`~ray_sbir.serving.batching.GreedyBatcher`); :class:`ShardedRetrieval` calls an encoder and shard
    deployments through handles and merges the shards' answers with :func:`ray_sbir.search.merge_topk`.
    *Rescore* (binary indexes with ``hamming_candidates``) and *re-rank* (a ``rerank`` checkpoint), each a
    :class:`RerankStage`: the top candidates of the merged answer re-scored and reordered by
    :func:`ray_sbir.search.rerank_candidates`, the arithmetic of the offline stages (:mod:`ray_sbir.search.stages`).
    *Query expansion* (:class:`ExpansionStage`, when the index's manifest records ``search.query_expansion``):
    the current top ``n`` rows' stored vectors expand the query (:func:`ray_sbir.search.expand_queries`), the
    retrieval runs again with it and the stages before it rank the new answer; later stages score the user's
    own query (as :class:`~ray_sbir.search.QueryExpanded` nests offline).
    *Results* (:meth:`SearchEngine.results`): rows -> items (id, class, QuickDraw details, image URL).

The stages come from one pipeline spec (:mod:`ray_sbir.search.pipeline`: the serve config's ``search``, else
the index's own, :func:`serving_spec`), the spec offline evaluation nests too (:func:`engine_stages`). A new
search stage is one offline stage in :mod:`ray_sbir.search.stages` registered with its parameters in the
pipeline, and, to serve it, its case in :func:`engine_stages` (a :class:`RerankStage` or a class with the same
``apply``); both modes run it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol
from urllib.parse import quote

import numpy as np

from ray_sbir.index import GalleryItems, IndexLayout

logger = logging.getLogger("ray_sbir.serving")

__all__ = ["Candidates", "ExpansionStage", "LocalRetrieval", "RerankStage", "Retrieval", "SearchEngine", "SearchOutcome",
           "ShardedRetrieval", "check_index_dim", "encode_sketches", "engine_stages", "load_rerank_stage",
           "load_sketch_encoder", "open_shard", "rescore_stage", "scoring_of", "serving_spec"]


# ------------------------------------------------------------------------------------ model and index


def _device(use_gpu: bool):
    from ray_sbir.models.base import device_for  # torch loads only in replicas that run a model or a shard

    return device_for(use_gpu)


def load_sketch_encoder(checkpoint: str, use_gpu: bool, torch_threads: int):
    """``(model, checkpoint meta, device)`` for a serving replica: the model of any task, reduced to its
    sketch side (the photo encoder's weights are dropped)."""
    import torch

    from ray_sbir.checkpoint import load_model

    torch.set_num_threads(torch_threads)
    device = _device(use_gpu)
    model, meta = load_model(checkpoint, device)
    return model.keep_only("sketch"), meta, device


def encode_sketches(model, images: np.ndarray, device, flip_average: bool = False) -> np.ndarray:
    """``uint8 [B, S, S]`` sketch images -> ``float32 [B, D]`` embeddings, with the mirror average when the
    gallery's manifest records it (:func:`ray_sbir.search.index_flip_average`), as ``ray-sbir evaluate`` encodes."""
    import torch

    from ray_sbir.data.images import to_model_input
    from ray_sbir.models.inference import encode

    with torch.inference_mode():
        x = to_model_input(torch.from_numpy(images), device)
        return encode(model, x, "sketch", flip_average=flip_average).float().cpu().numpy()


def open_shard(index: str, layout: IndexLayout, start: int, stop: int, *, use_gpu: bool, dtype: str | None,
               torch_threads: int, keep_floats: bool = False):
    """Rows ``start:stop`` of the index, as :func:`ray_sbir.search.open_index` opens them for every kind, on
    this replica's device, ranking by its own scores alone (Hamming distance for a coded index: the engine
    re-scores after the shards' answers are merged). ``keep_floats`` keeps a hashing model's float rows too (for
    the rescore and re-rank stages)."""
    from ray_sbir.search import open_index

    return open_index(index, start, stop, layout=layout, device=_device(use_gpu), dtype=dtype,
                      num_threads=torch_threads, hamming_candidates=0, keep_floats=keep_floats, expand=False)


def check_index_dim(index: str, index_dim: int, checkpoint: str, embed_dim: int) -> None:
    """The index must hold the embeddings the serving checkpoint makes."""
    if index_dim != embed_dim:
        raise ValueError(f"index {index} holds {index_dim}-d embeddings but checkpoint {checkpoint} makes "
                         f"{embed_dim}-d ones: embed the gallery with this checkpoint")


def scoring_of(layout: IndexLayout, spec=None) -> dict:
    """How the retrieval stage scores, as ``/info`` reports it (with the re-scoring of the pipeline ``spec``,
    default: the index's own)."""
    from ray_sbir.search import index_kind
    from ray_sbir.search.open import index_spec

    return (spec or index_spec(layout)).scoring(index_kind(layout))


def serving_spec(cfg, layout: IndexLayout):
    """The pipeline the endpoint runs (:mod:`ray_sbir.search.pipeline`): the serve config's ``search``, else the
    index's own (its codes' re-scoring, or ``hamming_candidates`` when > 0; the query expansion its manifest
    records) followed by ``rerank:rerank_k`` when a re-rank checkpoint is given; checked against the index's kind."""
    from ray_sbir.search.open import index_spec
    from ray_sbir.search.pipeline import SearchSpec, StageSpec

    spec = index_spec(layout, cfg.search or None, hamming_candidates=cfg.hamming_candidates or None,
                      where=f"index {cfg.index}: search")
    if not cfg.search and cfg.rerank:
        spec = SearchSpec(spec.retrieval, (*spec.stages, StageSpec("rerank", (int(cfg.rerank_k),))))
    if spec.stage("rerank") and not cfg.rerank:
        raise ValueError(f"search {spec.to_string()!r}: rerank needs a train.task=rerank checkpoint (--rerank)")
    return spec


def engine_stages(spec, cfg, index_dim: int, use_gpu: bool = False) -> list:
    """The engine's stages of the pipeline ``spec``, in its order: what :func:`ray_sbir.search.pipeline.build_pipeline`
    nests offline, each applied over the merged shards."""
    stages = []
    for stage in spec.stages:
        options = stage.options()
        if stage.name == "rescore":
            stages.append(rescore_stage(options["candidates"]))
        elif stage.name == "query_expansion":
            stages.append(ExpansionStage(**options))
        elif stage.name == "rerank":
            stages.append(load_rerank_stage(cfg.rerank, options["candidates"], cfg.index, index_dim, use_gpu))
        else:  # a stage registered offline but not servable yet: said before anything is served
            raise ValueError(f"search {spec.to_string()!r}: the endpoint cannot run stage {stage.name!r}")
    return stages


# ------------------------------------------------------------------------------------------- retrieval


@dataclass
class Candidates:
    """The first stage's answer for one query."""

    query: np.ndarray  # (d,) float32 query embedding
    scores: np.ndarray  # (m,) float32, descending
    rows: np.ndarray  # (m,) int64 global rows


class Retrieval(Protocol):
    mode: str

    async def retrieve(self, sketch: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates: ...

    async def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates: ...

    async def vectors(self, rows: np.ndarray) -> np.ndarray: ...


class LocalRetrieval:
    """Encoder and whole gallery in this process (the colocated mode), batched by a
    :class:`~ray_sbir.serving.batching.GreedyBatcher`: one forward pass and one scan per batch, no batch timer."""

    mode = "colocated"

    def __init__(self, checkpoint: str, index: str, layout: IndexLayout, *, use_gpu: bool = False,
                 dtype: str | None = None, torch_threads: int = 1, max_batch_size: int = 16,
                 keep_floats: bool = False):
        from ray_sbir.search import index_flip_average
        from ray_sbir.serving.batching import GreedyBatcher

        self.encoder, _, self.device = load_sketch_encoder(checkpoint, use_gpu, torch_threads)
        self.flip_average = index_flip_average(layout)
        self.shard = open_shard(index, layout, 0, layout.count, use_gpu=use_gpu, dtype=dtype,
                                torch_threads=torch_threads, keep_floats=keep_floats)
        self.slices = [(0, layout.count)]
        self.batcher = GreedyBatcher(self._run, max_batch_size)

    async def retrieve(self, sketch: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates:
        if allowed is None:
            return await self.batcher((sketch, k))
        # A filtered query cannot share a batch's scan (each has its own rows): encoded and searched alone.
        emb = await asyncio.to_thread(encode_sketches, self.encoder, sketch[None], self.device, self.flip_average)
        return await self.search(emb[0], k, allowed)

    async def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates:
        """The gallery's top ``k`` for a query embedding (query expansion's second search), among the
        ``allowed`` rows when given."""
        q = np.asarray(query, np.float32)
        scores, rows = await asyncio.to_thread(self.shard.search, q[None], k, allowed)
        return Candidates(q, scores[0], rows[0])

    async def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.shard.vectors(rows)

    def _run(self, batch: list[tuple[np.ndarray, int]]) -> list[Candidates]:
        emb = encode_sketches(self.encoder, np.stack([image for image, _ in batch]), self.device, self.flip_average)
        scores, rows = self.shard.search(emb, max(k for _, k in batch))
        return [Candidates(emb[i], scores[i, :k], rows[i, :k]) for i, (_, k) in enumerate(batch)]

    def stats(self) -> dict:
        return {**self.batcher.stats(), "device": str(self.device), "count": self.shard.n, "pid": os.getpid()}


Call = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]


class ShardedRetrieval:
    """An encoder deployment and one deployment per contiguous shard, reached through handles (``encoder``:
    ``remote(image) -> (d,)``; each shard: ``search.remote(query, k)`` and ``vectors.remote(rows)``).
    ``call(what, make)`` awaits one remote call (the ingress retries it while a replica is replaced)."""

    mode = "sharded"

    def __init__(self, encoder, shards: list, slices: list[tuple[int, int]], call: Call):
        if len(shards) != len(slices):
            raise ValueError(f"{len(shards)} shard handles for {len(slices)} slices")
        self.encoder, self.shards, self.slices, self.call = encoder, list(shards), slices, call

    async def retrieve(self, sketch: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates:
        emb = await self.call("the sketch encoder", lambda: self.encoder.remote(sketch))
        return await self.search(emb, k, allowed)

    async def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Candidates:
        """Every shard's top ``k`` for a query embedding, merged; with ``allowed`` (a mask of all the rows) each
        shard gets its own slice of it, packed to a bit per row."""
        from ray_sbir.search import merge_topk

        q = np.asarray(query, np.float32)
        bits = [None if allowed is None else np.packbits(allowed[a:b]) for a, b in self.slices]
        answers = await asyncio.gather(*(self.call(f"search shard {i}", lambda h=h, b=b: h.search.remote(q, k, b))
                                         for i, (h, b) in enumerate(zip(self.shards, bits))))
        scores, rows = merge_topk([(s[None, :], r[None, :]) for s, r in answers], k)
        return Candidates(q, scores[0], rows[0])

    async def vectors(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return np.zeros((0, 0), np.float32)
        owner = np.searchsorted([stop for _, stop in self.slices], rows, side="right")
        shards = np.unique(owner).tolist()
        parts = await asyncio.gather(*(
            self.call(f"search shard {i}", lambda i=i: self.shards[i].vectors.remote(rows[owner == i]))
            for i in shards))
        out = np.empty((len(rows), np.shape(parts[0])[1]), np.float32)
        for i, part in zip(shards, parts):
            out[owner == i] = part
        return out


# -------------------------------------------------------------------------------------------- re-rank


class RerankStage:
    """Re-scores the previous stage's top ``candidates`` with ``model`` and orders them by that score (ties by
    lower row); rows below ``candidates`` keep their order. ``model.score_pairs(queries (q, d), items (q, c, d))
    -> (q, c)``: a learned similarity (:class:`~ray_sbir.search.rerank.SimilarityScorer`, stage ``rerank``) or
    the inner product of the stored floats (:class:`~ray_sbir.search.InnerProduct`, stage ``rescore``: two-stage
    Hamming search, applied here over the merged candidates of every shard, as offline)."""

    def __init__(self, model, candidates: int, checkpoint: str = "", name: str = "rerank"):
        if candidates < 1:
            raise ValueError(f"{name} candidates must be >= 1, got {candidates}")
        self.model, self.candidates, self.checkpoint, self.name = model, int(candidates), checkpoint, name

    def describe(self) -> dict:
        out = {"stage": self.name, "candidates": self.candidates, **getattr(self.model, "describe", lambda: {})()}
        return {**out, "checkpoint": self.checkpoint} if self.checkpoint else out

    async def apply(self, cand: Candidates, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
        """``(scores, rows, first-stage scores)``: :func:`ray_sbir.search.rerank_candidates`, the arithmetic
        of the offline :class:`~ray_sbir.search.Reranked` stage, on this query's candidates."""
        from ray_sbir.search import rerank_candidates

        if len(cand.rows) == 0:
            return cand.scores, cand.rows, cand.scores
        c = min(self.candidates, len(cand.rows))
        scores, rows, first = await asyncio.to_thread(
            rerank_candidates, self.model, cand.query[None], cand.scores[None], cand.rows[None], vectors[None, :c],
            c, k)
        return scores[0], rows[0], first[0]


def load_rerank_stage(checkpoint: str, candidates: int, index: str, index_dim: int,
                      use_gpu: bool = False) -> RerankStage:
    """The re-rank stage of a ``train.task=rerank`` checkpoint, checked against the index's dimension;
    ``ValueError`` naming the checkpoint when it cannot serve."""
    from ray_sbir.search.rerank import load_similarity

    try:
        scorer = load_similarity(checkpoint, device=_device(use_gpu))
    except Exception as e:  # noqa: BLE001 - any failure to rebuild the head is reported in one sentence
        raise ValueError(f"rerank checkpoint {checkpoint} cannot be loaded: {type(e).__name__}: {e}") from None
    if scorer.embed_dim != index_dim:
        raise ValueError(f"rerank checkpoint {checkpoint} scores {scorer.embed_dim}-d embeddings but index "
                         f"{index} holds {index_dim}-d ones")
    return RerankStage(scorer, candidates, checkpoint)


def rescore_stage(hamming_candidates: int) -> RerankStage:
    """Two-stage search of a binary index: the Hamming candidates re-scored by their stored float relaxation."""
    from ray_sbir.search import InnerProduct

    return RerankStage(InnerProduct(), hamming_candidates, name="rescore")


class ExpansionStage:
    """Alpha query expansion (:class:`~ray_sbir.search.expansion.QueryExpanded`'s arithmetic): the current top
    ``n`` rows' stored vectors expand the query, and the retrieval runs again with it (every stage before this
    one is applied again to the new answer by the engine, as the offline stage wraps them)."""

    name = "query_expansion"

    def __init__(self, n: int, alpha: float | None = None):
        from ray_sbir.search.expansion import ExpansionSettings

        # alpha None: the default the offline stage has (ExpansionSettings.alpha)
        self.settings = ExpansionSettings(int(n), ExpansionSettings.alpha if alpha is None else float(alpha))
        self.candidates = self.settings.n

    def describe(self) -> dict:
        return {"stage": self.name, **self.settings.to_dict()}

    def expanded_query(self, cand: Candidates, vectors: np.ndarray) -> np.ndarray:
        from ray_sbir.search.expansion import expand_queries

        return expand_queries(cand.query[None], vectors[None], self.settings.alpha)[0]


# ------------------------------------------------------------------------------------------- pipeline


@dataclass
class SearchOutcome:
    scores: np.ndarray  # final scores (k',)
    rows: np.ndarray  # global rows (k',)
    first_scores: np.ndarray | None  # the retrieval stage's scores when re-ranked, else None
    timing: dict  # seconds per stage


class SearchEngine:
    """retrieve -> stages (rescore, query expansion, re-rank) -> results, the same in both modes."""

    def __init__(self, retrieval: Retrieval, items: GalleryItems, scoring: dict, stages: list = ()):
        self.retrieval, self.items, self.scoring, self.stages_ = retrieval, items, scoring, list(stages)

    def stages(self) -> list[dict]:
        """What ``/info`` reports: each stage in order."""
        out = [{"stage": "retrieve", "mode": self.retrieval.mode, "scoring": self.scoring}]
        return out + [stage.describe() for stage in self.stages_] + [{"stage": "results"}]

    async def search(self, sketch: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchOutcome:
        """``allowed``: a boolean mask of the gallery's rows (a search filter), applied in every retrieval."""
        t0 = time.perf_counter()
        m = max([k] + [st.candidates for st in self.stages_])
        cand = await self.retrieval.retrieve(sketch, m, allowed)
        timing = {"retrieve": time.perf_counter() - t0}
        if not self.stages_:
            return SearchOutcome(cand.scores[:k], cand.rows[:k], None, timing)
        cache: dict[int, np.ndarray] = {}  # stored vectors fetched for this request (stages share them)
        first = dict(zip(cand.rows.tolist(), cand.scores.tolist()))
        original, done = cand.query, []
        for stage in self.stages_:
            t = time.perf_counter()
            if isinstance(stage, ExpansionStage):
                top = cand.rows[:stage.candidates]
                query = stage.expanded_query(cand, await self._vectors(cache, top))
                cand = await self.retrieval.search(query, m, allowed)
                first = dict(zip(cand.rows.tolist(), cand.scores.tolist()))
                for prior in done:  # the offline stage wraps these: they rank the second answer too
                    cand = await self._apply(prior, cand, cache)
                # Stages after this one score the user's own query, as the stages wrapping it offline do.
                cand = Candidates(original, cand.scores, cand.rows)
            else:
                cand = await self._apply(stage, cand, cache)
            done.append(stage)
            timing[stage.name] = time.perf_counter() - t
        first_scores = np.array([first[int(r)] for r in cand.rows[:k]], np.float32)
        return SearchOutcome(cand.scores[:k], cand.rows[:k], first_scores, timing)

    async def _apply(self, stage: RerankStage, cand: Candidates, cache: dict) -> Candidates:
        vectors = await self._vectors(cache, cand.rows[:stage.candidates])
        scores, rows, _ = await stage.apply(cand, vectors, len(cand.rows))
        return Candidates(cand.query, scores, rows)

    async def _vectors(self, cache: dict, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of ``rows``, fetched once per request (a stage reorders within its candidates, so the
        rows later stages score were mostly fetched already)."""
        missing = [int(r) for r in rows if int(r) not in cache]
        if missing:
            cache.update(zip(missing, await self.retrieval.vectors(np.asarray(missing, np.int64))))
        if not len(rows):
            return np.zeros((0, 0), np.float32)
        return np.stack([cache[int(r)] for r in rows]).astype(np.float32, copy=False)

    def results(self, outcome: SearchOutcome, root: str = "") -> list[dict]:
        """Rows -> result items: rank, id, class, score (+ ``first_stage_score`` when re-ranked), QuickDraw
        details (key_id, countrycode, recognized) where the index has them, and the thumbnail URL."""
        ids, labels = self.items.rows(outcome.rows)
        details = self.items.details(outcome.rows)
        firsts = outcome.first_scores.tolist() if outcome.first_scores is not None else [None] * len(ids)
        results = []
        for rank, (item_id, label, score, first, extra) in enumerate(
                zip(ids, labels, outcome.scores.tolist(), firsts, details), start=1):
            item = {"rank": rank, "id": item_id, "class": label, "score": round(float(score), 6)}
            if first is not None:
                item["first_stage_score"] = round(float(first), 6)
            item.update(extra)
            item["image_url"] = f"{root}/items/{quote(item_id, safe='/:')}/image"
            results.append(item)
        return results
