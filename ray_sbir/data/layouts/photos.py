"""``photos``: a gallery without classes, every image file under the root (any depth) a photo with an empty
label. For ``embed --classes all`` with ``data.unseen: none``: what a search service indexes (a product
catalogue, a photo library), where nobody labelled anything and nothing is trained or evaluated."""

from __future__ import annotations

import posixpath

from ray_sbir import fs
from ray_sbir.data.layouts.base import IMAGE_SUFFIXES, LAYOUTS, Layout, relative

UNLABELLED = ""  # the label of every item: a class of its own, so class selections still work


@LAYOUTS.register("photos")
class PhotosLayout(Layout):
    @staticmethod
    def detect(root: str) -> bool:
        # Image files directly in the root (asked before tuberlin, whose roots hold only class folders). An
        # unlabelled folder with no image at its top looks like class folders: set data.layout: photos for it.
        return bool(fs.list_files(root, IMAGE_SUFFIXES, recursive=False))

    @staticmethod
    def items(root: str, *, manifest: str | None, errors: list[str], strict: bool) -> list[dict]:
        return [{"item_id": relative(uri, root), "uri": uri, "modality": "photo", "label": UNLABELLED,
                 "instance_id": posixpath.splitext(posixpath.basename(uri))[0]}
                for uri in fs.list_files(root, IMAGE_SUFFIXES)]
