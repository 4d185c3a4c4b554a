"""``sketchy``: ``photo/<class>/*.jpg`` and ``sketch/<class>/*.png`` (Sketchy, and any dataset laid out the same
way), with or without Sketchy's ``tx_000000000000`` level; a sketch ``<photo id>-<n>.png`` is paired with its
photo through ``instance_id``."""

from __future__ import annotations

from ray_sbir import fs
from ray_sbir.data.layouts.base import LAYOUTS, Layout, image_items


@LAYOUTS.register("sketchy")
class SketchyLayout(Layout):
    @staticmethod
    def detect(root: str) -> bool:
        return fs.isdir(fs.join(root, "sketch")) and fs.isdir(fs.join(root, "photo"))

    @staticmethod
    def items(root: str, *, manifest: str | None, errors: list[str], strict: bool) -> list[dict]:
        return image_items(root, fs.join(root, "photo"), "photo") + image_items(root, fs.join(root, "sketch"),
                                                                                "sketch")
