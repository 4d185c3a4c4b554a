"""One registry helper for everything created by name: models, loss terms, training tasks, similarity heads,
search stages and dataset layouts (timm's ``register_model`` / ``create_model`` pattern, once).

A package makes a :class:`Registry` and its modules decorate what they define::

    LAYOUTS = Registry("dataset layout", key="data.layout", package="ray_sbir.data.layouts")

    @LAYOUTS.register("sketchy")
    def sketchy_items(root, ...): ...

    LAYOUTS.get("sketchy")      # the entry; an unknown name is a ConfigError naming every registered one
    LAYOUTS.names()             # sorted names

Registration is triggered one way: importing the registry's ``package`` (its ``__init__`` imports the built-in
modules). Lookups import it first, so a registry is complete wherever it is consulted.

Configuration sections owned by a registry are checked by the package that owns it: it registers a section
check with :func:`register_section_check`, and :func:`check_sections` (called by ``ray_sbir.config`` when a
config is loaded) runs them all. The packages holding section checks are listed in :data:`SECTION_PACKAGES`, by
name: ``config`` imports none of them, so there is no import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterable, TypeVar

__all__ = ["ConfigError", "Registry", "SECTION_PACKAGES", "check_sections", "register_section_check"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file, override or registered name is invalid; the message says which key and why."""


class Registry(Generic[T]):
    """Named entries of one kind. ``kind`` names them in errors ("loss term"), ``key`` is the config key that
    selects one ("loss.terms"), ``package`` is imported before any lookup (it registers the built-ins)."""

    def __init__(self, kind: str, *, key: str, package: str | None = None):
        self.kind, self.key, self.package = kind, key, package
        self._entries: dict[str, T] = {}
        self._extras: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **extras: Any) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name``; ``extras`` are kept beside it
        (:meth:`extra`). A class gets ``registered_name``."""

        def wrap(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            self._extras[name] = dict(extras)
            if isinstance(entry, type):
                entry.registered_name = name
            return entry

        return wrap

    def _load(self) -> None:
        if self.package:
            importlib.import_module(self.package)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def in_order(self) -> list[tuple[str, T]]:
        """``(name, entry)`` in registration order (e.g. the order ``data.layout: auto`` tries layouts)."""
        self._load()
        return list(self._entries.items())

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str, where: str | None = None) -> T:
        """The entry named ``name``; unknown: :class:`ConfigError` naming the key and what is registered."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(f"{where or self.key}: unknown {self.kind} {name!r}; registered: "
                              f"{', '.join(self.names()) or '(none)'}") from None

    def extra(self, name: str, field: str, where: str | None = None) -> Any:
        self.get(name, where)
        return self._extras[name].get(field)

    def check(self, names: Iterable[str] | str, where: str | None = None) -> None:
        for name in [names] if isinstance(names, str) else names:
            self.get(name, where)


# Packages whose section checks run on every loaded config (imported by name: see the module docstring).
SECTION_PACKAGES = ("ray_sbir.data.layouts", "ray_sbir.data.samplers", "ray_sbir.models", "ray_sbir.losses", "ray_sbir.training")

_SECTION_CHECKS: list[Callable[[Any, bool], None]] = []


def register_section_check(check: Callable[[Any, bool], None]) -> Callable[[Any, bool], None]:
    """Decorator: ``check(config, check_paths)`` raises :class:`ConfigError` for values of its section that
    cannot run (``check_paths``: also inputs that must already exist)."""
    _SECTION_CHECKS.append(check)
    return check


def check_sections(config: Any, check_paths: bool = False) -> None:
    for package in SECTION_PACKAGES:
        importlib.import_module(package)
    # Names and values first, in every section; only then the (slower, remote) existence checks.
    for check in _SECTION_CHECKS:
        check(config, False)
    if check_paths:
        for check in _SECTION_CHECKS:
            check(config, True)
