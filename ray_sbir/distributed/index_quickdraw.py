"""Large-scale QuickDraw indexing: stream ``<class>.ndjson`` files from storage, rasterise, embed, write shards.

The unit of work is a *chunk*: a byte range of one ndjson file (``chunk_bytes``, aligned to line starts). A Ray
Data actor pool (one sketch encoder per actor, GPU when asked) turns each chunk into one shard
``part-<file>-<chunk>.parquet`` of a gallery index (:mod:`ray_sbir.index`): ``id`` = the drawing's ``key_id``,
``uri`` = its ndjson file, ``label`` = its word, the QuickDraw fields, and the byte range of its line, so the
served index renders a thumbnail from one ranged read. Shards are named by chunk and written atomically, and
the job's plan is fingerprinted (files and sizes, chunking, encoder, rendering): a stopped job re-run skips the
chunks already written and never sees a half-written shard, and a re-run with another checkpoint rebuilds the
index instead of mixing two models. Memory is bounded by the chunk size and the number of actors, never by the
dataset. Malformed lines are counted and listed (file, byte offset of the line, reason) in ``_failures.json``
without stopping the job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import ray
import torch

from ray_sbir import fs
from ray_sbir.data import quickdraw
from ray_sbir.data.images import to_model_input
from ray_sbir.distributed.embed import ModelSource, model_identity
from ray_sbir.search import EmbeddingKind, encode_entry
from ray_sbir.index import begin, commit_shard, committed_shard, finish, fingerprint, item_table
from ray_sbir.models.base import device_for
from ray_sbir.models.inference import encode
from ray_sbir.logs import Progress

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 8 * 1024**2


@dataclass(frozen=True)
class Chunk:
    file_idx: int
    chunk_idx: int
    uri: str
    start: int
    end: int

    @property
    def shard_name(self) -> str:
        return f"part-{self.file_idx:05d}-{self.chunk_idx:05d}.parquet"


def plan_chunks(prefix: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES, files: list[str] | None = None) -> list[Chunk]:
    """Byte-range chunks over every ``*.ndjson`` under ``prefix``, or over ``files`` (sorted, so chunk names
    are stable)."""
    files = sorted(files) if files is not None else fs.list_files(prefix, (".ndjson",), recursive=False)
    if not files:
        raise FileNotFoundError(f"no .ndjson files under {prefix}")
    chunks = []
    for fi, uri in enumerate(files):
        fsys, path = fs.filesystem(uri)
        size = fsys.size(path)
        n = max(1, -(-size // chunk_bytes))
        for ci in range(n):
            chunks.append(Chunk(fi, ci, uri, ci * chunk_bytes, min(size, (ci + 1) * chunk_bytes)))
    return chunks


def read_chunk_lines(chunk: Chunk):
    """Yield ``(byte_offset, line)`` for the lines that *start* inside ``[start, end)``.

    A line belongs to the chunk its first byte falls in; the chunk reads past ``end`` to finish its last line
    and skips the partial line it starts in (the previous chunk owns it)."""
    # One remote read covers the chunk and the end of its last line.
    with fs.open_sequential(chunk.uri, block_size=chunk.end - chunk.start + (1 << 20)) as f:
        pos = chunk.start
        if chunk.start > 0:
            f.seek(chunk.start - 1)
            skipped = f.readline()  # rest of the line that began before this chunk (or just its "\n")
            pos = chunk.start - 1 + len(skipped)
        while pos < chunk.end:
            line = f.readline()
            if not line:
                break
            yield pos, line
            pos += len(line)


class ChunkIndexer:
    """Ray Data UDF (actor): chunk rows -> written shards; returns one summary row per chunk."""

    def __init__(self, source: ModelSource, out_uri: str, size: int, line_width: float, padding: float,
                 batch_size: int = 256, use_gpu: bool = False, cpus: float = 1):
        # Parsing and rasterising run on the actor's CPUs while its GPU embeds: give them all to torch.
        torch.set_num_threads(max(1, int(cpus)))
        self.device = device_for(use_gpu)
        self.model = source.load(self.device).keep_only("sketch")
        self.flip_average = source.flip_average
        self.kind = EmbeddingKind.of_model(self.model).with_sign_codes(*source.sign_codes)
        self.out_uri, self.size, self.line_width, self.padding = out_uri, size, line_width, padding
        self.batch_size = batch_size

    @torch.no_grad()
    def _embed(self, drawings: list) -> np.ndarray:
        """Embeddings of ``drawings``. On a GPU actor the rasteriser runs on the GPU too (measured on an H200
        host: 63k drawings/s there vs 11.7k per CPU core) and the encoder under bf16 autocast (77k vs 51k
        images/s fp32 at 64 px), leaving the actor's CPUs only parsing; embeddings are stored as float32."""
        on_gpu = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()
        out = []
        for i in range(0, len(drawings), self.batch_size):
            part = drawings[i: i + self.batch_size]
            images = quickdraw.rasterize([d.strokes for d in part], size=self.size, line_width=self.line_width,
                                         padding=self.padding, device=self.device, as_tensor=True)
            with autocast:
                emb = encode(self.model, to_model_input(images, self.device), "sketch",
                             flip_average=self.flip_average)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.embed_dim), np.float32)

    def _index_chunk(self, chunk: Chunk) -> dict:
        if fs.exists(fs.join(self.out_uri, chunk.shard_name)):  # an earlier run of this plan wrote it whole
            rows, failures = committed_shard(self.out_uri, chunk.shard_name)
            return {"shard": chunk.shard_name, "rows": rows, "failures": json.dumps(failures), "skipped": True}
        drawings, spans, failures = [], [], []
        for offset, line in read_chunk_lines(chunk):
            if not line.strip():
                continue
            try:
                drawings.append(quickdraw.parse_line(line, source=chunk.uri, line_no=0))
                spans.append((offset, len(line)))
            except quickdraw.MalformedDrawing as e:
                failures.append({"file": chunk.uri, "byte_offset": offset, "reason": e.reason})
        keys = [d.key_id for d in drawings]
        emb = self._embed(drawings)
        codes = self.kind.codes(emb)
        table = item_table(keys, [chunk.uri] * len(drawings), [d.word for d in drawings], "sketch", emb,
                           codes=codes, key_id=keys, countrycode=[d.countrycode for d in drawings],
                           recognized=[bool(d.recognized) for d in drawings],
                           source_offset=[o for o, _ in spans], source_length=[n for _, n in spans])
        rows = commit_shard(self.out_uri, chunk.shard_name, table, failures)
        return {"shard": chunk.shard_name, "rows": rows, "failures": json.dumps(failures), "skipped": False}

    def __call__(self, batch: dict) -> dict:
        rows = [self._index_chunk(Chunk(int(fi), int(ci), str(u), int(s), int(e)))
                for fi, ci, u, s, e in zip(batch["file_idx"], batch["chunk_idx"], batch["uri"], batch["start"],
                                           batch["end"])]
        return {k: np.array([r[k] for r in rows], dtype=object if k != "rows" else np.int64) for k in rows[0]}


@dataclass
class QuickDrawIndexResult:
    index_uri: str
    rows: int
    chunks: int
    chunks_skipped: int
    failures: list[dict]
    seconds: float

    @property
    def drawings_per_second(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


def index_quickdraw(prefix: str, source: ModelSource, out_uri: str, *, size: int = 64, line_width: float = 1.5,
                    padding: float = 0.08, chunk_bytes: int = DEFAULT_CHUNK_BYTES, concurrency: int = 1,
                    batch_size: int = 256, use_gpu: bool = False, cpus_per_actor: float = 1,
                    actors_per_gpu: int = 1, files: list[str] | None = None) -> QuickDrawIndexResult:
    """Index every ``<class>.ndjson`` under ``prefix`` (or only ``files``, URIs of some of them) into Parquet
    shards at ``out_uri`` (resumable).

    ``concurrency`` encoder actors, each with ``cpus_per_actor`` CPUs and, with ``use_gpu``, ``1 /
    actors_per_gpu`` of a GPU. A GPU actor rasterises and embeds on the GPU, but parses ndjson in Python on
    one core (~11k lines/s), while one GPU rasterises and embeds ~35k drawings/s: run about 5 actors per GPU
    (``actors_per_gpu=5``, ``concurrency = 5 x GPUs``) to keep it busy (cost model in docs/benchmarks.md)."""
    if actors_per_gpu < 1:
        raise ValueError(f"actors_per_gpu must be >= 1, got {actors_per_gpu}")
    t0 = time.time()
    chunks = plan_chunks(prefix, chunk_bytes, files)
    logger.info("indexing %d chunk(s) of %d file(s) from %s", len(chunks), len({c.uri for c in chunks}), prefix)
    plan = {"fingerprint": fingerprint("quickdraw", [(c.uri, c.start, c.end) for c in chunks], *source.identity(),
                                       size, line_width, padding),
            "source": prefix, "chunks": len(chunks), "chunk_bytes": chunk_bytes}
    begin(out_uri, plan)
    ds = ray.data.from_items([c.__dict__ for c in chunks], override_num_blocks=min(len(chunks), 1000))
    summary = ds.map_batches(
        ChunkIndexer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_gpus=1 / actors_per_gpu if use_gpu else 0,
        num_cpus=cpus_per_actor,
        fn_constructor_kwargs={"source": source, "out_uri": out_uri, "size": size, "line_width": line_width,
                               "padding": padding, "batch_size": batch_size, "use_gpu": use_gpu,
                               "cpus": cpus_per_actor},
    )
    rows = skipped = done = 0
    failures: list[dict] = []
    shard_rows: dict[str, int] = {}
    progress = Progress(logger, f"indexing {prefix}:", len(chunks), unit="chunks")
    for row in summary.iter_rows():
        done += 1
        rows += int(row["rows"])
        shard_rows[str(row["shard"])] = int(row["rows"])
        skipped += bool(row["skipped"])
        failures += json.loads(row["failures"])
        progress.update(done, f"{rows} drawings, {len(failures)} malformed, "
                              f"{rows / max(time.time() - t0, 1e-9):.0f} drawings/s")
    finish(out_uri, [c.shard_name for c in chunks], [shard_rows[c.shard_name] for c in chunks], failures,
           modality="sketch", source=prefix, checkpoint=source.checkpoint, fingerprint=plan["fingerprint"],
           embedding=source.kind().manifest_spec(),
           chunk_bytes=chunk_bytes, model=model_identity(source),
           **encode_entry(source.flip_average, source.flip_queries))
    return QuickDrawIndexResult(out_uri, rows, len(chunks), skipped, failures, time.time() - t0)
