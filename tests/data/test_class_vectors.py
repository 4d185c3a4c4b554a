"""Class word vectors: every file format (built here with gensim), name normalisation, lookup order, errors."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from ray_sbir.data import class_vectors as semantics
from ray_sbir.data.class_vectors import (
    MissingWordVectorError,
    class_phrase,
    class_vectors,
    detect_format,
    load_phrase_map,
    load_word_vectors,
    resolve_class_vectors,
    semantic_similarity,
)

DIM = 6
WORDS = ["hot", "air", "balloon", "palm", "tree", "the", "Eiffel", "eiffel", "tower", "car", "sedan", "cow",
         "hot_air_balloon", "automobile"]


def _vec(i: int) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    return rng.normal(size=DIM).astype(np.float32)


TABLE = {w: _vec(i) for i, w in enumerate(WORDS)}


@pytest.fixture(scope="module")
def kv():
    from gensim.models import KeyedVectors

    k = KeyedVectors(DIM)
    k.add_vectors(list(TABLE), np.stack(list(TABLE.values())))
    return k


@pytest.fixture(scope="module")
def vector_files(tmp_path_factory, kv):
    d = tmp_path_factory.mktemp("vectors")
    paths = {
        "word2vec_bin": str(d / "vectors.bin"),
        "word2vec_text": str(d / "vectors.vec"),
        "word2vec_text_txt": str(d / "vectors_w2v.txt"),
        "glove": str(d / "glove.txt"),
    }
    kv.save_word2vec_format(paths["word2vec_bin"], binary=True)
    kv.save_word2vec_format(paths["word2vec_text"], binary=False)
    kv.save_word2vec_format(paths["word2vec_text_txt"], binary=False)
    kv.save_word2vec_format(paths["glove"], binary=False, write_header=False)
    return paths


@pytest.fixture(scope="module")
def fasttext_file(tmp_path_factory):
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    sentences = [["the", "hot", "air", "balloon", "flies"], ["a", "palm", "tree", "grows"],
                 ["the", "eiffel", "tower", "stands"], ["a", "car", "is", "a", "sedan"]] * 5
    model = FastText(vector_size=8, min_count=1, bucket=2000, min_n=2, max_n=4, epochs=1, workers=1, seed=1)
    model.build_vocab(sentences)
    model.train(sentences, total_examples=len(sentences), epochs=1)
    path = str(tmp_path_factory.mktemp("fasttext") / "model.bin")
    save_facebook_model(model, path)
    return path


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("kind,fmt", [("word2vec_bin", "word2vec_bin"), ("word2vec_text", "word2vec_text"),
                                      ("word2vec_text_txt", "word2vec_text"), ("glove", "glove")])
def test_formats_load_auto_and_explicit(vector_files, kind, fmt):
    path = vector_files[kind]
    assert detect_format(path) == fmt
    for f in ("auto", fmt):
        kv = load_word_vectors(path, f)
        assert len(kv.key_to_index) == len(WORDS)
        for w in ("hot", "Eiffel", "hot_air_balloon"):
            np.testing.assert_allclose(kv[w], TABLE[w], rtol=1e-5, atol=1e-6)


def test_fasttext_loads_and_gives_oov_vectors(fasttext_file):
    assert detect_format(fasttext_file) == "fasttext_bin"
    for f in ("auto", "fasttext_bin"):
        kv = load_word_vectors(fasttext_file, f)
        assert "balloon" in kv.key_to_index
        assert "balloons" not in kv.key_to_index
        assert np.any(kv["balloons"])  # n-grams give an out-of-vocabulary word a vector
    vecs = class_vectors(["hot-air_balloons", "zeppelinish"], kv, vectors_name=fasttext_file)
    assert vecs.shape == (2, 8) and np.all(np.isfinite(vecs))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)


def test_bad_format_and_missing_file(vector_files, tmp_path):
    with pytest.raises(ValueError, match="word2vec_bin.*glove.*fasttext_bin"):
        load_word_vectors(vector_files["glove"], "npy")
    missing = str(tmp_path / "nope.bin")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        load_word_vectors(missing)


def test_limit_reads_first_words(vector_files):
    kv = load_word_vectors(vector_files["word2vec_text"], limit=3)
    assert list(kv.key_to_index) == WORDS[:3]


# ---------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("name,words", [
    ("hot-air_balloon", ["hot", "air", "balloon"]),
    ("car_(sedan)", ["car", "sedan"]),
    ("palm tree", ["palm", "tree"]),
    ("The Eiffel Tower", ["the", "eiffel", "tower"]),
    ("cow", ["cow"]),
    ("  teddy__bear ", ["teddy", "bear"]),
    ("o'clock", ["o'clock"]),
])
def test_class_phrase(name, words):
    assert class_phrase(name) == words


# ------------------------------------------------------------------------------------------------ lookup


def test_multiword_mean_before_normalisation(kv):
    vecs = class_vectors(["palm tree", "car_(sedan)"], kv, normalize=False)
    np.testing.assert_allclose(vecs[0], (TABLE["palm"] + TABLE["tree"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(vecs[1], (TABLE["car"] + TABLE["sedan"]) / 2, rtol=1e-6)
    assert vecs.dtype == np.float32
    normed = class_vectors(["palm tree", "car_(sedan)"], kv)
    np.testing.assert_allclose(normed, vecs / np.linalg.norm(vecs, axis=1, keepdims=True), rtol=1e-6)


def test_whole_phrase_token_first_and_casing(kv):
    # `hot_air_balloon` is a word2vec-style phrase token in the vocabulary: it wins over the mean of words
    vecs = class_vectors(["hot-air balloon", "hot air balloon"], kv, normalize=False)
    np.testing.assert_allclose(vecs[0], TABLE["hot_air_balloon"])
    np.testing.assert_allclose(vecs[1], TABLE["hot_air_balloon"])
    # the original casing is tried first (cased vectors know "Eiffel"), then lower case ("The" -> "the")
    res = resolve_class_vectors(["The Eiffel Tower"], kv, normalize=False)
    np.testing.assert_allclose(res.vectors[0], (TABLE["the"] + TABLE["Eiffel"] + TABLE["tower"]) / 3, rtol=1e-6)
    assert res.warnings == []


def test_glove_lowercase_lookup(vector_files):
    from gensim.models import KeyedVectors

    lower = {w: v for w, v in TABLE.items() if w == w.lower()}
    k = KeyedVectors(DIM)
    k.add_vectors(list(lower), np.stack(list(lower.values())))
    vecs = class_vectors(["The Eiffel Tower"], k, normalize=False)
    np.testing.assert_allclose(vecs[0], (TABLE["the"] + TABLE["eiffel"] + TABLE["tower"]) / 3, rtol=1e-6)


def test_phrase_map_wins(kv, tmp_path):
    yaml_path = tmp_path / "phrases.yaml"
    yaml_path.write_text("car_(sedan): automobile\npalm tree: [tree]\n")
    tsv_path = tmp_path / "phrases.tsv"
    tsv_path.write_text("# class\tphrase\n\ncar_(sedan)\tautomobile\npalm tree\ttree\n")
    for path in (yaml_path, tsv_path):
        pm = load_phrase_map(str(path))
        assert pm == {"car_(sedan)": "automobile", "palm tree": "tree"}
        vecs = class_vectors(["car_(sedan)", "palm_tree", "cow"], kv, phrase_map=pm, normalize=False)
        np.testing.assert_allclose(vecs[0], TABLE["automobile"])
        np.testing.assert_allclose(vecs[1], TABLE["tree"])  # tolerant key: palm_tree -> "palm tree"
        np.testing.assert_allclose(vecs[2], TABLE["cow"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("car\tsedan\nonly-one-column\n")
    with pytest.raises(ValueError, match=":2"):
        load_phrase_map(str(bad))


def test_partial_words_warn(kv, caplog):
    with caplog.at_level(logging.WARNING, logger=semantics.__name__):
        res = resolve_class_vectors(["flying cow"], kv, vectors_name="vecs.bin", normalize=False)
    np.testing.assert_allclose(res.vectors[0], TABLE["cow"])
    assert len(res.warnings) == 1 and "flying" in res.warnings[0]
    assert "flying" in caplog.text and "vecs.bin" in caplog.text


def test_missing_class_error_names_class_and_file(kv):
    with pytest.raises(MissingWordVectorError) as ei:
        class_vectors(["cow", "zeppelin_thing", "qwerty"], kv, vectors_name="s3://bucket/GoogleNews.bin")
    err = ei.value
    assert isinstance(err, KeyError)
    assert err.classes == ["zeppelin_thing", "qwerty"]
    msg = str(err)
    assert "zeppelin_thing" in msg and "qwerty" in msg and "s3://bucket/GoogleNews.bin" in msg
    assert "'zeppelin'" in msg and "'thing'" in msg  # the words tried
    with pytest.raises(MissingWordVectorError, match="phrase map: 'nothing'"):
        class_vectors(["cow"], kv, phrase_map={"cow": "nothing"})


def test_plain_mapping_and_similarity():
    vecs = class_vectors(["a", "b", "a b"], {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 2.0])})
    sim = semantic_similarity(vecs)
    assert sim.shape == (3, 3)
    np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-6)
    np.testing.assert_allclose(sim, sim.T)
    assert abs(sim[0, 1]) < 1e-6
    np.testing.assert_allclose(sim[0, 2], 1 / np.sqrt(5), rtol=1e-5)  # mean (0.5, 1) against (1, 0)


def test_remote_style_uri(vector_files):
    # file:// URIs go through ray_sbir.fs like s3:// ones
    uri = "file://" + os.path.abspath(vector_files["word2vec_bin"])
    kv = load_word_vectors(uri)
    assert len(kv.key_to_index) == len(WORDS)
