"""The gallery index: the one owner of its format (:mod:`.format`), its writers (:mod:`.writer`) and
readers (:mod:`.reader`, :mod:`.items`). The embedding job, QuickDraw indexing, search, evaluation and serving
all go through it."""

from ray_sbir.index.format import (
    CODE, COLUMNS, DICTIONARY_COLUMNS, EMBEDDING, FAILURES, FORMAT_VERSION, ITEM_COLUMNS, LEGACY_MANIFEST, MANIFEST, PLAN,
    SOURCE_COLUMNS, Manifest, item_table, shard_failures_name,
)
from ray_sbir.index.items import GalleryItems
from ray_sbir.index.reader import (
    IndexLayout, IndexTable, embedding_matrix, index_layout, read_code_rows, read_columns, read_embedding_rows,
    read_index, read_manifest,
)
from ray_sbir.index.writer import begin, commit_shard, committed_shard, finish, fingerprint, write_index
from ray_sbir.index.versions import index_version, new_version

__all__ = [
    "CODE", "COLUMNS", "DICTIONARY_COLUMNS", "EMBEDDING", "FAILURES", "FORMAT_VERSION", "ITEM_COLUMNS", "LEGACY_MANIFEST",
    "MANIFEST", "PLAN", "SOURCE_COLUMNS", "GalleryItems", "IndexLayout", "IndexTable", "Manifest", "begin",
    "commit_shard", "committed_shard", "embedding_matrix", "finish", "fingerprint", "index_layout", "index_version", "item_table", "new_version",
    "read_code_rows", "read_columns", "read_embedding_rows", "read_index", "read_manifest", "shard_failures_name", "write_index",
]
