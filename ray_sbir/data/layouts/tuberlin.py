"""``tuberlin``: ``<class>/*.png`` sketches at the root (TU-Berlin); photos, when there are any, come through a
manifest."""

from __future__ import annotations

from ray_sbir import fs
from ray_sbir.data.layouts.base import LAYOUTS, Layout, image_items


@LAYOUTS.register("tuberlin")
class TUBerlinLayout(Layout):
    @staticmethod
    def detect(root: str) -> bool:
        return bool(fs.list_dirs(root))

    @staticmethod
    def items(root: str, *, manifest: str | None, errors: list[str], strict: bool) -> list[dict]:
        return image_items(root, root, "sketch")
