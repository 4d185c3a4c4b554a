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
    *The pipeline's stages* (rescore, query expansion, re-rank, any stage registered in
    :data:`ray_sbir.search.STAGES`): the offline stage classes themselves, nested by
    :func:`ray_sbir.search.pipeline.build_pipeline` over a :class:`RequestIndex` -- the request's retrieval seen
    as an index, its first answer reused, further searches (query expansion's) and stored vectors fetched
    through the retrieval from its shards -- so they apply over the merged shards exactly as offline.
    *Results* (:meth:`SearchEngine.results`): rows -> items (id, class, QuickDraw details, image URL).

The stages come from one pipeline spec (:mod:`ray_sbir.search.pipeline`: the serve config's ``search``, else
the index's own, :func:`serving_spec`), the spec offline evaluation runs too. A new search stage is one module
registered in :data:`~ray_sbir.search.STAGES` with its parameters in the pipeline's grammar: both serving
modes run it with no change here.
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

__all__ = ["Candidates", "LocalRetrieval", "RequestIndex", "Retrieval", "SearchEngine", "SearchOutcome",
           "ShardedRetrieval", "check_index_dim", "describe_stage", "encode_sketches", "load_rerank_scorer",
           "load_sketch_encoder", "open_shard", "pipeline_scorer", "scoring_of", "serving_spec"]


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
    gallery's manifest says (:func:`ray_sbir.search.index_flip_queries`), as ``ray-sbir evaluate`` encodes."""
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
    if spec.needs("scorer") and not cfg.rerank:
        raise ValueError(f"search {spec.to_string()!r}: rerank needs a train.task=rerank checkpoint (--rerank)")
    return spec


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
        from ray_sbir.search import index_flip_queries
        from ray_sbir.serving.batching import GreedyBatcher

        self.encoder, _, self.device = load_sketch_encoder(checkpoint, use_gpu, torch_threads)
        self.flip_average = index_flip_queries(layout)  # queries encoded as the manifest says
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


# ------------------------------------------------------------------------------------------- pipeline


def load_rerank_scorer(checkpoint: str, index: str, index_dim: int, use_gpu: bool = False):
    """The similarity head of a ``train.task=rerank`` checkpoint, checked against the index's dimension;
    ``ValueError`` naming the checkpoint when it cannot serve."""
    from ray_sbir.search.rerank import load_similarity

    try:
        scorer = load_similarity(checkpoint, device=_device(use_gpu))
    except Exception as e:  # noqa: BLE001 - any failure to rebuild the head is reported in one sentence
        raise ValueError(f"rerank checkpoint {checkpoint} cannot be loaded: {type(e).__name__}: {e}") from None
    if scorer.embed_dim != index_dim:
        raise ValueError(f"rerank checkpoint {checkpoint} scores {scorer.embed_dim}-d embeddings but index "
                         f"{index} holds {index_dim}-d ones")
    return scorer


def pipeline_scorer(spec, cfg, index_dim: int, use_gpu: bool = False):
    """The learned similarity the stages of ``spec`` that need one score with (None without such a stage): the
    serve config's re-rank checkpoint, loaded and checked before anything is served."""
    if not spec.needs("scorer"):
        return None
    return load_rerank_scorer(cfg.rerank, cfg.index, index_dim, use_gpu)


def describe_stage(stage, scorer=None) -> dict:
    """One stage as ``/info`` lists it: its name and parameters (query expansion's alpha with its default), what
    it scores with (``inner_product`` or the learned head and its checkpoint)."""
    from ray_sbir.search import InnerProduct
    from ray_sbir.search.expansion import ExpansionSettings

    options = stage.options()
    if stage.name == "query_expansion":
        options = ExpansionSettings(options["n"], options.get("alpha", ExpansionSettings.alpha)).to_dict()
    out = {"stage": stage.name, **options}
    if stage.name == "rescore":
        out.update(InnerProduct().describe())
    elif stage.name == "rerank" and scorer is not None:
        out.update(scorer.describe(), checkpoint=scorer.checkpoint)
    return out


class RequestIndex:
    """One request's retrieval as the offline stages see an index (``search(queries, k, allowed)``,
    ``vectors(rows)``), so the endpoint runs :func:`ray_sbir.search.pipeline.build_pipeline`'s own stage classes
    over its shards. Called from a pipeline thread: each call runs on the replica's event loop (the retrieval's
    encoder, shard handles and retries) and is waited for. The first search of the user's query is answered
    from the retrieval already done (its top ``first_k``); every answer's scores are kept, so the results report
    the first stage's score of each row as the last retrieval gave it; stored vectors are fetched once."""

    def __init__(self, retrieval: Retrieval, loop: asyncio.AbstractEventLoop, first: Candidates, first_k: int,
                 count: int):
        self.retrieval, self.loop, self.first, self.first_k, self.count = retrieval, loop, first, first_k, count
        self.latest: dict[int, float] = dict(zip(first.rows.tolist(), first.scores.tolist()))
        self.cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.count

    def _wait(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        answers = []
        for query in np.asarray(queries, np.float32):
            if k <= self.first_k and np.array_equal(query, self.first.query):
                cand = self.first
            else:
                cand = self._wait(self.retrieval.search(query, k, allowed))
                self.latest = dict(zip(cand.rows.tolist(), cand.scores.tolist()))
            answers.append((cand.scores[:k], cand.rows[:k]))
        width = min(len(r) for _, r in answers)  # one query per request: every answer has the same width
        return (np.stack([s[:width] for s, _ in answers]).astype(np.float32, copy=False),
                np.stack([r[:width] for _, r in answers]).astype(np.int64, copy=False))

    def vectors(self, rows: Any) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        flat = rows.reshape(-1).tolist()
        missing = list(dict.fromkeys(r for r in flat if r not in self.cache))
        if missing:
            self.cache.update(zip(missing, self._wait(self.retrieval.vectors(np.asarray(missing, np.int64)))))
        dim = len(self.first.query)
        if not flat:
            return np.zeros((*rows.shape, dim), np.float32)
        return np.stack([self.cache[r] for r in flat]).astype(np.float32, copy=False).reshape(*rows.shape, dim)


class _Timed:
    """A pipeline layer whose ``search`` time is added to ``clock[level]`` (its own time is that minus the time
    of the layer below it)."""

    def __init__(self, inner, clock: dict, level: int):
        self.inner, self.clock, self.level = inner, clock, level

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        from ray_sbir.search.stages import filtered_search

        t = time.perf_counter()
        try:
            return filtered_search(self.inner, queries, k, allowed)
        finally:
            self.clock[self.level] = self.clock.get(self.level, 0.0) + time.perf_counter() - t

    def vectors(self, rows: Any) -> np.ndarray:
        return self.inner.vectors(rows)


@dataclass
class SearchOutcome:
    scores: np.ndarray  # final scores (k',)
    rows: np.ndarray  # global rows (k',)
    first_scores: np.ndarray | None  # the retrieval stage's scores when re-ranked, else None
    timing: dict  # seconds per stage


class SearchEngine:
    """retrieve -> the pipeline's stages -> results, the same in both modes. ``spec``: the ranking pipeline
    (:func:`serving_spec`); its stages are the offline ones (:func:`ray_sbir.search.pipeline.build_pipeline`)
    over a :class:`RequestIndex` of each request, so evaluation and the endpoint rank alike by construction;
    ``scorer``: the learned similarity of a ``rerank`` stage (:func:`pipeline_scorer`)."""

    def __init__(self, retrieval: Retrieval, items: GalleryItems, scoring: dict, spec=None, scorer=None):
        from concurrent.futures import ThreadPoolExecutor

        from ray_sbir.search.pipeline import SearchSpec

        self.retrieval, self.items, self.scoring, self.scorer = retrieval, items, scoring, scorer
        self.spec = spec if spec is not None else SearchSpec("exact")
        self.spec.check_scorer(scorer)  # when the replica starts, not at its first request
        self.count = sum(b - a for a, b in retrieval.slices)
        # The stages run in their own threads (they wait on this replica's event loop for every retrieval): a
        # pool of their own, so waiting stages never hold the threads the retrieval's own work runs in.
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="search-stages")

    def stages(self) -> list[dict]:
        """What ``/info`` reports: each stage in order."""
        out = [{"stage": "retrieve", "mode": self.retrieval.mode, "scoring": self.scoring}]
        return out + [describe_stage(stage, self.scorer) for stage in self.spec.stages] + [{"stage": "results"}]

    def candidates(self, k: int) -> int:
        """How many rows the first retrieval fetches: the most any stage asks of the layer below it."""
        return max([k] + [stage.params[0] for stage in self.spec.stages])

    async def search(self, sketch: np.ndarray, k: int, allowed: np.ndarray | None = None) -> SearchOutcome:
        """``allowed``: a boolean mask of the gallery's rows (a search filter), applied in every retrieval."""
        t0 = time.perf_counter()
        m = self.candidates(k)
        cand = await self.retrieval.retrieve(sketch, m, allowed)
        timing = {"retrieve": time.perf_counter() - t0}
        if not self.spec.stages:
            return SearchOutcome(cand.scores[:k], cand.rows[:k], None, timing)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._run_stages, loop, cand, m, k, allowed, timing)

    def _run_stages(self, loop, cand: Candidates, m: int, k: int, allowed, timing: dict) -> SearchOutcome:
        from ray_sbir.search.pipeline import build_pipeline

        base = RequestIndex(self.retrieval, loop, cand, m, self.count)
        clock: dict[int, float] = {}  # layer (0: the retrieval, i: the i-th stage) -> seconds in its search
        layers = iter(range(1, len(self.spec.stages) + 1))
        pipeline = build_pipeline(self.spec, _Timed(base, clock, 0), scorer=self.scorer,
                                  wrap=lambda index: _Timed(index, clock, next(layers)))
        scores, rows = pipeline.search(cand.query[None], k, allowed)
        below = clock.get(0, 0.0)  # re-retrievals (query expansion's second search) count as retrieval
        timing["retrieve"] += below
        for level, stage in enumerate(self.spec.stages, start=1):
            timing[stage.name] = timing.get(stage.name, 0.0) + clock.get(level, 0.0) - below
            below = clock.get(level, 0.0)
        first_scores = np.array([base.latest.get(int(r), np.nan) for r in rows[0]], np.float32)
        return SearchOutcome(scores[0], rows[0], first_scores, timing)

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
