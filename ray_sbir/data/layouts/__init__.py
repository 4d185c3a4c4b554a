"""Dataset layouts (a registry) and the checks of the ``data`` section of a config.

A layout turns a dataset root into catalog rows (``uri``, ``modality``, ``label``, ``instance_id`` and, for
drawings, their strokes); ``data.layout: auto`` asks each registered layout's ``detect`` in registration order
(the imports below). Adding one: a module defining a :class:`~ray_sbir.data.layouts.base.Layout` subclass
decorated with ``@LAYOUTS.register("name")``, imported here. For example::

    @LAYOUTS.register("flat_pairs")
    class FlatPairs(Layout):
        detect = staticmethod(lambda root: fs.exists(fs.join(root, "pairs.txt")))

        @staticmethod
        def items(root, *, manifest, errors, strict):
            return [{"item_id": ..., "uri": ..., "modality": "sketch", "label": ..., "instance_id": None}, ...]
"""

from __future__ import annotations

from ray_sbir import fs
from ray_sbir.data.layouts.base import AUTO, LAYOUTS, Layout
from ray_sbir.data.splits import NAMED_SPLITS
from ray_sbir.registry import ConfigError, register_section_check

# Importing a layout's module registers it; this order is the detection order of data.layout: auto.
from ray_sbir.data.layouts import manifest, quickdraw, sketchy, photos, tuberlin  # noqa: E402,F401  isort: skip

__all__ = ["AUTO", "LAYOUTS", "Layout", "check_data_section", "detect_layout", "layout_names"]

ROOT_SPLIT = "root"  # data.unseen: root -> unseen_classes.txt in the dataset root
NO_SPLIT = "none"  # data.unseen: none -> every class is seen (a gallery to embed, nothing to evaluate)
ASSETS = "assets:"  # files shipped in ray_sbir/assets, e.g. assets:sketchy_class_vectors.txt


def layout_names() -> list[str]:
    return [AUTO, *LAYOUTS.names()]


def detect_layout(root: str) -> str:
    """The first registered layout whose ``detect`` recognises ``root``."""
    if not fs.isdir(root):
        raise FileNotFoundError(f"dataset root not found or not a folder: {root}")
    for name, layout in LAYOUTS.in_order():
        if layout.detect(root):
            return name
    raise ValueError(f"cannot detect the layout of {root}: expected manifest.parquet/.csv, sketch/ + photo/ "
                     "folders, <class>.ndjson files, <class>/ folders or image files (or set data.layout)")


def _check_unseen(spec: str, root: str, check_paths: bool) -> None:
    spec = spec.strip()
    if spec == NO_SPLIT:
        return
    if spec in NAMED_SPLITS or spec == ROOT_SPLIT:
        if spec == ROOT_SPLIT and check_paths and not fs.exists(fs.join(root, "unseen_classes.txt")):
            raise ConfigError(f"data.unseen: root reads unseen_classes.txt from the dataset root, and "
                              f"{fs.join(root, 'unseen_classes.txt')} does not exist; give a named split "
                              f"({', '.join(NAMED_SPLITS)}), random:N, a class-list file or none")
        return
    if spec.startswith("random:"):
        n = spec.split(":", 1)[1].strip()
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"data.unseen: {spec!r}: expected random:<count>, e.g. random:10")
        return
    looks_like_file = "/" in spec or "." in spec or "://" in spec
    if not looks_like_file or (check_paths and not (fs.exists(spec) and not fs.isdir(spec))):
        raise ConfigError(f"data.unseen: {spec!r} is neither a named split ({', '.join(NAMED_SPLITS)}), "
                          f"random:N, root, none, nor {'an existing' if looks_like_file else 'a'} class-list file")


def _check_exists(key: str, uri: str | None, folder: bool = False) -> None:
    if not uri or uri.startswith(ASSETS):
        return
    try:
        if fs.is_remote(uri) and not fs.probe(uri, key):  # unreachable store, credentials: one sentence, seconds
            ok = False
        else:
            ok = fs.isdir(uri) if folder else fs.exists(uri)
    except fs.StorageError as e:
        raise ConfigError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - a bucket we may not read is as unusable as a missing one
        raise ConfigError(f"{key}: cannot read {uri}: {type(e).__name__}: {e}") from None
    if not ok:
        raise ConfigError(f"{key}: {'folder' if folder else 'file'} not found: {uri}")


@register_section_check
def check_data_section(cfg, check_paths: bool) -> None:
    """``data.layout`` is registered, ``data.unseen`` is a split we can read, and with ``check_paths`` the
    dataset root, manifest, class-list, word-vector and phrase-map files exist (one cheap check each)."""
    d = cfg.data
    names = layout_names()
    if d.layout not in names:
        raise ConfigError(f"data.layout: unknown dataset layout {d.layout!r}; registered: {', '.join(names)}")
    if check_paths:
        if not d.manifest:
            _check_exists("data.root", d.root, folder=True)
        _check_exists("data.manifest", d.manifest)
    _check_unseen(d.unseen, d.root, check_paths and not d.manifest)
    if check_paths:
        _check_exists("data.word_vectors", d.word_vectors)
        _check_exists("data.phrase_map", d.phrase_map)
