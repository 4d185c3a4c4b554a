"""Index versions: a gallery that grows (and loses items) without re-embedding what it holds.

:func:`new_version` writes version ``n + 1`` of an index into a new folder beside version ``n``: the base's
files are copied unchanged (server-side copies on object stores) except those holding removed ids, which are
rewritten without them, and the added rows (embedded by the same model) are committed as new files
``v<n+1>-part-<i>.parquet``. The base stays as it was, so an endpoint serving it keeps answering until it is
switched to the new folder (``serve deploy`` with the new index: Serve replaces the ingress replicas one by
one). Each version is a complete, self-contained index (any reader opens it alone); the copies cost storage,
not embedding.

The manifest of a version records ``version`` (1 for an index written from scratch) and ``lineage``: one entry
per derivation (``version``, ``from`` (the base's URI), ``added``, ``removed``, ``created``). The same rule as
every index writer holds: rows of two models never mix. Added rows must have the base's embedding width and
kind (float or binary codes), and ``model`` -- the identity of the model that embedded them -- must equal the
base's ``model`` entry when the base records one (indexes written since index versions exist do). An
augmented index (``augmented_from``: database-side augmentation rewrote every vector from its neighbours) is
refused: grow its raw index, then augment the new version (``ray-sbir augment``).
"""

from __future__ import annotations

import io
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_sbir import fs
from ray_sbir.index.format import CODE, EMBEDDING, Manifest
from ray_sbir.index.reader import index_layout
from ray_sbir.index.writer import begin, commit_shard, finish, fingerprint

logger = logging.getLogger(__name__)

__all__ = ["index_version", "new_version"]


def index_version(manifest: Manifest | None) -> int:
    """The version number a manifest records (1 when it records none: written from scratch)."""
    return int((manifest.extra if manifest else {}).get("version", 1))


def _check_added(base: Manifest, base_uri: str, added: list[pa.Table], model: str | None) -> None:
    where = f"growing {base_uri}"
    if base.extra.get("augmented_from"):
        raise ValueError(f"{where}: it is an augmented index (DBA rewrote every vector from its neighbours); grow "
                         f"its raw index {base.extra['augmented_from']} and augment the new version")
    if model is not None and base.extra.get("model") not in (None, model):
        raise ValueError(f"{where}: the new rows come from another model ({model[:12]}) than the index "
                         f"({str(base.extra.get('model'))[:12]}); an index never mixes two models' embeddings")
    binary = base.embedding.get("kind", "float") != "float"
    for table in added:
        width = table.schema.field(EMBEDDING).type.list_size
        if width != base.dim:
            raise ValueError(f"{where}: new rows have {width}-d embeddings, the index {base.dim}-d ones")
        if (CODE in table.column_names) != binary:
            raise ValueError(f"{where}: new rows {'lack' if binary else 'carry'} hash codes, the index is "
                             f"{base.embedding.get('kind', 'float')}")


def new_version(base_uri: str, out_uri: str, added: list[pa.Table] = (), remove_ids=(), *,
                model: str | None = None) -> Manifest:
    """Write ``base_uri`` plus the rows of ``added`` (tables in the index schema, e.g.
    :func:`~ray_sbir.index.format.item_table`'s) minus the items whose id is in ``remove_ids``, as the next
    version, into ``out_uri``. Ids must stay unique: an added id already in the base (and not removed) is an
    error, as is removing an id the base does not hold. Returns the new manifest."""
    if base_uri.rstrip("/") == out_uri.rstrip("/"):
        raise ValueError(f"a new version of {base_uri} goes into another folder: the served version stays intact")
    layout = index_layout(base_uri)
    base = layout.manifest
    if base is None or base.rows is None:
        raise ValueError(f"{base_uri}: an index with a manifest listing its files' rows is needed to grow it")
    added = [t for t in added if t.num_rows]
    _check_added(base, base_uri, added, model)
    remove = set(map(str, remove_ids))
    new_ids = [i for t in added for i in t.column("id").to_pylist()]
    if len(set(new_ids)) != len(new_ids):
        dup = sorted({i for i in new_ids if new_ids.count(i) > 1})[:5]
        raise ValueError(f"growing {base_uri}: the new rows repeat ids {dup}")
    version = index_version(base) + 1
    version_fingerprint = fingerprint("version", base.fingerprint, version, sorted(remove), new_ids)
    begin(out_uri, {"fingerprint": version_fingerprint}, resume=False)
    files, rows, found, clash = [], [], set(), set()
    removed_set = pa.array(sorted(remove), pa.string())
    added_set = pa.array(sorted(new_ids), pa.string())
    t0 = time.perf_counter()
    for uri, n in zip(layout.files, layout.rows):
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        with fs.open_uri(uri, "rb") as f:
            ids = pq.read_table(f, columns=["id"]).column("id")
        hit = pc.is_in(ids, value_set=removed_set)
        clash |= set(ids.filter(pc.and_(pc.is_in(ids, value_set=added_set), pc.invert(hit))).to_pylist())
        if not pc.any(hit).as_py():
            fs.copy(uri, fs.join(out_uri, name))  # unchanged: the same bytes (server-side on object stores)
            files.append(name)
            rows.append(n)
            continue
        found |= set(ids.filter(hit).to_pylist())
        table = pq.read_table(io.BytesIO(fs.read_bytes(uri))).filter(pc.invert(hit))
        if table.num_rows:
            files.append(name)
            rows.append(commit_shard(out_uri, name, table))
    missing = sorted(remove - found)[:5]
    clash = sorted(clash)[:5]
    if missing or clash:
        fs.remove(out_uri, recursive=True)  # nothing half-made is left behind
        raise ValueError(f"growing {base_uri}: " + "; ".join(
            ([f"ids to remove that it does not hold: {missing}"] if missing else [])
            + ([f"new rows repeat ids it holds: {clash} (remove them too to replace them)"] if clash else [])))
    for i, table in enumerate(added):
        name = f"v{version}-part-{i:05d}.parquet"
        files.append(name)
        rows.append(commit_shard(out_uri, name, table))
    lineage = [*base.extra.get("lineage", []), {
        "version": version, "from": base_uri, "added": len(new_ids), "removed": len(remove),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
    extra = {**base.extra, "version": version, "lineage": lineage}
    manifest = finish(out_uri, files, rows, [], dim=base.dim, embedding=base.embedding, modality=base.modality,
                      fingerprint=version_fingerprint,
                      source=base.source, checkpoint=base.checkpoint, **extra)
    logger.info("index %s version %d: %d rows (%+d added, %d removed) from %s in %.1f s", out_uri, version,
                manifest.count, len(new_ids), len(remove), base_uri, time.perf_counter() - t0)
    return manifest
