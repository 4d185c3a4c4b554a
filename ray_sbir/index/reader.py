"""Reading an index: its layout (files and row counts, from the manifest), embedding rows, item columns.

Every reader uses one row order: the manifest's ``files`` (version 2, and version 1 ``manifest.json``), or for
a version 1 ``_manifest.json`` the sorted listing of the folder's own Parquet files. Row ``i`` means the same
item to the search shards, the ingress, evaluation and thumbnails.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_sbir import fs
from ray_sbir.index.format import CODE, COLUMNS, EMBEDDING, LEGACY_MANIFEST, MANIFEST, Manifest


@dataclass
class IndexLayout:
    """The files of an index in row order, their row counts, the embedding width and the manifest."""

    files: list[str]  # full URIs
    rows: list[int]
    dim: int
    manifest: Manifest | None = None

    @property
    def count(self) -> int:
        return int(sum(self.rows))


def read_manifest(uri: str) -> Manifest | None:
    """The index's manifest (``_manifest.json``, else version 1's ``manifest.json``), ``None`` if it has none."""
    for name in (MANIFEST, LEGACY_MANIFEST):
        path = fs.join(uri, name)
        if fs.exists(path):
            return Manifest.from_json(fs.read_text(path), path)
    return None


def index_layout(uri: str) -> IndexLayout:
    """Files, row counts and dimension of an index: from the manifest alone when it records them (version 2),
    else from the Parquet footers (no data read)."""
    manifest = read_manifest(uri)
    if manifest is not None and manifest.rows is not None and manifest.dim:
        return IndexLayout([fs.join(uri, f) for f in manifest.files], list(manifest.rows), int(manifest.dim),
                           manifest)
    if manifest is not None and manifest.files:
        files = [fs.join(uri, f) for f in manifest.files]
    else:  # no manifest (a folder of Parquet files, e.g. written by Ray Data): its own shards, sorted
        files = fs.list_files(uri, (".parquet",), recursive=False)
    if not files:
        raise FileNotFoundError(f"no Parquet files in index {uri}")
    pafs, _ = fs.pyarrow_filesystem(uri)
    rows, dim = [], None
    for f in files:
        with pafs.open_input_file(fs.pyarrow_filesystem(f)[1]) as fh:
            pf = pq.ParquetFile(fh)
            rows.append(pf.metadata.num_rows)
            if dim is None:
                if EMBEDDING not in pf.schema_arrow.names:
                    raise ValueError(f"index file {f} has no {EMBEDDING!r} column")
                t = pf.schema_arrow.field(EMBEDDING).type
                storage = getattr(t, "storage_type", t)
                if hasattr(storage, "list_size"):
                    dim = int(storage.list_size)
    layout = IndexLayout(files, rows, 0, manifest)
    if manifest is not None and manifest.count != layout.count:
        raise ValueError(f"index {uri} has {layout.count} rows, manifest says {manifest.count}")
    if manifest is not None and manifest.dim and dim and int(manifest.dim) != dim:
        raise ValueError(f"index {uri}: embeddings have dimension {dim}, manifest says {manifest.dim}")
    layout.dim = dim or int((manifest.dim if manifest else None) or read_embedding_rows(uri, layout, 0, 1).shape[1])
    return layout


def embedding_matrix(column: pa.ChunkedArray, n: int, dim: int | None, dtype=np.float32,
                     out: np.ndarray | None = None) -> np.ndarray:
    """``fixed_size_list<float>`` (or equal-length ``list<float>``, or Ray's tensor extension type) column ->
    one C-contiguous ``(n, dim)`` ``dtype`` array, filled chunk by chunk without Python loops over rows
    (``dtype=np.uint64`` reads the packed codes); ``out``: the ``(n, dim)`` array to fill instead."""
    row = 0
    for chunk in column.chunks:
        if isinstance(chunk, pa.ExtensionArray):
            chunk = chunk.storage
        if chunk.null_count:
            raise ValueError("index has null embeddings")
        t = chunk.type
        if pa.types.is_fixed_size_list(t):
            width = t.list_size
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            lengths = chunk.value_lengths().to_numpy(zero_copy_only=False)
            width = int(lengths[0]) if len(lengths) else (dim or 0)
            if len(lengths) and not (lengths == width).all():
                raise ValueError("index embeddings have different lengths")
        else:
            raise ValueError(f"embedding column must be a list of floats, got {t}")
        if dim is None:
            dim = width
        if width != dim and len(chunk):
            raise ValueError(f"index embeddings have dimension {width}, manifest says {dim}")
        if out is None:
            out = np.empty((n, dim), dtype=dtype)
        vals = chunk.flatten().to_numpy(zero_copy_only=False)  # flatten respects slice offsets
        out[row:row + len(chunk)] = vals.reshape(len(chunk), dim)  # casts to out's dtype if stored otherwise
        row += len(chunk)
    if out is None:
        out = np.empty((0, dim or 0), dtype=dtype)
    return out


def read_columns(uri: str, layout: IndexLayout, columns: Sequence[str], *, start: int = 0,
                 stop: int | None = None, optional: Sequence[str] = ()) -> dict[str, pa.ChunkedArray]:
    """Columns of rows ``start:stop`` (default all), in row order; files outside the range are not read.
    Every file must hold ``columns``; ``optional`` ones are read, in the same pass, where a file has them (a
    column no file has is absent from the result)."""
    wanted = [*columns, *optional]
    pieces: dict[str, list] = {c: [] for c in wanted}
    types: dict[str, pa.DataType] = {}
    for t in _file_slices(uri, layout, columns, wanted, start, stop):
        for c in t.column_names:
            types.setdefault(c, t.schema.field(c).type)
            pieces[c] += t.column(c).chunks
    return {c: pa.chunked_array(pieces[c], type=types[c]) for c in wanted if c in types}


def _file_slices(uri: str, layout: IndexLayout, columns: Sequence[str], wanted: Sequence[str], start: int,
                 stop: int | None) -> Iterator[pa.Table]:
    """Per file holding rows of ``start:stop``, in row order: its ``wanted`` columns (those it has; every one of
    ``columns`` must be there), sliced to the range. The last file is still read, for its schema, when no other
    was (an empty range)."""
    stop = layout.count if stop is None else stop
    pafs, _ = fs.pyarrow_filesystem(uri)
    offset, read_any = 0, False
    for i, (f, n) in enumerate(zip(layout.files, layout.rows)):
        lo, hi = max(start, offset), min(stop, offset + n)
        offset += n
        if lo >= hi and not (i == len(layout.files) - 1 and not read_any):
            continue
        path = fs.pyarrow_filesystem(f)[1]
        names = pq.read_schema(path, filesystem=pafs).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(_missing_columns_message(uri, f, missing))
        table = pq.read_table(path, filesystem=pafs, columns=[c for c in wanted if c in names])
        read_any = True
        box = [table.slice(lo - (offset - n), max(0, hi - lo))]
        del table
        yield box.pop()  # held by no local here: the caller dropping it frees the file's buffers


def _missing_columns_message(uri: str, f: str, missing: list[str]) -> str:
    msg = f"index file {f} has no column(s) {missing}"
    if "id" in missing and "uri" in missing:
        msg += (f"; {uri} looks like a QuickDraw index written before index format 2 (no id/uri columns): "
                f"rebuild it with `python jobs/index_quickdraw.py --prefix <ndjson folder> --checkpoint <checkpoint> "
                f"--out {uri}`")
    return msg


def read_code_rows(uri: str, layout: IndexLayout, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a binary index's packed codes, ``(stop - start, W)`` uint64."""
    cols = read_columns(uri, layout, [CODE], start=start, stop=stop)
    return embedding_matrix(cols[CODE], max(0, stop - start), None, np.uint64)


def read_embedding_rows(uri: str, layout: IndexLayout, start: int, stop: int, dtype=np.float32) -> np.ndarray:
    """Rows ``start:stop`` of the embeddings as one ``(stop - start, dim)`` ``dtype`` array, filled file by file:
    the peak is the result plus one file's column, so a shard kept in float16 never holds its rows as float32
    (5M x 256 rows: 2.6 GB, not 5.1 GB of float32 and Arrow's read buffers on top)."""
    if not layout.dim:  # width unknown until a file is read (a folder without a version 2 manifest)
        cols = read_columns(uri, layout, [EMBEDDING], start=start, stop=stop)
        if EMBEDDING not in cols:
            return np.zeros((0, layout.dim), dtype)
        return embedding_matrix(cols[EMBEDDING], max(0, stop - start), None, dtype)
    out = np.empty((max(0, stop - start), layout.dim), dtype)
    row = 0
    for t in _file_slices(uri, layout, [EMBEDDING], [EMBEDDING], start, stop):
        embedding_matrix(t.column(EMBEDDING), t.num_rows, layout.dim, dtype, out=out[row:row + t.num_rows])
        row += t.num_rows
        del t
        pa.default_memory_pool().release_unused()  # Arrow pools the read buffers: hand each file's back
    return out


@dataclass
class IndexTable:
    """An index read into memory: ``embeddings`` is one ``(N, D)`` float32 array, the other columns numpy
    arrays (object arrays for strings; ``None`` when not read or absent)."""

    embeddings: np.ndarray | None
    ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    uris: np.ndarray | None = None
    modality: np.ndarray | None = None
    manifest: Manifest | None = None
    source: dict[str, np.ndarray] = field(default_factory=dict)
    codes: np.ndarray | None = None  # (N, W) uint64, binary indexes

    def __len__(self) -> int:
        for col in (self.embeddings, self.ids, self.labels, self.uris, self.modality):
            if col is not None:
                return len(col)
        return int(self.manifest.count if self.manifest else 0)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings is not None else int(self.manifest.dim)


def read_index(uri: str, columns: Sequence[str] | None = None) -> IndexTable:
    """Read a whole index into memory (evaluation, tests, small galleries).

    ``columns`` limits what is read and must exist (default: every known column the index has)."""
    cols = list(columns) if columns is not None else list(COLUMNS)
    unknown = sorted(set(cols) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown index columns {unknown}; valid: {list(COLUMNS)}")
    layout = index_layout(uri)
    # Named columns must exist; by default every known column the index has is read.
    table = read_columns(uri, layout, cols) if columns is not None else read_columns(uri, layout, [], optional=cols)
    n = layout.count

    def values(name: str) -> np.ndarray | None:
        if name not in table:
            return None
        arr = table[name].to_numpy(zero_copy_only=False)
        return arr.astype(object, copy=False) if pa.types.is_string(table[name].type) or \
            pa.types.is_dictionary(table[name].type) else arr

    emb = embedding_matrix(table[EMBEDDING], n, layout.dim) if EMBEDDING in table else None
    codes = embedding_matrix(table[CODE], n, None, np.uint64) if CODE in table else None
    return IndexTable(embeddings=emb, ids=values("id"), labels=values("label"), uris=values("uri"),
                      modality=values("modality"), manifest=layout.manifest, codes=codes,
                      source={c: values(c) for c in table
                              if c not in ("id", "label", "uri", "modality", EMBEDDING, CODE)})
