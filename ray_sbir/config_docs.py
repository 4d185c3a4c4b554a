"""The config reference, generated from the typed config itself (:mod:`ray_sbir.config`): each key's doc is the
comment written above its field there (or at the end of its line), so the reference cannot drift from the
code. ``ray-sbir config`` prints a run's effective config with these docs as YAML
comments; ``docs/config.md`` is :func:`markdown_reference` (``ray-sbir config --markdown``), and a test fails
when the file and the code disagree."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import re
import tokenize
from typing import Any, Iterator

import yaml

from ray_sbir.config import Config

__all__ = ["config_keys", "field_docs", "markdown_reference", "yaml_with_docs"]

_FIELD = re.compile(r"^\s+([a-z_][a-z0-9_]*)\s*:")


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """``{field: doc}`` of a config dataclass, read from the comments of its source."""
    lines = inspect.getsource(cls).splitlines()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0] - 1] = tok.string.lstrip("#").strip()
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = _FIELD.match(line)
        if not match or match.group(1) not in names:
            continue
        block, j = [], i - 1
        while j >= 0 and lines[j].lstrip().startswith("#"):
            block.insert(0, comments.get(j, ""))
            j -= 1
        docs[match.group(1)] = " ".join(d for d in (*block, comments.get(i) if "#" in line else None) if d)
    return docs


def config_keys(cfg: Any = None, prefix: str = "") -> Iterator[tuple[str, Any, str, bool]]:
    """``(dotted key, value, doc, is_section)`` of every key of ``cfg`` (default: the built-in defaults), depth
    first; a nested config dataclass is a section, a dict value (loss terms, the sampler) a leaf."""
    cfg = Config() if cfg is None else cfg
    docs = field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        section = dataclasses.is_dataclass(value)
        yield key, value, docs.get(f.name, ""), section
        if section:
            yield from config_keys(value, key + ".")


def _flow(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def yaml_with_docs(cfg: Config, width: int = 118) -> str:
    """``cfg`` as a YAML config file, each key preceded by its doc as comment lines (loads back to ``cfg``)."""
    import textwrap

    out = []
    for key, value, doc, section in config_keys(cfg):
        depth = key.count(".")
        pad = "  " * depth
        if doc and depth:
            out += [f"{pad}# {line}" for line in textwrap.wrap(doc, width - len(pad) - 2)]
        name = key.rsplit(".", 1)[-1]
        out.append(f"{pad}{name}:" if section else f"{pad}{name}: {_flow(value)}")
    return "\n".join(out) + "\n"


def markdown_reference() -> str:
    """docs/config.md: one table per section of the built-in defaults."""
    out = ["# Config reference", "",
           "Generated from `ray_sbir/config.py` by `ray-sbir config --markdown` (a test fails when this file and "
           "the code disagree). Every key is set in a YAML file (`--config`) or with `--set section.key=value`; "
           "`ray-sbir config --config FILE --set ...` prints a run's effective config with these docs. Every "
           "value is checked before anything starts.", ""]
    for key, value, doc, section in config_keys():
        if section and "." not in key:
            out += ["", f"## `{key}`", "", "| key | default | what |", "|---|---|---|"]
        elif not section:
            default = _flow(value).replace("|", "\\|")
            out.append(f"| `{key}` | `{default}` | {doc.replace('|', chr(92) + '|')} |")
        else:  # a nested section (model.sketch): its own row
            out.append(f"| `{key}` | (section) | {doc} |")
    return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"
