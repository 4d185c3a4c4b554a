"""Writing an index: a fingerprinted plan, shards committed atomically, the manifest last.

A writing job (the gallery embedding job, QuickDraw indexing, :func:`write_index`) calls :func:`begin` with
the fingerprint of what it will write (items, model, rendering, sharding). If the folder holds the same plan,
the shards already there are kept (a stopped job resumes); if it holds anything else -- another checkpoint,
other items, another chunking -- the folder is replaced, never mixed: every shard of an index comes from one
model and one item list. Workers then :func:`commit_shard` (failure list first, then the Parquet bytes in one
atomic put: a temporary name and a rename locally, a whole-object PUT on object stores, so a visible shard is
always complete), and the driver calls :func:`finish`, which writes ``_manifest.json`` last.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_sbir import fs
from ray_sbir.index.format import (
    DICTIONARY_COLUMNS, FAILURES, LEGACY_MANIFEST, MANIFEST, PLAN, Manifest, item_table, shard_failures_name,
)

logger = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    """sha256 over ``repr`` of plain values and the raw bytes of ``bytes`` parts."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def begin(uri: str, plan: dict, *, resume: bool = True) -> set[str]:
    """Prepare ``uri`` for a job described by ``plan`` (must hold ``"fingerprint"``); returns the names of the
    shards an interrupted run of the same plan completed (empty for a fresh start).

    The manifest is removed first: the index is complete again only when :func:`finish` runs."""
    if "fingerprint" not in plan:
        raise ValueError("an index plan needs a 'fingerprint'")
    plan_uri = fs.join(uri, PLAN)
    previous = json.loads(fs.read_text(plan_uri)) if resume and fs.exists(plan_uri) else None
    if previous != plan:
        if fs.exists(uri) and fs.list_files(uri, recursive=False):
            why = "resume=False" if not resume else (
                "no plan" if previous is None else
                "another model or other items" if previous.get("fingerprint") != plan["fingerprint"]
                else "another sharding")
            logger.info("replacing the index at %s (%s): an index never mixes two jobs' shards", uri, why)
            fs.remove(uri, recursive=True)
        fs.makedirs(uri)
        fs.write_text(plan_uri, json.dumps(plan, indent=2))
        return set()
    for name in (MANIFEST, LEGACY_MANIFEST):
        fs.remove(fs.join(uri, name))
    return {u.rsplit("/", 1)[-1] for u in fs.list_files(uri, (".parquet",), recursive=False)}


def commit_shard(uri: str, name: str, table: pa.Table, failures: list[dict] | None = None) -> int:
    """Write one complete shard ``name`` (and its failure list, first); returns its row count."""
    if failures:
        fs.write_text(fs.join(uri, shard_failures_name(name)), json.dumps(failures))
    buf = io.BytesIO()
    pq.write_table(table, buf, use_dictionary=[c for c in DICTIONARY_COLUMNS if c in table.column_names])
    fs.write_bytes(fs.join(uri, name), buf.getvalue())
    return table.num_rows


def committed_shard(uri: str, name: str) -> tuple[int, list[dict]]:
    """Row count (from the footer) and failure list of a shard an earlier run committed."""
    with fs.open_uri(fs.join(uri, name), "rb") as f:
        rows = pq.read_metadata(f).num_rows
    bad = fs.join(uri, shard_failures_name(name))
    return rows, (json.loads(fs.read_text(bad)) if fs.exists(bad) else [])


def finish(uri: str, files: list[str], rows: list[int], failures: list[dict], *, dim: int | None = None,
           **fields) -> Manifest:
    """Write ``_failures.json`` and then ``_manifest.json`` (last: it marks the index complete).

    ``files``: the shards in row order; ``dim``: read from the first shard's schema when not given;
    ``fields``: the other :class:`Manifest` fields (unknown ones go to ``extra``)."""
    if dim is None and files:
        with fs.open_uri(fs.join(uri, files[0]), "rb") as f:
            dim = pq.read_schema(f).field("embedding").type.list_size
    known = {f.name for f in Manifest.__dataclass_fields__.values()}
    extra = {k: fields.pop(k) for k in list(fields) if k not in known}
    manifest = Manifest(count=sum(rows), dim=dim, files=files, rows=rows, failures=len(failures),
                        extra=extra, **fields)
    fs.write_text(fs.join(uri, FAILURES), json.dumps(failures, indent=1))
    fs.write_text(fs.join(uri, MANIFEST), manifest.to_json())
    return manifest


def write_index(uri: str, ids, embeddings, *, labels=None, uris=None, modality="photo",
                rows_per_file: int | None = None, extra_manifest: dict | None = None, codes=None,
                extra_columns: dict | None = None, **source) -> Manifest:
    """Write an in-memory gallery as an index (``part-00000.parquet``, ...): tests, benchmarks and small
    galleries. Replaces whatever ``uri`` held. ``rows_per_file`` splits the rows over several files."""
    emb = np.ascontiguousarray(_to_numpy(embeddings), dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {emb.shape}")
    if rows_per_file is not None and rows_per_file <= 0:
        raise ValueError(f"rows_per_file must be > 0, got {rows_per_file}")
    table = item_table(ids, uris, labels, modality, emb, codes=codes, extra=extra_columns, **source)
    n = table.num_rows
    begin(uri, {"fingerprint": fingerprint("write_index", n, emb.shape[1])}, resume=False)  # always replaces
    step = rows_per_file or max(n, 1)
    files, rows = [], []
    for i, start in enumerate(range(0, max(n, 1), step)):
        files.append(f"part-{i:05d}.parquet")
        rows.append(commit_shard(uri, files[-1], table.slice(start, step)))
    extra = dict(extra_manifest or {})
    embedding = extra.pop("embedding", {"kind": "float", "score": "inner_product"})
    return finish(uri, files, rows, [], dim=emb.shape[1], embedding=embedding, **extra)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)
