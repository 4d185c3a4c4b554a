"""Growing a served gallery (``ray-sbir embed --append-to BASE``): embed only the items the base index does not
hold, with the Ray Data embedding job, and write base + new rows - removed ids as the base's next version
(:func:`ray_sbir.index.new_version`) in another folder, so the endpoint serving the base keeps answering until
it is switched (``serve deploy`` with the new index).

The new rows are embedded into ``<out>_added`` first (resumable like any embedding job: a stopped run re-embeds
only unfinished shards), then merged and that staging folder removed.
"""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_sbir import fs
from ray_sbir.data.catalog import Catalog
from ray_sbir.data.decode import RenderSpec
from ray_sbir.distributed.embed import EmbedResult, ModelSource, embed_items, model_identity
from ray_sbir.index import Manifest, index_layout, new_version, read_index

logger = logging.getLogger(__name__)

__all__ = ["grow_index", "read_id_list"]


def read_id_list(uri: str) -> list[str]:
    """Ids to remove, one per line (blank lines and ``#`` comments skipped)."""
    lines = (line.strip() for line in fs.read_text(uri).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def grow_index(base_uri: str, out_uri: str, items: Catalog, modality: str, source: ModelSource, spec: RenderSpec,
               *, remove_ids=(), **embed_kw) -> tuple[Manifest, EmbedResult | None]:
    """The next version of ``base_uri`` in ``out_uri``: ``items`` of ``modality`` not in the base embedded and
    added, ``remove_ids`` dropped. Returns its manifest and the embedding job's result (``None`` when nothing
    was new)."""
    layout = index_layout(base_uri)
    recorded = (layout.manifest.extra if layout.manifest else {}).get("model")
    model = model_identity(source)
    if recorded is not None and recorded != model:  # before any embedding: new_version would refuse anyway
        raise ValueError(f"growing {base_uri}: --checkpoint {source.checkpoint} is not the model that embedded it "
                         f"({layout.manifest.checkpoint}); an index never mixes two models' embeddings")
    held = pa.array(sorted(set(read_index(base_uri, columns=["id"]).ids.tolist()) | set(remove_ids)), pa.string())
    table = items.select(modality=modality).items
    new = Catalog(table.filter(pc.invert(pc.is_in(table["item_id"], value_set=held))), items.layout, items.root,
                  items.errors)
    logger.info("growing %s: %d of %d %s items are new, %d to remove", base_uri, new.items.num_rows,
                table.num_rows, modality, len(remove_ids))
    added, result = [], None
    staging = out_uri.rstrip("/") + "_added"
    if new.items.num_rows:
        result = embed_items(new, modality, source, staging, spec, **embed_kw)
        added = [pq.read_table(io.BytesIO(fs.read_bytes(uri))) for uri in index_layout(staging).files]
    manifest = new_version(base_uri, out_uri, added, remove_ids, model=model if recorded is not None else None)
    if result is not None:
        fs.remove(staging, recursive=True)
    return manifest, result
