"""Filtered search: a query restricted to the gallery rows whose columns match, as FAISS's ``IDSelector`` and the
metadata filters of Milvus and Qdrant restrict theirs ("doodles like mine, from Germany", "photos of these
classes only").

A filter is an object of ``column: condition`` pairs, all of which a row must meet:

* a string column (``label``, ``modality``, ``countrycode``, ``key_id``, ``id``, ``uri``, or any string column an
  index carries beside them): a string (equal), a list of strings (any of them), or ``{"prefix": "..."}``;
* a boolean column (``recognized``): ``true`` or ``false``;
* an integer column: an integer, or a list of them.

:meth:`RowFilter.parse` checks it against the index's columns (an unknown column or a value of the wrong type is
one sentence naming the field) and :meth:`RowFilter.mask` evaluates it over the columns (Arrow compute, no Python
object per row) into a boolean row mask. Every index of :mod:`ray_sbir.search` takes that mask as
``search(queries, k, allowed=mask)`` and applies it inside its scan, before its top-k, never after it: a query
returns k results whenever k rows match (fewer only when fewer match), and the answer is exactly the unfiltered
search's over the matching rows (the same scores, ties by lower row). How each kind applies it, by selectivity,
is said in :func:`selected_rows` and the kinds' ``search``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["GATHER_FRACTION", "RowFilter", "column_kinds", "selected_rows"]

# Below this fraction of its rows an exact shard scores only the selected rows (gathered: cheaper than a scan);
# above it, it scans every row with the others' scores set to -inf (no copy of most of the gallery).
GATHER_FRACTION = 0.25


def column_kinds(columns: Mapping[str, pa.DataType]) -> dict[str, str]:
    """``name -> "string" | "bool" | "int"`` of the columns a filter may name (others are left out)."""
    out = {}
    for name, t in columns.items():
        t = t.value_type if pa.types.is_dictionary(t) else t
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            out[name] = "string"
        elif pa.types.is_boolean(t):
            out[name] = "bool"
        elif pa.types.is_integer(t):
            out[name] = "int"
    return out


@dataclass(frozen=True)
class Condition:
    column: str
    values: tuple | None = None  # the row's value is one of these
    prefix: str | None = None  # or starts with this


def _condition(key: str, value: Any, kind: str, where: str) -> Condition:
    field = f"{where}.{key}"
    if kind == "string":
        if isinstance(value, dict):
            if set(value) != {"prefix"} or not isinstance(value["prefix"], str):
                raise ValueError(f"{field}: expected a string, a list of strings or {{\"prefix\": \"...\"}}, "
                                 f"got {value!r}")
            return Condition(key, prefix=value["prefix"])
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"{field}: expected a string, a list of strings or {{\"prefix\": \"...\"}}, got {value!r}")
        return Condition(key, values=tuple(values))
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{field}: expected true or false, got {value!r}")
        return Condition(key, values=(value,))
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{field}: expected an integer or a list of integers, got {value!r}")
    return Condition(key, values=tuple(values))


class RowFilter:
    """Conditions on an index's columns, all of which a row must meet (see the module docstring)."""

    def __init__(self, conditions: tuple[Condition, ...]):
        self.conditions = conditions

    @classmethod
    def parse(cls, obj: Any, kinds: Mapping[str, str], where: str = "filter") -> "RowFilter":
        """The filter ``obj`` (parsed JSON or YAML) over columns of ``kinds`` (:func:`column_kinds`);
        ``ValueError`` naming the field when a column is unknown or a value has the wrong type."""
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected an object of column: value pairs, got {type(obj).__name__}")
        conditions = []
        for key, value in obj.items():
            if key not in kinds:
                raise ValueError(f"{where}: unknown field {key!r}: this index's rows have "
                                 f"{', '.join(sorted(kinds))}")
            conditions.append(_condition(key, value, kinds[key], where))
        return cls(tuple(conditions))

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def to_dict(self) -> dict:
        return {c.column: ({"prefix": c.prefix} if c.prefix is not None else list(c.values)) for c in self.conditions}

    def mask(self, columns: Mapping[str, pa.Array], n: int) -> np.ndarray:
        """``(n,)`` bool: the rows of ``columns`` (Arrow arrays of ``n`` rows) meeting every condition (a null
        never matches)."""
        out = pa.array(np.ones(n, bool))
        for c in self.conditions:
            col = columns[c.column]
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            if c.prefix is not None:
                hit = pc.starts_with(col, c.prefix)
            else:
                hit = pc.is_in(col, value_set=pa.array(list(c.values), col.type))
            out = pc.and_(out, pc.fill_null(hit, False))
        return out.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def selected_rows(allowed: Any, n: int) -> np.ndarray:
    """The ascending local rows of a boolean ``allowed`` mask over an index's ``n`` rows (checked)."""
    mask = np.asarray(allowed)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"allowed must be a boolean mask of the index's {n} rows, got {mask.dtype} {mask.shape}")
    return np.flatnonzero(mask)
