"""The manifest's ``encode`` entry: how an index's rows and its queries are encoded beyond the model."""

from __future__ import annotations

import pytest

from ray_sbir.index.format import Manifest
from ray_sbir.index.reader import IndexLayout
from ray_sbir.search import encode_entry, index_flip_average, index_flip_queries


def layout_with(extra: dict) -> IndexLayout:
    manifest = Manifest(count=0, dim=4, files=[], rows=[], extra=extra)
    return IndexLayout([], [], 4, manifest)


@pytest.mark.parametrize("flip, queries, rows_flipped, queries_flipped", [
    (False, True, False, False), (False, False, False, False), (True, True, True, True), (True, False, True, False)])
def test_the_encode_entry_says_how_rows_and_queries_are_encoded(flip, queries, rows_flipped, queries_flipped):
    layout = layout_with(encode_entry(flip, queries))
    assert index_flip_average(layout) is rows_flipped and index_flip_queries(layout) is queries_flipped
    if flip and queries:  # the entry older indexes carry: unchanged
        assert encode_entry(flip, queries) == {"encode": {"flip_average": True}}


def test_an_index_without_a_manifest_or_entry_is_not_mirrored():
    assert not index_flip_queries(IndexLayout([], [], 4, None)) and not index_flip_queries(layout_with({}))


@pytest.mark.parametrize("entry", [{"flip_average": "yes"}, {"flip_average": True, "flip_queries": 1}, ["x"]])
def test_a_malformed_encode_entry_names_the_field(entry):
    with pytest.raises(ValueError, match="'encode' must be"):
        index_flip_queries(layout_with({"encode": entry}))
