"""``quickdraw``: ``<class>.ndjson`` files at the root or in ``sketch/`` (Google's QuickDraw format, one drawing
per line), photos in ``photo/<class>/*`` when present (QuickDraw-Extended). Drawings are carried in-line as
packed stroke arrays (:func:`ray_sbir.data.quickdraw.pack_strokes`)."""

from __future__ import annotations

import posixpath

from ray_sbir import fs
from ray_sbir.data import quickdraw
from ray_sbir.data.layouts.base import LAYOUTS, Layout, image_items, relative


def _ndjson_folder(root: str) -> str | None:
    sketch_dir = fs.join(root, "sketch")
    if fs.isdir(sketch_dir) and fs.list_files(sketch_dir, (".ndjson",), recursive=False):
        return sketch_dir
    return root if fs.list_files(root, (".ndjson",), recursive=False) else None


def ndjson_items(root: str, folder: str, errors: list[str], strict: bool) -> list[dict]:
    rows = []
    for uri in fs.list_files(folder, (".ndjson",), recursive=False):
        label = posixpath.splitext(posixpath.basename(uri))[0]
        bad: list[quickdraw.MalformedDrawing] = []
        rel = relative(uri, root)
        for drawing in quickdraw.read_ndjson(uri, errors=bad, strict=strict):
            rows.append({"item_id": f"{rel}:{drawing.key_id}", "uri": uri, "modality": "sketch", "label": label,
                         "instance_id": drawing.key_id, "strokes": quickdraw.pack_strokes(drawing.strokes)})
        errors.extend(str(e) for e in bad)
    return rows


@LAYOUTS.register("quickdraw")
class QuickDrawLayout(Layout):
    @staticmethod
    def detect(root: str) -> bool:
        return _ndjson_folder(root) is not None

    @staticmethod
    def items(root: str, *, manifest: str | None, errors: list[str], strict: bool) -> list[dict]:
        rows = ndjson_items(root, _ndjson_folder(root) or root, errors, strict)
        if fs.isdir(fs.join(root, "photo")):
            rows += image_items(root, fs.join(root, "photo"), "photo")
        return rows
