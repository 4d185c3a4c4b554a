"""Gallery embedding job: Ray Data ``map_batches`` with a stateful encoder on an actor pool -> gallery index.

Each actor loads the encoder once (from a checkpoint folder, or freshly built for the untrained baseline),
decodes its batch and embeds it on its device (GPU when the job asks for one). The index (format and writing:
:mod:`ray_sbir.index`) has one shard ``part-<shard>.parquet`` per fixed slice of the item order; every input
item is in exactly one of index and failure list. Shards appear atomically and the plan is fingerprinted, so
a stopped job re-run with the same items and encoder embeds only the shards that are missing, and a job with
another encoder or other items replaces the index instead of mixing into it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from ray_sbir import fs
from ray_sbir.checkpoint import load_model, read_meta, resolve_checkpoint
from ray_sbir.config import Config, ModelConfig
from ray_sbir.data.catalog import Catalog
from ray_sbir.data.decode import RenderSpec, decode_images
from ray_sbir.data.images import BadItemsError, to_model_input
from ray_sbir.index import begin, commit_shard, committed_shard, finish, fingerprint, item_table
from ray_sbir.models import RetrievalModel, create_model
from ray_sbir.models.inference import encode
from ray_sbir.search import EmbeddingKind, encode_entry
from ray_sbir.models.base import device_for
from ray_sbir.logs import Progress
from ray_sbir.distributed.datasets import _to_dataset

logger = logging.getLogger(__name__)

UNTRAINED = "untrained"
DEFAULT_ROWS_PER_SHARD = 8192
BATCH_COLUMNS = ("item_id", "uri", "label", "strokes", "row")  # what a batch holds beside the items' own columns


@dataclass(frozen=True)
class ModelSource:
    """Where the encoder comes from: a checkpoint folder, or ``UNTRAINED`` (pretrained backbone, fresh head)."""

    checkpoint: str
    model: ModelConfig | None = None  # required for UNTRAINED
    seed: int = 0
    # Each item embedded as the mean of its and its mirror's embeddings (search.flip_average,
    # ray_sbir.models.inference.encode); recorded in the index's manifest, so queries are encoded the same way.
    flip_average: bool = False
    # With flip_average: whether the index's queries are mirrored too (search.flip_queries; False: the gallery
    # alone, one encoder pass per query). It changes no row: recorded in the manifest's encode entry.
    flip_queries: bool = True
    # (bits, seed, candidates) of sign codes of a random rotation written beside a float model's embedding
    # (search.codes_bits, ray_sbir.search.sign_codes); bits 0: none. Recorded in the manifest's embedding entry.
    sign_codes: tuple[int, int, int] = (0, 0, 200)

    def __post_init__(self):
        if self.checkpoint != UNTRAINED:  # a run folder: its best checkpoint, chosen once for the whole job
            object.__setattr__(self, "checkpoint", resolve_checkpoint(self.checkpoint))

    def with_search(self, search) -> "ModelSource":
        """This source encoding as a config's ``search`` section says: mirror averaging (of the gallery, and of
        the queries unless ``flip_queries`` is off) and sign codes."""
        return dataclasses.replace(self, flip_average=search.flip_average, flip_queries=search.flip_queries,
                                   sign_codes=search.sign_codes)

    def queries(self) -> "ModelSource":
        """The source that encodes this index's queries: mirrored only when ``flip_queries`` keeps it on."""
        return dataclasses.replace(self, flip_average=self.flip_average and self.flip_queries, flip_queries=True)

    def load(self, device) -> RetrievalModel:
        if self.checkpoint == UNTRAINED:
            # The same seed as training's initialisation: the untrained baseline is the trained run's start.
            torch.manual_seed(self.seed)
            return create_model(self.model).to(device).eval()
        return load_model(self.checkpoint, device)[0]

    def model_config(self) -> ModelConfig:
        return self.model if self.checkpoint == UNTRAINED else read_meta(self.checkpoint).config.model

    def identity(self) -> tuple:
        """What identifies the weights, for index fingerprints: the checkpoint URI may hold other weights later
        (a re-trained run), so its ``meta.json`` bytes count too."""
        flip = ("flip_average",) if self.flip_average else ()  # absent when off: older fingerprints stay valid
        flip += ("flip_queries", False) if self.flip_average and not self.flip_queries else ()
        flip += ("sign_codes", *self.sign_codes) if self.sign_codes[0] else ()
        if self.checkpoint == UNTRAINED:
            return (self.checkpoint, repr(self.model), self.seed, *flip)
        return (self.checkpoint, fs.read_bytes(fs.join(self.checkpoint, "meta.json")), *flip)

    def kind(self) -> EmbeddingKind:
        """The embedding kind the job writes: the model's, with the sign codes asked for (checked here, before
        Ray starts: a hashing model makes codes of its own)."""
        return EmbeddingKind.of_model_config(self.model_config()).with_sign_codes(*self.sign_codes)


class EmbedBatch:
    """Stateful Ray Data UDF: one encoder per actor, reused for every batch it gets."""

    def __init__(self, source: ModelSource, modality: str, spec: RenderSpec, use_gpu: bool = False):
        self.device = device_for(use_gpu)
        self.model = source.load(self.device).keep_only(modality)
        self.kind = EmbeddingKind.of_model(self.model).with_sign_codes(*source.sign_codes)
        self.flip_average = source.flip_average
        self.modality = modality
        self.spec = spec

    @torch.no_grad()
    def __call__(self, batch: dict) -> pa.Table:
        images, errors = decode_images(batch["uri"], batch.get("strokes"), self.modality, self.spec)
        ok = np.array([not e for e in errors], dtype=bool)
        dim = self.model.embed_dim
        emb = np.zeros((len(ok), dim), np.float32)
        if ok.any():
            x = to_model_input(torch.from_numpy(images[ok]), self.device)
            emb[ok] = encode(self.model, x, self.modality, flip_average=self.flip_average).float().cpu().numpy()
        # A binary model's index keeps the packed bits (Hamming search) and their relaxation (re-scoring); a
        # float model's, with sign codes asked for, the codes of its rotation beside the floats.
        codes = self.kind.codes(emb)
        extra = {name: batch[name] for name in batch if name not in BATCH_COLUMNS}  # the items' own columns
        table = item_table(batch["item_id"], batch["uri"], batch["label"], self.modality, emb, codes=codes,
                           extra=extra)
        # Position in the job's item order: the driver files each row into its shard by it.
        row = pa.array(np.asarray(batch["row"], np.int64)) if "row" in batch else pa.nulls(len(ok), pa.int64())
        return table.append_column("error", pa.array(errors, pa.string())).append_column("row", row)


@dataclass
class EmbedResult:
    index_uri: str
    count: int
    dim: int
    failures: list[dict]
    seconds: float
    shards: int = 0
    shards_skipped: int = 0  # complete shards of an earlier, interrupted run that were kept


def model_identity(source: ModelSource) -> str:
    """What an index's ``model`` entry records: the weights that embedded it (checkpoint URI and its
    ``meta.json`` bytes). Index versions compare it: rows of two models never share an index."""
    return fingerprint("model", *source.identity())


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def _job_fingerprint(table: pa.Table, modality: str, source: ModelSource, spec: RenderSpec,
                     rows_per_shard: int) -> str:
    """Identifies what a shard holds: the same items in the same order, the same encoder and rendering.
    A re-run whose fingerprint differs must not reuse any shard of the old one."""
    sink = pa.BufferOutputStream()
    keys = table.select(["item_id", "uri"]).combine_chunks()
    with pa.ipc.new_stream(sink, keys.schema) as writer:
        writer.write_table(keys)
    return fingerprint("embed", modality, *source.identity(), spec, rows_per_shard, sink.getvalue().to_pybytes())


def _commit_shard(out_uri: str, shard: int, parts: list[pa.Table], strict: bool) -> tuple[int, list[dict]]:
    """Write one complete shard (:func:`ray_sbir.index.commit_shard`) from its embedded rows."""
    table = pa.concat_tables(parts).sort_by("row")
    failed = pc.not_equal(table["error"], "")
    failures = table.filter(failed).select(["id", "uri", "error"]).to_pylist()
    if failures and strict:
        raise BadItemsError(f"{len(failures)} item(s) of shard {shard} could not be embedded (strict mode); "
                            f"first: {failures[0]['uri']}: {failures[0]['error']}")
    good = table.filter(pc.invert(failed)).drop_columns(["error", "row"])
    return commit_shard(out_uri, shard_name(shard), good, failures), failures


def embed_items(items: Catalog, modality: str, source: ModelSource, out_uri: str, spec: RenderSpec, *,
                batch_size: int = 64, concurrency: int = 1, use_gpu: bool = False, config: Config | None = None,
                rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, resume: bool = True,
                strict: bool = False) -> EmbedResult:
    """Embed the ``modality`` items of ``items`` into a Parquet index at ``out_uri``.

    Items are cut, in catalog order, into shards of ``rows_per_shard``; each becomes ``part-<shard>.parquet``
    once all its rows are embedded. Rows stream from the actor pool to the driver, which holds only the shards
    still being filled, so memory does not grow with the gallery. With ``resume`` (the default) a re-run of
    the same job (same items, encoder and rendering: ``_plan.json``) keeps the shards an interrupted run
    completed and embeds only the rest; any other existing index at ``out_uri`` is replaced. Undecodable
    items are listed in ``_failures.json`` (``strict``: raise instead).
    """
    t0 = time.time()
    if rows_per_shard <= 0:
        raise ValueError(f"rows_per_shard must be > 0, got {rows_per_shard}")
    from ray_sbir.data.catalog import extra_columns

    chosen = items.select(modality=modality).items
    table = chosen.select(["item_id", "uri", "label", "strokes", *extra_columns(chosen)])
    n = table.num_rows
    if n == 0:
        raise ValueError(f"nothing to embed: no {modality} items")
    shards = -(-n // rows_per_shard)
    plan = {"fingerprint": _job_fingerprint(table, modality, source, spec, rows_per_shard), "items": n,
            "rows_per_shard": rows_per_shard, "shards": shards}
    present = begin(out_uri, plan, resume=resume)
    done = {i for i in range(shards) if shard_name(i) in present}
    if done:
        logger.info("resuming %s: %d/%d shard(s) already complete", out_uri, len(done), shards)

    rows = np.arange(n, dtype=np.int64)
    todo = np.isin(rows // rows_per_shard, np.fromiter(done, np.int64, len(done)), invert=True)
    table = table.append_column("row", pa.array(rows)).filter(pa.array(todo))
    counts, failures = {}, []
    if table.num_rows:
        ds = _to_dataset(table).map_batches(
            EmbedBatch, fn_constructor_kwargs={"source": source, "modality": modality, "spec": spec,
                                               "use_gpu": use_gpu},
            batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_gpus=1 if use_gpu else 0, batch_format="numpy",
        )
        pending: dict[int, list[pa.Table]] = {}
        filled: dict[int, int] = {}
        progress = Progress(logger, f"embedding {modality} items into {out_uri}:", table.num_rows)
        received = 0
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            received += batch.num_rows
            shard_of = batch["row"].to_numpy() // rows_per_shard
            for shard in np.unique(shard_of):
                shard = int(shard)
                part = batch.filter(pa.array(shard_of == shard))
                pending.setdefault(shard, []).append(part)
                filled[shard] = filled.get(shard, 0) + part.num_rows
                if filled[shard] == min(rows_per_shard, n - shard * rows_per_shard):
                    counts[shard], bad = _commit_shard(out_uri, shard, pending.pop(shard), strict)
                    failures += bad
            progress.update(received, f"{len(counts) + len(done)}/{shards} shard(s) written")
        if pending:  # every row comes back exactly once; anything else is a bug worth stopping for
            raise RuntimeError(f"embedding job ended with incomplete shard(s) {sorted(pending)}")
    for shard in sorted(done):
        counts[shard], bad = committed_shard(out_uri, shard_name(shard))
        failures += bad
    manifest = finish(
        out_uri, [shard_name(i) for i in range(shards)], [counts[i] for i in range(shards)], failures,
        modality=modality, checkpoint=source.checkpoint, fingerprint=plan["fingerprint"],
        embedding=source.kind().manifest_spec(),
        shards_resumed=len(done), config=config.to_dict() if config else None, model=model_identity(source),
        **encode_entry(source.flip_average, source.flip_queries))
    return EmbedResult(out_uri, manifest.count, manifest.dim, failures, time.time() - t0, shards=shards,
                       shards_skipped=len(done))
