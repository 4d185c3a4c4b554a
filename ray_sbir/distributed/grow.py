"""Growing a served gallery (``ray-sbir embed --append-to BASE``, ``ray-sbir index-quickdraw --append-to BASE``):
embed only the items (the ndjson files) the base index does not hold, with the Ray Data embedding (indexing) job,
and write base + new rows - removed ids as the base's next version (:func:`ray_sbir.index.new_version`) in
another folder, so the endpoint serving the base keeps answering until it is switched (``serve deploy`` with
the new index).

The new rows are embedded into ``<out>_added`` first (resumable like any embedding job: a stopped run re-embeds
only unfinished shards), then merged and that staging folder removed.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_sbir import fs
from ray_sbir.data.catalog import Catalog
from ray_sbir.data.decode import RenderSpec
from ray_sbir.distributed.embed import EmbedResult, ModelSource, embed_items, model_identity
from ray_sbir.index import Manifest, index_layout, new_version, read_index

if TYPE_CHECKING:
    from ray_sbir.distributed.index_quickdraw import QuickDrawIndexResult

logger = logging.getLogger(__name__)

__all__ = ["grow_index", "grow_quickdraw_index", "read_id_list"]


def read_id_list(uri: str) -> list[str]:
    """Ids to remove, one per line (blank lines and ``#`` comments skipped)."""
    lines = (line.strip() for line in fs.read_text(uri).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def grow_index(base_uri: str, out_uri: str, items: Catalog, modality: str, source: ModelSource, spec: RenderSpec,
               *, remove_ids=(), **embed_kw) -> tuple[Manifest, EmbedResult | None]:
    """The next version of ``base_uri`` in ``out_uri``: ``items`` of ``modality`` not in the base embedded and
    added, ``remove_ids`` dropped. Returns its manifest and the embedding job's result (``None`` when nothing
    was new)."""
    model = _same_model(base_uri, source)
    held = pa.array(sorted(set(read_index(base_uri, columns=["id"]).ids.tolist()) | set(remove_ids)), pa.string())
    table = items.select(modality=modality).items
    new = Catalog(table.filter(pc.invert(pc.is_in(table["item_id"], value_set=held))), items.layout, items.root,
                  items.errors)
    logger.info("growing %s: %d of %d %s items are new, %d to remove", base_uri, new.items.num_rows,
                table.num_rows, modality, len(remove_ids))
    staging, result = out_uri.rstrip("/") + "_added", None
    if new.items.num_rows:
        result = embed_items(new, modality, source, staging, spec, **embed_kw)
    return _merge(base_uri, out_uri, staging, result, remove_ids, model)


def grow_quickdraw_index(base_uri: str, prefix: str, out_uri: str, source: ModelSource, *, remove_ids=(),
                         **index_kw) -> tuple[Manifest, "QuickDrawIndexResult | None"]:
    """The next version of the QuickDraw index ``base_uri`` in ``out_uri``: the ``<class>.ndjson`` files under
    ``prefix`` that none of its rows comes from indexed and added, ``remove_ids`` (key ids) dropped. A file the
    base holds is not read again, even if lines were appended to it since."""
    from ray_sbir.distributed.index_quickdraw import index_quickdraw

    model = _same_model(base_uri, source)
    held = set(read_index(base_uri, columns=["uri"]).uris.tolist())
    files = fs.list_files(prefix, (".ndjson",), recursive=False)
    new = [f for f in files if f not in held]
    logger.info("growing %s: %d of %d ndjson files under %s are new, %d ids to remove", base_uri, len(new),
                len(files), prefix, len(remove_ids))
    staging, result = out_uri.rstrip("/") + "_added", None
    if new:
        result = index_quickdraw(prefix, source, staging, files=new, **index_kw)
    return _merge(base_uri, out_uri, staging, result, remove_ids, model)


def _same_model(base_uri: str, source: ModelSource) -> str | None:
    """``source``'s model identity, checked against the one the base records before anything is embedded
    (:func:`new_version` would refuse the rows anyway); ``None`` for a base that records none."""
    from ray_sbir.search import index_flip_average, index_kind

    layout = index_layout(base_uri)
    base_flip = index_flip_average(layout)
    if base_flip != source.flip_average:
        raise ValueError(f"growing {base_uri}: its rows were embedded with search.flip_average {base_flip}, "
                         f"this job would use {source.flip_average}: set it as the base did")
    base_codes, codes = index_kind(layout).sign_codes, source.kind().sign_codes
    if base_codes != codes:
        def said(c):
            return "no sign codes" if c is None else f"{c.bits}-bit sign codes (seed {c.seed}, {c.candidates} candidates)"

        raise ValueError(f"growing {base_uri}: its rows carry {said(base_codes)}, this job would write "
                         f"{said(codes)}: set search.codes_bits/codes_seed/codes_candidates (--codes) as the base did")
    recorded = (layout.manifest.extra if layout.manifest else {}).get("model")
    model = model_identity(source)
    if recorded is not None and recorded != model:
        raise ValueError(f"growing {base_uri}: --checkpoint {source.checkpoint} is not the model that embedded it "
                         f"({layout.manifest.checkpoint}); an index never mixes two models' embeddings")
    return model if recorded is not None else None


def _merge(base_uri: str, out_uri: str, staging: str, result, remove_ids, model: str | None):
    added = [] if result is None else [pq.read_table(io.BytesIO(fs.read_bytes(uri)))
                                       for uri in index_layout(staging).files]
    manifest = new_version(base_uri, out_uri, added, remove_ids, model=model)
    if result is not None:
        fs.remove(staging, recursive=True)
    return manifest, result
