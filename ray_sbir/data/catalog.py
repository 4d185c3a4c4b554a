"""Dataset catalogs: the items of a dataset (uri, modality, class, instance), from a manifest or a layout.

A catalog is a ``pyarrow.Table`` with one row per item and the columns of :data:`CATALOG_SCHEMA`:

- ``item_id``: unique within the dataset (relative path for files; ``<file>:<key_id>`` for QuickDraw);
- ``uri``: where the item's bytes live (for QuickDraw drawings: the ndjson file);
- ``modality``: ``sketch`` or ``photo``; ``label``: class name; ``instance_id``: optional pairing key
  (Sketchy's photo id for its sketches);
- ``strokes``: QuickDraw drawings carried in-line as flat float32 ``(x, y, end-of-stroke)`` triples
  (``list<float32>``, :func:`~ray_sbir.data.quickdraw.pack_strokes`; null for image files),
  so Ray Data tasks rasterise them without re-reading the ndjson files.

Layouts (``data.layout``; ``auto`` detects them in this order):

- ``manifest``: Parquet or CSV with columns ``uri, modality, label[, instance_id]`` (relative URIs are taken
  relative to the manifest's folder);
- ``sketchy``: ``photo/<class>/*.jpg`` and ``sketch/<class>/*.png``, with or without the
  ``tx_000000000000`` level;
- ``quickdraw``: ``<class>.ndjson`` at the root or in ``sketch/``, photos in ``photo/<class>/*``
  (QuickDraw-Extended);
- ``tuberlin``: ``<class>/*.png`` sketches (photos, when there are any, come through a manifest).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ray_sbir import fs
from ray_sbir.data import quickdraw

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
LAYOUTS = ("auto", "manifest", "sketchy", "quickdraw", "tuberlin")
MODALITIES = ("sketch", "photo")

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
    cols = {name: [r.get(name) for r in rows] for name in CATALOG_SCHEMA.names}
    return pa.table(cols, schema=CATALOG_SCHEMA)


def _relative(uri: str, root: str) -> str:
    return posixpath.relpath(uri.split("://", 1)[-1], root.split("://", 1)[-1])


def detect_layout(root: str) -> str:
    if not fs.isdir(root):
        raise FileNotFoundError(f"dataset root not found or not a folder: {root}")
    for name in ("manifest.parquet", "manifest.csv"):
        if fs.exists(fs.join(root, name)):
            return "manifest"
    has_sketch = fs.isdir(fs.join(root, "sketch"))
    if has_sketch and fs.list_files(fs.join(root, "sketch"), (".ndjson",), recursive=False):
        return "quickdraw"
    if fs.list_files(root, (".ndjson",), recursive=False):
        return "quickdraw"
    if has_sketch and fs.isdir(fs.join(root, "photo")):
        return "sketchy"
    if fs.list_dirs(root):
        return "tuberlin"
    raise ValueError(
        f"cannot detect the layout of {root}: expected manifest.parquet/.csv, sketch/ + photo/ folders, "
        f"<class>.ndjson files or <class>/ folders"
    )


def _class_folders(root: str, modality: str) -> list[tuple[str, str]]:
    """(class, folder) pairs under ``root``, looking through Sketchy's optional ``tx_*`` level."""
    dirs = fs.list_dirs(root)
    tx = [d for d in dirs if posixpath.basename(d.rstrip("/")).startswith("tx_")]
    if tx:
        # Sketchy ships several augmentation variants (tx_000000000000, tx_000100000000, ...): the first is
        # the canonical one used in the ZS-SBIR literature.
        dirs = fs.list_dirs(sorted(tx)[0])
    return [(posixpath.basename(d.rstrip("/")), d) for d in dirs]


def _image_items(root: str, folder_root: str, modality: str) -> list[dict]:
    rows = []
    for label, folder in _class_folders(folder_root, modality):
        for uri in fs.list_files(folder, IMAGE_SUFFIXES):
            name = posixpath.splitext(posixpath.basename(uri))[0]
            # Sketchy sketch files are <photo id>-<n>.png: the photo id pairs a sketch with its photo.
            instance = name.rsplit("-", 1)[0] if modality == "sketch" and "-" in name else name
            rows.append({"item_id": _relative(uri, root), "uri": uri, "modality": modality, "label": label,
                         "instance_id": instance})
    return rows


def _ndjson_items(root: str, folder: str, errors: list[str], strict: bool) -> list[dict]:
    rows = []
    for uri in fs.list_files(folder, (".ndjson",), recursive=False):
        label = posixpath.splitext(posixpath.basename(uri))[0]
        bad: list[quickdraw.MalformedDrawing] = []
        rel = _relative(uri, root)
        for drawing in quickdraw.read_ndjson(uri, errors=bad, strict=strict):
            rows.append({"item_id": f"{rel}:{drawing.key_id}", "uri": uri, "modality": "sketch", "label": label,
                         "instance_id": drawing.key_id, "strokes": quickdraw.pack_strokes(drawing.strokes)})
        errors.extend(str(e) for e in bad)
    return rows


def _manifest_items(manifest: str) -> list[dict]:
    if manifest.endswith(".parquet"):
        import pyarrow.parquet as pq

        pafs, path = fs.pyarrow_filesystem(manifest)
        table = pq.read_table(path, filesystem=pafs)
    elif manifest.endswith(".csv"):
        import pyarrow.csv as pcsv

        with fs.open_uri(manifest, "rb") as f:
            table = pcsv.read_csv(f)
    else:
        raise ValueError(f"manifest {manifest} must be .parquet or .csv")
    missing = [c for c in ("uri", "modality", "label") if c not in table.column_names]
    if missing:
        raise ValueError(f"manifest {manifest} lacks column(s) {missing}; has {table.column_names}")
    base = posixpath.dirname(manifest) if fs.is_remote(manifest) else fs.filesystem(manifest)[1].rsplit("/", 1)[0]
    rows = []
    for i, row in enumerate(table.to_pylist()):
        if row["modality"] not in MODALITIES:
            raise ValueError(f"manifest {manifest} row {i + 1}: modality {row['modality']!r} not in {MODALITIES}")
        uri = str(row["uri"])
        if "://" not in uri and not uri.startswith("/"):
            uri = fs.join(base, uri)
        rows.append({"item_id": str(row.get("item_id") or _relative(uri, base)), "uri": uri,
                     "modality": row["modality"], "label": str(row["label"]),
                     "instance_id": None if row.get("instance_id") is None else str(row["instance_id"])})
    return rows


def build_catalog(root: str, layout: str = "auto", manifest: str | None = None, strict: bool = False) -> Catalog:
    """Catalogue a dataset. Malformed QuickDraw lines are skipped and listed (``strict``: raise instead)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown data.layout {layout!r}; expected one of {LAYOUTS}")
    if manifest:
        layout = "manifest"
    elif layout == "auto":
        layout = detect_layout(root)
    errors: list[str] = []
    rows: list[dict] = []
    if layout == "manifest":
        if manifest is None:
            candidates = [fs.join(root, n) for n in ("manifest.parquet", "manifest.csv")]
            manifest = next((c for c in candidates if fs.exists(c)), None)
            if manifest is None:
                raise FileNotFoundError(f"no manifest.parquet or manifest.csv in {root} (or set data.manifest)")
        rows = _manifest_items(manifest)
    elif layout == "sketchy":
        rows = _image_items(root, fs.join(root, "photo"), "photo") + _image_items(root, fs.join(root, "sketch"), "sketch")
    elif layout == "quickdraw":
        sketch_dir = fs.join(root, "sketch")
        folder = sketch_dir if fs.isdir(sketch_dir) and fs.list_files(sketch_dir, (".ndjson",), recursive=False) else root
        rows = _ndjson_items(root, folder, errors, strict)
        if fs.isdir(fs.join(root, "photo")):
            rows += _image_items(root, fs.join(root, "photo"), "photo")
    elif layout == "tuberlin":
        rows = _image_items(root, root, "sketch")
    if not rows:
        raise ValueError(f"no items found in {root} (layout {layout})")
    table = _rows_to_table(rows)
    dup = len(set(table["item_id"].to_pylist())) != table.num_rows
    if dup:
        raise ValueError(f"duplicate item ids in {root}: every item must have a unique id")
    table = table.sort_by([("modality", "ascending"), ("label", "ascending"), ("item_id", "ascending")])
    return Catalog(table, layout, root, errors)
