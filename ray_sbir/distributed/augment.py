"""Writing how a gallery index is searched: database-side augmentation as a Ray job, and the manifest's
``search`` entry (:mod:`ray_sbir.search.expansion`).

:func:`augment_index` reads an index and writes a new index version: every row's vectors replaced by their
alpha-DBA average (the codes of a binary index recomputed from it), every other column kept, one Ray task per
Parquet file of the source (each opens the whole source index: the neighbours are exact over all rows, an
O(N^2 d) scan paid once, never by the endpoint). :func:`finish_gallery` is what ``ray-sbir embed`` and
``ray-sbir evaluate`` run after embedding: with ``search.dba_n`` > 0 the raw embeddings were written to
:func:`raw_index_uri` (kept, to augment again with other settings) and the augmented version goes to the
requested folder; otherwise the raw index itself gets the ``search`` entry.
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_sbir import fs
from ray_sbir.config import SearchConfig
from ray_sbir.index import begin, commit_shard, finish, fingerprint, index_layout
from ray_sbir.index.format import CODE, EMBEDDING, MANIFEST, Manifest
from ray_sbir.index.reader import embedding_matrix
from ray_sbir.search.expansion import ExpansionSettings, search_entry

logger = logging.getLogger("ray_sbir.distributed")

__all__ = ["augment_index", "finish_gallery", "raw_index_uri", "settings_of"]


def settings_of(cfg: SearchConfig) -> tuple[ExpansionSettings, ExpansionSettings]:
    """``(query expansion, dba)`` of a config's ``search`` section."""
    return (ExpansionSettings(cfg.query_expansion_n, cfg.query_expansion_alpha),
            ExpansionSettings(cfg.dba_n, cfg.dba_alpha))


def raw_index_uri(out_uri: str) -> str:
    """Where the un-augmented embeddings of an index written to ``out_uri`` with DBA on are kept."""
    return out_uri.rstrip("/") + "_raw"


def finish_gallery(written_uri: str, out_uri: str, cfg: SearchConfig, *, concurrency: int = 1) -> str:
    """After embedding into ``written_uri``: augment it into ``out_uri`` (DBA on), or record the config's
    search settings in its manifest. Returns the index to search (``out_uri``)."""
    qe, dba = settings_of(cfg)
    if dba.on:
        augment_index(written_uri, out_uri, dba, qe, concurrency=concurrency)
    else:
        record_search(out_uri, qe, dba)
    return out_uri


def record_search(uri: str, query_expansion: ExpansionSettings, dba: ExpansionSettings) -> Manifest:
    """Rewrite ``uri``'s manifest with a ``search`` entry (nothing else changes)."""
    layout = index_layout(uri)
    manifest = layout.manifest
    if manifest is None:
        raise ValueError(f"{uri}: no manifest to record search settings in (write the index with ray-sbir embed)")
    manifest.extra["search"] = search_entry(query_expansion, dba)
    fs.write_text(fs.join(uri, MANIFEST), manifest.to_json())
    return manifest


def _augment_file(src_uri: str, name: str, start: int, dba: ExpansionSettings, out_uri: str) -> int:
    """One source file's rows augmented (neighbours over the whole source index) and written under ``out_uri``."""
    from ray_sbir.search import index_kind, open_index
    from ray_sbir.search.expansion import augment_database

    layout = index_layout(src_uri)
    index = open_index(src_uri, layout=layout, keep_floats=True, expand=False)
    with fs.open_uri(fs.join(src_uri, name), "rb") as f:
        table = pq.read_table(io.BytesIO(f.read()))
    dim = layout.dim
    emb = embedding_matrix(table.column(EMBEDDING), table.num_rows, dim)
    augmented = augment_database(index, emb, dba, offset=start)
    column = pa.FixedSizeListArray.from_arrays(pa.array(augmented.reshape(-1), pa.float32()), dim)
    table = table.set_column(table.schema.get_field_index(EMBEDDING), EMBEDDING, column)
    codes = index_kind(layout).codes(augmented)
    if codes is not None:
        words = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1), pa.uint64()), codes.shape[1])
        table = table.set_column(table.schema.get_field_index(CODE), CODE, words)
    return commit_shard(out_uri, name, table)


def augment_index(src_uri: str, out_uri: str, dba: ExpansionSettings,
                  query_expansion: ExpansionSettings = ExpansionSettings(), *, concurrency: int = 1) -> Manifest:
    """Write ``src_uri``'s rows to ``out_uri`` with alpha-DBA vectors (one Ray task per file, at most
    ``concurrency`` at once); the new manifest records ``search`` and ``augmented_from``."""
    import ray

    if not dba.on:
        raise ValueError("database-side augmentation needs n >= 1 neighbours")
    layout = index_layout(src_uri)
    src = layout.manifest
    if src is None or src.rows is None:
        raise ValueError(f"{src_uri}: an index with a manifest listing its files' rows is needed to augment it")
    if src_uri.rstrip("/") == out_uri.rstrip("/"):
        raise ValueError(f"augmenting {src_uri} would overwrite its own rows: give another output folder")
    begin(out_uri, {"fingerprint": fingerprint("dba", src.fingerprint, src.count, dba.to_dict())}, resume=False)
    starts = np.concatenate([[0], np.cumsum(src.rows)[:-1]]).tolist()
    task = ray.remote(num_cpus=1)(_augment_file)
    t0 = time.perf_counter()
    in_flight: list = []
    for name, start in zip(src.files, starts):
        if len(in_flight) >= max(1, concurrency):
            ready, in_flight = ray.wait(in_flight, num_returns=1)
            ray.get(ready)  # a file that failed fails the job here, with its error
        in_flight.append(task.remote(src_uri, name, int(start), dba, out_uri))
    ray.get(in_flight)
    manifest = finish(out_uri, list(src.files), list(src.rows), [], dim=src.dim, embedding=src.embedding,
                      modality=src.modality, fingerprint=src.fingerprint, source=src.source,
                      checkpoint=src.checkpoint, **{**src.extra, "search": search_entry(query_expansion, dba),
                                                    "augmented_from": src_uri})
    logger.info("augmented %d rows of %s into %s (dba n=%d alpha=%g) in %.1f s", src.count, src_uri, out_uri,
                dba.n, dba.alpha, time.perf_counter() - t0)
    return manifest
