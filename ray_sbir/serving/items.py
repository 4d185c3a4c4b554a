"""Gallery item thumbnails for ``GET /items/{id}/image``: photos decoded from their URI, QuickDraw drawings read
back by byte range (or found in their ndjson file) and rasterised; PNGs kept in a small LRU cache."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from ray_sbir import fs
from ray_sbir.data.decode import RenderSpec
from ray_sbir.index import GalleryItems

__all__ = ["LRU", "render_thumbnail"]


class LRU:
    """A thread-safe least-recently-used cache of at most ``size`` entries."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


def render_thumbnail(items: GalleryItems, row: int, size: int, sketch: RenderSpec) -> bytes:
    """PNG bytes of gallery row ``row`` at ``size`` pixels (drawings with ``sketch``'s line width, scaled)."""
    from PIL import Image

    from ray_sbir.data.images import decode_photo
    from ray_sbir.data.quickdraw import parse_line, rasterize, read_ndjson

    uri, item_id = items.uri(row), items.id(row)
    line_range = items.source_range(row)
    drawing = None
    if line_range is not None:  # a QuickDraw index: read back the drawing's own line, not the file
        offset, length = line_range
        with fs.open_uri(uri, "rb", block_size=length) as f:
            f.seek(offset)
            drawing = parse_line(f.read(length), source=uri, line_no=0)
    elif uri.endswith((".ndjson", ".ndjson.gz")):  # a catalog item (id "<file>:<key_id>"): scan its file
        key = item_id.rsplit(":", 1)[-1]
        drawing = next((d for d in read_ndjson(uri) if d.key_id == key), None)
        if drawing is None:
            raise FileNotFoundError(f"drawing {key} not found in {uri}")
    if drawing is not None:
        arr = rasterize([drawing.strokes], size=size, line_width=max(1.0, sketch.line_width * size / sketch.size),
                        padding=sketch.padding)[0]
    else:
        arr = decode_photo(fs.read_bytes(uri), size, uri)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
