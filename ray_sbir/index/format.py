"""The gallery index format: schema, manifest and file names. Every writer and reader of an index goes through
``ray_sbir.index``; nothing else names a column or a manifest field.

An index is a folder of Parquet shards plus JSON side files whose names start with ``_`` (Parquet readers
pointed at the folder -- pyarrow, Ray Data, Spark -- skip them, as they skip ``_SUCCESS``):

- ``<shard>.parquet``: one row per item. Columns:

  ========================  ===========================  ================================================
  ``id``                    string, unique               what ``/items/{id}/image`` and results name
  ``uri``                   string                       where the item came from (image, ndjson file)
  ``label``                 string                       class (QuickDraw: the drawing's word)
  ``modality``              string                       ``sketch`` or ``photo``
  ``embedding``             ``fixed_size_list<float32>``  the encoder's output, scored by inner product
  ``code``                  ``fixed_size_list<uint64>``   binary models only: the packed hash code
                                                         (``ray_sbir.search.hamming.pack_codes``), searched by
                                                         Hamming distance; ``embedding`` then holds its
                                                         relaxation, for two-stage re-scoring
  ``key_id`` ...            optional source columns      :data:`SOURCE_COLUMNS` (QuickDraw provenance and
                                                         the byte range of the drawing's ndjson line)
  ========================  ===========================  ================================================

- ``_manifest.json`` (:class:`Manifest`), written last: its presence means the index is complete. It lists
  the files in row order with their row counts, so readers need no listing and no footer per file.
- ``_plan.json``: the writing job's fingerprint (items, model, rendering, sharding); a re-run resumes only
  when it matches (:mod:`ray_sbir.index.writer`).
- ``_failures.json`` and ``_<shard>.failures.json``: items that could not be embedded.

Format versions: 2 is this one. Version 1 indexes (written before ``ray_sbir.index`` existed) are read when
they have the item columns: the embedding job's (``_manifest.json`` without ``format_version``) and
``write_index``'s (``manifest.json``). Version 1 QuickDraw indexes lack ``id``/``uri``; reading them for
serving fails with the command that rebuilds them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 2
MANIFEST = "_manifest.json"
LEGACY_MANIFEST = "manifest.json"  # version 1, write_index
FAILURES, PLAN = "_failures.json", "_plan.json"

ITEM_COLUMNS = ("id", "uri", "label", "modality")
EMBEDDING, CODE = "embedding", "code"
# Optional provenance columns, by name and type: QuickDraw's own fields, and the byte range of the item's
# line in its source file (``uri``), so a thumbnail reads one line instead of scanning the file.
SOURCE_COLUMNS = {
    "key_id": pa.string(), "countrycode": pa.string(), "recognized": pa.bool_(),
    "source_offset": pa.int64(), "source_length": pa.int64(),
}
COLUMNS = (*ITEM_COLUMNS, EMBEDDING, CODE, *SOURCE_COLUMNS)
# Parquet dictionary-encodes every column by default; on float embeddings that only adds bytes (about 50% on
# small shards), so only the repetitive string columns get it.
DICTIONARY_COLUMNS = ["label", "modality", "countrycode"]


def shard_failures_name(shard_name: str) -> str:
    """Side file listing the failed items of one shard (leading ``_``: skipped by Parquet readers)."""
    return f"_{shard_name.removesuffix('.parquet')}.failures.json"


def item_table(ids, uris, labels, modality, embeddings: np.ndarray, *, codes: np.ndarray | None = None,
               extra: dict | None = None, **source) -> pa.Table:
    """One shard's rows in the index schema. ``modality`` is one string or one per row; ``codes``: packed
    ``(N, W)`` uint64 hash codes of a binary model; ``source`` holds optional :data:`SOURCE_COLUMNS` (unknown
    names are an error); ``extra``: the items' own columns beyond the format's (a dataset manifest's
    ``collection``, say: string, boolean or integer values), kept for search filters."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[1] == 0:
        raise ValueError(f"embeddings must be (N, D) with D > 0, got shape {emb.shape}")
    n, dim = emb.shape
    unknown = sorted(set(source) - set(SOURCE_COLUMNS))
    if unknown:
        raise ValueError(f"unknown index source column(s) {unknown}; known: {sorted(SOURCE_COLUMNS)}")
    cols = {"id": _strings(ids, n, "ids"), "uri": _strings(uris, n, "uris"), "label": _strings(labels, n, "labels"),
            "modality": _strings(modality, n, "modality"),
            EMBEDDING: pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim)}
    if cols["id"].null_count:
        raise ValueError("item ids must not be None")
    if codes is not None:
        words = np.ascontiguousarray(codes, dtype=np.uint64)
        if words.ndim != 2 or len(words) != n:
            raise ValueError(f"codes must be (N, W) uint64 words for {n} items, got shape {words.shape}")
        cols[CODE] = pa.FixedSizeListArray.from_arrays(pa.array(words.reshape(-1), pa.uint64()), words.shape[1])
    for name, values in source.items():
        arr = pa.array(values, SOURCE_COLUMNS[name]) if not isinstance(values, pa.Array) else values
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries for {n} embeddings")
        cols[name] = arr
    for name, values in (extra or {}).items():
        check_extra_column(name)
        arr = values if isinstance(values, pa.Array) else pa.array(list(values) if isinstance(values, np.ndarray)
                                                                    and values.dtype == object else values)
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries for {n} embeddings")
        cols[name] = arr
    return pa.table(cols)


# Columns a dataset's own item columns may not be called: the index format's, and what its jobs add.
RESERVED_COLUMNS = frozenset({*COLUMNS, "item_id", "instance_id", "strokes", "error", "row"})


def check_extra_column(name: str) -> None:
    """An item column kept in the index beside the format's own must not take one of their names."""
    if name in RESERVED_COLUMNS:
        raise ValueError(f"item column {name!r} clashes with a column of the index format; rename it")


def _strings(values: Any, n: int, name: str) -> pa.Array:
    if values is None:
        return pa.nulls(n, pa.string())
    if isinstance(values, str):
        return pa.array([values] * n, pa.string())
    arr = values if isinstance(values, pa.Array) else pa.array([None if v is None else str(v) for v in values],
                                                                pa.string())
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} embeddings")
    return arr.cast(pa.string())


@dataclass
class Manifest:
    """``_manifest.json``: what an index holds and how to read it without listing or opening every file.

    ``embedding``: ``{"kind": "float", "score": "inner_product", "unit_norm": bool}`` (room for binary codes:
    another ``kind`` with its ``bits``). ``fingerprint``: the writing job's plan fingerprint (which items,
    which model); ``source``/``checkpoint``: where items and model came from; ``extra``: job-specific fields
    (kept on round trip)."""

    count: int
    dim: int | None
    files: list[str]
    rows: list[int] | None = None  # per file, same order; None in version 1 manifests
    embedding: dict = field(default_factory=dict)
    modality: str | None = None
    fingerprint: str | None = None
    source: str | None = None
    checkpoint: str | None = None
    failures: int = 0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.rows is not None and len(self.rows) != len(self.files):
            raise ValueError(f"manifest lists {len(self.files)} files but {len(self.rows)} row counts")
        if self.rows is not None and sum(self.rows) != self.count:
            raise ValueError(f"manifest count {self.count} != sum of its file row counts {sum(self.rows)}")

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.update(d.pop("extra"))
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str) -> "Manifest":
        try:
            d = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{where}: not a JSON manifest ({e})") from None
        if not isinstance(d, dict) or "count" not in d:
            raise ValueError(f"{where}: not an index manifest (no 'count')")
        version = int(d.get("format_version", 1))
        if version > FORMAT_VERSION:
            raise ValueError(f"{where}: index format {version} is newer than this ray-sbir reads "
                             f"({FORMAT_VERSION}); upgrade ray-sbir")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        known["format_version"] = version
        known.setdefault("dim", None)
        known.setdefault("files", [])
        if isinstance(known.get("embedding"), str):  # never written, but cheap to refuse clearly
            raise ValueError(f"{where}: 'embedding' must be an object")
        known["failures"] = int(known.get("failures") or 0)
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})
