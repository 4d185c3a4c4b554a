"""The ranking pipeline from one spec: the string and list forms, the one-sentence refusals, the default a manifest
gives, and the built pipeline answering exactly as the stages nested by hand."""

import numpy as np
import pytest

from ray_sbir.index import write_index
from ray_sbir.search import EmbeddingKind, ExpansionSettings, QueryExpanded, Rescored, Reranked, build_index, \
    open_index
from ray_sbir.search.pipeline import SearchSpec, StageSpec, build_pipeline, default_spec
from ray_sbir.search.stages import InnerProduct

FLOAT, CODED = EmbeddingKind("float", 16), EmbeddingKind("float", 16).with_sign_codes(32, candidates=50)


def test_string_and_list_forms_are_one_spec():
    want = SearchSpec("hamming", (StageSpec("rescore", (200,)), StageSpec("query_expansion", (20, 1.0)),
                                  StageSpec("rerank", (50,))))
    for form in ("hamming:200 > rescore > qe:20:1 > rerank:50", "hamming > rescore:200 > query_expansion:20:1.0 > "
                 "rerank:50", ["hamming", {"rescore": 200}, {"qe": {"n": 20, "alpha": 1.0}}, {"rerank": 50}],
                 want):
        assert SearchSpec.parse(form) == want, form
    assert want.to_string() == "hamming > rescore:200 > qe:20:1 > rerank:50"
    assert SearchSpec.parse(want.to_string()) == want
    assert SearchSpec.parse("exact > qe:5").stages == (StageSpec("query_expansion", (5,)),)


@pytest.mark.parametrize("spec,message", [
    ("exact > sharpen:3", "search spec: unknown stage 'sharpen'; stages: qe, query_expansion, rerank, rescore"),
    ("rescore:10", "search spec: must start with the retrieval (exact or hamming), got 'rescore'"),
    ("exact > qe:x", "search spec: query_expansion n: expected an integer >= 1, got 'x'"),
    ("exact > qe", "search spec: query_expansion takes n [alpha], got []"),
    ("hamming > rescore:0", "search spec: rescore candidates: expected an integer >= 1, got '0'"),
    ("exact > > qe:2", "an empty stage between '>'"),
    ("hamming:200 > qe:3", "search spec: hamming:200 gives its candidates to a rescore stage after it"),
    ([{"qe": {"k": 3}}], "search spec: qe has no parameter 'k'"),
    ("", "search spec: empty; expected e.g. 'exact > qe:20'"),
    (3, "search spec: expected a string such as 'exact > qe:20' or a list, got int"),
])
def test_bad_specs_are_one_sentence(spec, message):
    with pytest.raises(ValueError) as e:
        SearchSpec.parse(spec)
    assert message in str(e.value), str(e.value)


def test_a_stage_the_kind_cannot_run_is_refused():
    with pytest.raises(ValueError, match="hamming retrieval needs an index with codes"):
        SearchSpec.parse("hamming > rescore:10").check(FLOAT)
    with pytest.raises(ValueError, match="this index ranks by its codes: start with hamming"):
        SearchSpec.parse("exact").check(CODED)
    with pytest.raises(ValueError, match="rescore re-scores Hamming candidates: this index has no codes"):
        SearchSpec("exact", (StageSpec("rescore", (5,)),)).check(FLOAT)
    with pytest.raises(ValueError, match="rerank needs a train.task=rerank checkpoint"):
        build_pipeline(SearchSpec.parse("exact > rerank:5"), build_index(FLOAT, np.eye(4, 16, dtype=np.float32)))


def test_the_default_spec_is_what_the_index_records():
    qe = ExpansionSettings(20, 1.0)
    assert default_spec(FLOAT, qe).to_string() == "exact > qe:20:1"
    assert default_spec(CODED, ExpansionSettings()).to_string() == "hamming > rescore:50"
    assert default_spec(CODED, qe, 0).to_string() == "hamming > qe:20:1"  # Hamming alone, as a shard opens
    assert default_spec(EmbeddingKind("binary", 32, False)).to_string() == "hamming"


def test_the_built_pipeline_answers_as_the_stages_nested_by_hand(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((300, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = emb[:4] + 0.1 * rng.standard_normal((4, 16)).astype(np.float32)
    uri = str(tmp_path / "coded")
    write_index(uri, [str(i) for i in range(300)], emb, codes=CODED.codes(emb),
                extra_manifest={"embedding": CODED.manifest_spec()})
    spec = "hamming > rescore:40 > qe:3:1 > rerank:10"
    piped = open_index(uri, spec=spec, scorer=InnerProduct())
    base = build_index(CODED, emb)
    by_hand = Reranked(QueryExpanded(Rescored(base, 40), 3, 1.0), InnerProduct(), 10)
    for got, want in zip(piped.search(q, 8), by_hand.search(q, 8)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert isinstance(open_index(uri), Rescored)  # the default: the manifest's two-stage
    with pytest.raises(ValueError, match=f"index {uri}: search spec 'exact'"):
        open_index(uri, spec="exact")
