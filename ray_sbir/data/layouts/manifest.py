"""``manifest``: a Parquet or CSV file with columns ``uri, modality, label[, instance_id, item_id]``
(``data.manifest``, or ``manifest.parquet`` / ``manifest.csv`` in the root); relative URIs are taken relative to
the manifest's folder. Any other string, boolean or integer column (``collection``, say) is the items' own: kept
through ``ray-sbir embed`` into the index, where search filters name it."""

from __future__ import annotations

import posixpath

from ray_sbir import fs
from ray_sbir.data.layouts.base import LAYOUTS, MODALITIES, Layout, relative

NAMES = ("manifest.parquet", "manifest.csv")


def _read_table(manifest: str):
    if manifest.endswith(".parquet"):
        import pyarrow.parquet as pq

        pafs, path = fs.pyarrow_filesystem(manifest)
        return pq.read_table(path, filesystem=pafs)
    if manifest.endswith(".csv"):
        import pyarrow.csv as pcsv

        with fs.open_uri(manifest, "rb") as f:
            return pcsv.read_csv(f)
    raise ValueError(f"manifest {manifest} must be .parquet or .csv")


@LAYOUTS.register("manifest")
class ManifestLayout(Layout):
    @staticmethod
    def detect(root: str) -> bool:
        return any(fs.exists(fs.join(root, n)) for n in NAMES)

    @staticmethod
    def items(root: str, *, manifest: str | None, errors: list[str], strict: bool) -> list[dict]:
        if manifest is None:
            manifest = next((c for c in (fs.join(root, n) for n in NAMES) if fs.exists(c)), None)
            if manifest is None:
                raise FileNotFoundError(f"no manifest.parquet or manifest.csv in {root} (or set data.manifest)")
        table = _read_table(manifest)
        missing = [c for c in ("uri", "modality", "label") if c not in table.column_names]
        if missing:
            raise ValueError(f"manifest {manifest} lacks column(s) {missing}; has {table.column_names}")
        base = posixpath.dirname(manifest) if fs.is_remote(manifest) else fs.filesystem(manifest)[1].rsplit("/", 1)[0]
        extra = _extra_columns(manifest, table)
        rows = []
        for i, row in enumerate(table.to_pylist()):
            if row["modality"] not in MODALITIES:
                raise ValueError(f"manifest {manifest} row {i + 1}: modality {row['modality']!r} not in {MODALITIES}")
            uri = str(row["uri"])
            if "://" not in uri and not uri.startswith("/"):
                uri = fs.join(base, uri)
            rows.append({"item_id": str(row.get("item_id") or relative(uri, base)), "uri": uri,
                         "modality": row["modality"], "label": str(row["label"]),
                         "instance_id": None if row.get("instance_id") is None else str(row["instance_id"]),
                         **{name: row[name] for name in extra}})
        return rows


def _extra_columns(manifest: str, table) -> list[str]:
    """The manifest's own item columns (string, boolean or integer) beyond the layout's: carried into the index
    for search filters. A column named like one of the index format's is refused."""
    import pyarrow as pa

    from ray_sbir.index.format import check_extra_column

    out = []
    for field in table.schema:
        if field.name in ("uri", "modality", "label", "instance_id", "item_id"):
            continue
        t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if not (pa.types.is_string(t) or pa.types.is_boolean(t) or pa.types.is_integer(t)):
            continue  # not a filterable value (a float, a list): left out
        try:
            check_extra_column(field.name)
        except ValueError as e:
            raise ValueError(f"manifest {manifest}: {e}") from None
        out.append(field.name)
    return out
