"""Dataset catalogs: the items of a dataset (uri, modality, class, instance), from a manifest or a layout.

A catalog is a ``pyarrow.Table`` with one row per item and the columns of :data:`CATALOG_SCHEMA`:

- ``item_id``: unique within the dataset (relative path for files; ``<file>:<key_id>`` for QuickDraw);
- ``uri``: where the item's bytes live (for QuickDraw drawings: the ndjson file);
- ``modality``: ``sketch`` or ``photo``; ``label``: class name; ``instance_id``: optional pairing key
  (Sketchy's photo id for its sketches);
- ``strokes``: QuickDraw drawings carried in-line as flat float32 ``(x, y, end-of-stroke)`` triples
  (``list<float32>``, :func:`~ray_sbir.data.quickdraw.pack_strokes`; null for image files),
  so Ray Data tasks rasterise them without re-reading the ndjson files.

Layouts (``data.layout``; ``auto`` detects them in this order) are registered in :mod:`ray_sbir.data.layouts`:
``manifest`` (Parquet/CSV with ``uri, modality, label[, instance_id]``), ``quickdraw`` (``<class>.ndjson``),
``sketchy`` (``photo/<class>/``, ``sketch/<class>/``), ``photos`` (unlabelled image files), ``tuberlin``
(``<class>/*.png`` sketches).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ray_sbir.data.layouts import AUTO, LAYOUTS, detect_layout


CATALOG_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("uri", pa.string()),
    ("modality", pa.string()),
    ("label", pa.string()),
    ("instance_id", pa.string()),
    ("strokes", pa.list_(pa.float32())),
])


@dataclass
class Catalog:
    items: pa.Table
    layout: str
    root: str
    # Malformed source records skipped while cataloguing (QuickDraw lines), as "file:line: reason".
    errors: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.items.column("label").to_pylist()))

    def select(self, *, modality: str | None = None, labels: list[str] | None = None) -> "Catalog":
        mask = None
        if modality is not None:
            mask = pc.equal(self.items["modality"], modality)
        if labels is not None:
            m = pc.is_in(self.items["label"], value_set=pa.array(list(labels), pa.string()))
            mask = m if mask is None else pc.and_(mask, m)
        table = self.items if mask is None else self.items.filter(mask)
        return Catalog(table, self.layout, self.root, self.errors)

    def exclude(self, item_ids) -> "Catalog":
        """The catalog without the given items (for instance, the ones that failed to decode)."""
        ids = pa.array(sorted({str(i) for i in item_ids}), pa.string())
        if not len(ids):
            return self
        keep = pc.invert(pc.is_in(self.items["item_id"], value_set=ids))
        return Catalog(self.items.filter(keep), self.layout, self.root, self.errors)

    def limit_per_class(self, n: int | None) -> "Catalog":
        """First ``n`` items of each (class, modality): catalogs are sorted, so this is deterministic."""
        if n is None:
            return self
        keys = zip(self.items["label"].to_pylist(), self.items["modality"].to_pylist())
        seen: dict = {}
        keep = []
        for i, key in enumerate(keys):
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= n:
                keep.append(i)
        return Catalog(self.items.take(keep), self.layout, self.root, self.errors)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for label, modality in zip(self.items["label"].to_pylist(), self.items["modality"].to_pylist()):
            out.setdefault(modality, {}).setdefault(label, 0)
            out[modality][label] += 1
        return out

    def __len__(self) -> int:
        return self.items.num_rows


def _rows_to_table(rows: list[dict]) -> pa.Table:
    """The catalog's columns, plus the items' own columns a layout carries (a manifest's ``collection``, say:
    kept through embedding into the index, where search filters read them)."""
    cols = {name: [r.get(name) for r in rows] for name in CATALOG_SCHEMA.names}
    table = pa.table(cols, schema=CATALOG_SCHEMA)
    for name in sorted({k for r in rows for k in r} - set(CATALOG_SCHEMA.names)):
        table = table.append_column(name, pa.array([r.get(name) for r in rows]))
    return table


def extra_columns(table: pa.Table) -> list[str]:
    """The items' own columns of a catalog table beyond :data:`CATALOG_SCHEMA`."""
    return [c for c in table.column_names if c not in CATALOG_SCHEMA.names]


def build_catalog(root: str, layout: str = AUTO, manifest: str | None = None, strict: bool = False) -> Catalog:
    """Catalogue a dataset with the registered ``layout`` (``auto``: detected; a ``manifest`` file: the
    manifest layout). Malformed QuickDraw lines are skipped and listed (``strict``: raise instead)."""
    if manifest:
        layout = "manifest"
    elif layout == AUTO:
        layout = detect_layout(root)
    errors: list[str] = []
    rows = LAYOUTS.get(layout).items(root, manifest=manifest, errors=errors, strict=strict)
    if not rows:
        raise ValueError(f"no items found in {root} (layout {layout})")
    table = _rows_to_table(rows)
    dup = len(set(table["item_id"].to_pylist())) != table.num_rows
    if dup:
        raise ValueError(f"duplicate item ids in {root}: every item must have a unique id")
    table = table.sort_by([("modality", "ascending"), ("label", "ascending"), ("item_id", "ascending")])
    return Catalog(table, layout, root, errors)
