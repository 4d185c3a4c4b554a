"""The layout registry and what layouts share: listing image files per class folder.

A layout is a class registered with ``@LAYOUTS.register("name")`` that defines two static methods:

``detect(root) -> bool``
    whether ``root`` looks like this layout (``data.layout: auto`` asks the layouts in registration order);
``items(root, *, manifest, errors, strict) -> list[dict]``
    the catalog rows (``item_id``, ``uri``, ``modality``, ``label``, ``instance_id``, and for drawings
    ``strokes``; see :mod:`ray_sbir.data.catalog`). Malformed records are appended to ``errors`` and skipped,
    or raise when ``strict``.
"""

from __future__ import annotations

import posixpath

from ray_sbir import fs
from ray_sbir.registry import Registry

__all__ = ["AUTO", "IMAGE_SUFFIXES", "LAYOUTS", "MODALITIES", "Layout", "class_folders", "image_items", "relative"]

AUTO = "auto"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
MODALITIES = ("sketch", "photo")

LAYOUTS: Registry = Registry("dataset layout", key="data.layout", package="ray_sbir.data.layouts")


class Layout:
    @staticmethod
    def detect(root: str) -> bool:
        raise NotImplementedError

    @staticmethod
    def items(root: str, *, manifest: str | None, errors: list[str], strict: bool) -> list[dict]:
        raise NotImplementedError


def relative(uri: str, root: str) -> str:
    return posixpath.relpath(uri.split("://", 1)[-1], root.split("://", 1)[-1])


def class_folders(root: str) -> list[tuple[str, str]]:
    """(class, folder) pairs under ``root``, looking through Sketchy's optional ``tx_*`` level."""
    dirs = fs.list_dirs(root)
    tx = [d for d in dirs if posixpath.basename(d.rstrip("/")).startswith("tx_")]
    if tx:
        # Sketchy ships several augmentation variants (tx_000000000000, tx_000100000000, ...): the first is
        # the canonical one used in the ZS-SBIR literature.
        dirs = fs.list_dirs(sorted(tx)[0])
    return [(posixpath.basename(d.rstrip("/")), d) for d in dirs]


def image_items(root: str, folder_root: str, modality: str) -> list[dict]:
    """One row per image file in ``folder_root/<class>/``."""
    rows = []
    for label, folder in class_folders(folder_root):
        for uri in fs.list_files(folder, IMAGE_SUFFIXES):
            name = posixpath.splitext(posixpath.basename(uri))[0]
            # Sketchy sketch files are <photo id>-<n>.png: the photo id pairs a sketch with its photo.
            instance = name.rsplit("-", 1)[0] if modality == "sketch" and "-" in name else name
            rows.append({"item_id": relative(uri, root), "uri": uri, "modality": modality, "label": label,
                         "instance_id": instance})
    return rows
