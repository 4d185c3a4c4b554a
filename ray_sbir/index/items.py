"""The ingress's view of an index's items: ids, uris, labels and provenance per row, and id -> row lookup."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_sbir.index.format import COLUMNS, SOURCE_COLUMNS
from ray_sbir.index.reader import IndexLayout, read_columns

# Columns a search filter never names: where an item's line lies in its file is not a property of the item.
UNFILTERED = ("source_offset", "source_length")


class GalleryItems:
    """The ingress's view of the gallery rows: ``id``, ``uri`` and ``label`` per row, and id -> row lookup.

    Held as Arrow arrays (string bytes + a 4-byte offset per row, labels dictionary-encoded: 4 bytes per row
    plus the class list) and, for the lookup, the rows sorted by id (one ``int32`` per row, ``int64`` past
    2**31 rows) searched by bisection -- about ``len(id) + len(uri) + 16`` bytes per item, not the ~450 bytes
    of Python strings plus a dict entry, so tens of millions of items fit in an ingress replica. Read straight
    from the Parquet columns (no Python object per row, even while loading). A duplicated id maps to its
    first row (the sort is stable)."""

    def __init__(self, ids, uris, labels, source: dict | None = None):
        def strings(col, fill: str | None) -> pa.Array:
            arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            if pa.types.is_dictionary(arr.type):
                arr = arr.dictionary_decode()
            if not pa.types.is_string(arr.type):
                arr = arr.cast(pa.string())
            if fill is not None and arr.null_count:
                arr = pc.fill_null(arr, fill)
            return arr

        self.ids = strings(ids, "None")
        self.uris = strings(uris, "None")
        self.labels = strings(labels, None).dictionary_encode()
        if not len(self.ids) == len(self.uris) == len(self.labels):
            raise ValueError("id, uri and label columns differ in length")
        # Provenance columns the index has (QuickDraw: key_id, countrycode, recognized, the line's byte range).
        self.source = {name: (col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
                       for name, col in (source or {}).items()}
        for name, col in self.source.items():
            if len(col) != len(self.ids):
                raise ValueError(f"index column {name} has {len(col)} rows for {len(self.ids)} items")
        order = pc.sort_indices(self.ids).to_numpy()  # stable: equal ids keep row order
        self._order = order.astype(np.int32 if len(order) < 2**31 else np.int64)

    @classmethod
    def read(cls, uri: str, layout: IndexLayout) -> "GalleryItems":
        """The ``id, uri, label`` columns of an index and whichever source columns it has, in row order (the
        order of ``layout.files``), read in one pass over its files."""
        cols = read_columns(uri, layout, ["id", "uri", "label"],
                            optional=[*SOURCE_COLUMNS, "modality", *_extra_columns(uri, layout)])
        return cls(cols.pop("id"), cols.pop("uri"), cols.pop("label"), cols)

    def filter_columns(self) -> dict[str, pa.Array]:
        """The columns a search filter may name (:class:`ray_sbir.search.filters.RowFilter`), by name."""
        out = {"id": self.ids, "uri": self.uris, "label": self.labels}
        return {**out, **{k: v for k, v in self.source.items() if k not in UNFILTERED}}

    def __len__(self) -> int:
        return len(self.ids)

    def id(self, row: int) -> str:
        return self.ids[row].as_py()

    def uri(self, row: int) -> str:
        return self.uris[row].as_py()

    def rows(self, rows) -> tuple[list[str], list[str | None]]:
        """``(ids, labels)`` of some rows (one Arrow take each)."""
        idx = pa.array(np.asarray(rows, dtype=np.int64))
        return self.ids.take(idx).to_pylist(), self.labels.take(idx).dictionary_decode().to_pylist()

    def row_of(self, item_id: str) -> int | None:
        """The (first) row whose id is ``item_id``, or ``None``: bisection over the id-sorted rows. Arrow sorts
        strings by their UTF-8 bytes, which is the code-point order Python compares ``str`` by."""
        order, ids = self._order, self.ids
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            if ids[int(order[mid])].as_py() < item_id:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(order) and ids[int(order[lo])].as_py() == item_id:
            return int(order[lo])
        return None

    def class_counts(self) -> dict:
        """Rows per label (``"None"`` for rows without one), sorted by label."""
        counts = pc.value_counts(self.labels.dictionary_decode()).to_pylist()
        out: dict[str, int] = {}
        for c in counts:
            key = str(c["values"])
            out[key] = out.get(key, 0) + int(c["counts"])
        return dict(sorted(out.items()))

    def details(self, rows) -> list[dict]:
        """Per row, the provenance fields shown with a result (``key_id``, ``countrycode``, ``recognized``);
        empty dicts for an index without them."""
        shown = [c for c in ("key_id", "countrycode", "recognized") if c in self.source]
        if not shown:
            return [{} for _ in rows]
        idx = pa.array(np.asarray(rows, dtype=np.int64))
        cols = {c: self.source[c].take(idx).to_pylist() for c in shown}
        return [{c: cols[c][i] for c in shown} for i in range(len(idx))]

    def source_range(self, row: int) -> tuple[int, int] | None:
        """``(byte offset, length)`` of the item's line in its ``uri``, when the index records it."""
        if "source_offset" not in self.source or "source_length" not in self.source:
            return None
        offset, length = self.source["source_offset"][row].as_py(), self.source["source_length"][row].as_py()
        return None if offset is None or length is None else (int(offset), int(length))

    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.uris.nbytes + self.labels.nbytes + self._order.nbytes
                   + sum(col.nbytes for col in self.source.values()))


def _extra_columns(uri: str, layout: IndexLayout) -> list[str]:
    """Scalar columns an index carries beyond its format's (e.g. a ``collection`` its items file added): kept for
    filters. Read from the first file's schema."""
    import pyarrow.parquet as pq

    from ray_sbir import fs

    if not layout.files:
        return []
    pafs, _ = fs.pyarrow_filesystem(uri)
    schema = pq.read_schema(fs.pyarrow_filesystem(layout.files[0])[1], filesystem=pafs)
    return [f.name for f in schema if f.name not in COLUMNS and f.name not in ("error", "row")
            and (pa.types.is_string(f.type) or pa.types.is_boolean(f.type) or pa.types.is_integer(f.type)
                 or pa.types.is_dictionary(f.type))]
