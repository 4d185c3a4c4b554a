"""Class semantics: one word vector per class, from word2vec / GloVe / fastText files (through gensim).

Doodle to Search's semantic loss pulls each embedding towards the word vector of its class, and semantic-aware
negative sampling uses the cosine similarity between classes. This module turns dataset class names
(``hot-air_balloon``, ``car_(sedan)``, ``The Eiffel Tower``) into those vectors.

Formats (``fmt``)
    ``word2vec_bin``   the C word2vec binary format (GoogleNews-vectors-negative300.bin)
    ``word2vec_text``  the same as text, with a ``"<count> <dim>"`` header line (fastText's ``.vec`` files)
    ``glove``          text without a header line (glove.6B.300d.txt)
    ``fasttext_bin``   a Facebook fastText ``.bin`` model: character n-grams give vectors for words that are
                       not in the vocabulary
    ``auto``           guessed from the file: the fastText magic number in the first 4 bytes means
                       ``fasttext_bin``; otherwise ``.bin`` means ``word2vec_bin``; any other file is text,
                       ``word2vec_text`` when its first line is a ``"<count> <dim>"`` header and ``glove``
                       otherwise (a binary file without a ``.bin`` extension is recognised too). ``.gz`` /
                       ``.bz2`` compressed text files are handled.

Class-name normalisation (:func:`class_phrase`)
    1. ``_`` and ``-`` separate words like spaces do: ``hot-air_balloon`` -> hot, air, balloon.
    2. Brackets and other punctuation separate words and are dropped: ``car_(sedan)`` -> car, sedan.
       Apostrophes inside a word are kept (``o'clock``), those at a word's edge are dropped.
    3. Words are lower-cased (``The Eiffel Tower`` -> the, eiffel, tower): GloVe is lower-case only.
       :func:`class_vectors` still tries each word with its original casing first, because cased vectors
       (word2vec GoogleNews, fastText) have ``Eiffel`` but maybe not ``eiffel``.

Lookup order in :func:`class_vectors`, per class
    1. The explicit phrase from ``phrase_map`` (exact class name first, then a case / ``_``-``-``-space
       tolerant match) replaces the class name in the steps below.
    2. The whole name as one in-vocabulary token: spaces and hyphens turned into ``_`` (word2vec phrases such
       as ``hot_air_balloon``) and the name as written, each with its casing and lower-cased.
    3. Otherwise the mean of the vectors of its words (step 3 of the normalisation), each word tried as
       written then lower-cased; with fastText, out-of-vocabulary words get their n-gram vector. Words with
       no vector are skipped with a warning (logged and kept in :attr:`ClassVectors.warnings`); a class none
       of whose words has a vector raises :class:`MissingWordVectorError`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ray_sbir import fs

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("auto", "word2vec_bin", "word2vec_text", "glove", "fasttext_bin")

# First 4 bytes of a Facebook fastText .bin model (int32 little-endian), as in gensim.models._fasttext_bin.
FASTTEXT_MAGIC = (793712314).to_bytes(4, "little")

_COMPRESSION_SUFFIXES = (".gz", ".bz2")


class MissingWordVectorError(KeyError):
    """No vector for one or more classes: none of the words tried is known to the vectors file."""

    def __init__(self, missing: Mapping[str, list[str]], vectors_name: str,
                 phrases: Mapping[str, str] | None = None):
        self.missing = dict(missing)  # class -> tokens tried
        self.classes = list(self.missing)
        self.vectors_name = vectors_name
        phrases = phrases or {}
        lines = [
            f"  {c!r}{f' (phrase map: {phrases[c]!r})' if c in phrases else ''}: "
            f"tried {', '.join(repr(t) for t in tried)}"
            for c, tried in self.missing.items()
        ]
        self.message = (
            f"no word vector for {len(self.missing)} class(es) in {vectors_name}:\n" + "\n".join(lines)
            + "\nmap them to known words with a phrase map (data.phrase_map: YAML mapping or two-column TSV "
            "'class<TAB>phrase')"
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


# ------------------------------------------------------------------------------------------------- loading


def _strip_compression(name: str) -> str:
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_header(line: str) -> bool:
    parts = line.split()
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def detect_format(uri: str) -> str:
    """Guess the format of a word-vectors file (see the module docstring for the rules)."""
    with fs.open_uri(uri, "rb") as f:
        head = f.read(4)
    if head == FASTTEXT_MAGIC:
        return "fasttext_bin"
    name = _strip_compression(os.path.basename(uri.rstrip("/")).lower())
    if name.endswith(".bin"):
        return "word2vec_bin"
    with fs.open_uri(uri, "rb", compression="infer") as f:
        chunk = f.read(1 << 16)
    first, _, rest = chunk.partition(b"\n")
    try:
        first_line = first.decode("utf-8")
    except UnicodeDecodeError:
        first_line = ""
    if not _is_header(first_line):
        return "glove"
    try:  # word2vec binary: the header is followed by raw float32s, seldom valid UTF-8 text
        rest.decode("utf-8")
        return "word2vec_text"
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the chunk's end is still text
        return "word2vec_text" if e.start >= len(rest) - 4 else "word2vec_bin"


def load_word_vectors(uri: str, fmt: str = "auto", *, limit: int | None = None):
    """Load word vectors from a local path or URI (``s3://`` too) as a gensim ``KeyedVectors``.

    ``fmt``: one of :data:`FORMATS`. ``limit``: read only the first ``limit`` words (word2vec / GloVe
    formats; those files are sorted by frequency, so this keeps the commonest words and saves memory).
    ``fasttext_bin`` returns a ``FastTextKeyedVectors``, which has vectors for out-of-vocabulary words too.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown word-vectors format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if not fs.exists(uri):
        raise FileNotFoundError(f"word-vectors file not found: {uri}")
    if fmt == "auto":
        fmt = detect_format(uri)
        logger.info("word vectors %s: detected format %s", uri, fmt)
    from gensim.models import KeyedVectors

    with fs.local_copy(uri) as path:
        if fmt == "fasttext_bin":
            from gensim.models.fasttext import load_facebook_vectors

            return load_facebook_vectors(path)
        return KeyedVectors.load_word2vec_format(
            path, binary=(fmt == "word2vec_bin"), no_header=(fmt == "glove"), limit=limit
        )


def load_phrase_map(uri: str) -> dict[str, str]:
    """Read an explicit ``class -> phrase`` mapping: a YAML mapping or a two-column TSV file.

    YAML (``.yaml`` / ``.yml``): ``car_(sedan): sedan`` (a list value is joined with spaces). TSV (other
    extensions): ``class<TAB>phrase`` per line; blank lines and lines starting with ``#`` are ignored. The
    phrase may be one token of the vectors (``hot_air_balloon``) or several words, averaged.
    """
    if not fs.exists(uri):
        raise FileNotFoundError(f"phrase-map file not found: {uri}")
    text = fs.read_text(uri)
    name = uri.lower()
    if name.endswith((".yaml", ".yml")) or ("\t" not in text and ":" in text):
        import yaml

        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"phrase map {uri}: expected a YAML mapping class -> phrase, got {type(data).__name__}")
        out = {}
        for k, v in data.items():
            if isinstance(v, (list, tuple)):
                v = " ".join(str(x) for x in v)
            if v is None or not str(v).strip():
                raise ValueError(f"phrase map {uri}: empty phrase for class {k!r}")
            out[str(k)] = str(v).strip()
        return out
    out = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
            raise ValueError(f"phrase map {uri}:{lineno}: expected 'class<TAB>phrase', got {line!r}")
        out[cols[0].strip()] = cols[1].strip()
    return out


# ----------------------------------------------------------------------------------------- normalisation

_SEPARATORS = re.compile(r"[^\w']+")  # anything but letters, digits, '_' and apostrophes...
_UNDERSCORES = re.compile(r"_+")  # ... and '_' separates words too


def _words(name: str) -> list[str]:
    """Words of a class name with their original casing (normalisation rules 1 and 2)."""
    words = []
    for w in _SEPARATORS.split(_UNDERSCORES.sub(" ", name)):
        w = w.strip("'")
        if w:
            words.append(w)
    return words


def class_phrase(name: str) -> list[str]:
    """Normalise a dataset class name to lower-case words.

    ``hot-air_balloon`` -> ``[hot, air, balloon]``; ``car_(sedan)`` -> ``[car, sedan]``;
    ``palm tree`` -> ``[palm, tree]``; ``The Eiffel Tower`` -> ``[the, eiffel, tower]``.
    """
    return [w.lower() for w in _words(name)]


def _name_key(name: str) -> str:
    return " ".join(re.split(r"[\s_\-]+", name.strip().lower())).strip()


# ------------------------------------------------------------------------------------------------ lookup


def _dedup(items) -> list[str]:
    seen, out = set(), []
    for x in items:
        if x and x not in seen:
            seen.add(x)
            out.append(x)
    return out


class _Lookup:
    """Uniform access to gensim KeyedVectors / FastTextKeyedVectors or a plain ``{word: vector}`` mapping."""

    def __init__(self, vectors: Any):
        self.vectors = vectors
        if hasattr(vectors, "key_to_index"):
            self.vocab = vectors.key_to_index
            self.subword = getattr(vectors, "bucket", 0) > 0 and hasattr(vectors, "vectors_ngrams")
            self.dim = int(vectors.vector_size)
        elif isinstance(vectors, Mapping):
            self.vocab = vectors
            self.subword = False
            first = next(iter(vectors.values()), None)
            self.dim = 0 if first is None else int(np.asarray(first).shape[-1])
        else:
            raise TypeError(f"expected gensim KeyedVectors or a word -> vector mapping, got {type(vectors).__name__}")

    def known(self, token: str) -> np.ndarray | None:
        """Vector of an in-vocabulary token, else None."""
        if token in self.vocab:
            return np.asarray(self.vectors[token], dtype=np.float32)
        return None

    def oov(self, token: str) -> np.ndarray | None:
        """fastText n-gram vector of an out-of-vocabulary token (None without subword information)."""
        if not self.subword:
            return None
        v = np.asarray(self.vectors.get_vector(token), dtype=np.float32)
        return v if np.any(v) else None


@dataclass
class ClassVectors:
    """Result of :func:`resolve_class_vectors`: the (C, D) matrix and how each row was found."""

    classes: list[str]
    vectors: np.ndarray
    # class -> how its vector was found, e.g. "token 'hot_air_balloon'" or "mean of 'hot', 'air', 'balloon'"
    sources: dict[str, str] = field(default_factory=dict)
    # words of multi-word classes that had no vector and were left out of the mean
    warnings: list[str] = field(default_factory=list)


def _resolve_one(name: str, lookup: _Lookup) -> tuple[np.ndarray | None, str, list[str], list[str]]:
    """(vector or None, source description, tokens tried, warnings) for one name or phrase."""
    tried: list[str] = []
    words = _words(name)
    whole = _dedup([
        re.sub(r"[\s\-]+", "_", name.strip()),
        name.strip(),
        "_".join(words),
    ])
    whole = _dedup(whole + [w.lower() for w in whole])
    for token in whole:
        tried.append(token)
        v = lookup.known(token)
        if v is not None:
            return v, f"token {token!r}", tried, []
    found: list[np.ndarray] = []
    used, missing = [], []
    for word in words:
        candidates = _dedup([word, word.lower()])
        v = None
        for c in candidates:
            if c not in tried:
                tried.append(c)
            v = lookup.known(c)
            if v is not None:
                used.append(c)
                break
        if v is None:
            for c in candidates:
                v = lookup.oov(c)
                if v is not None:
                    used.append(f"{c} (n-grams)")
                    break
        if v is None:
            missing.append(word)
        else:
            found.append(v)
    if not found:
        return None, "", tried, []
    warnings = []
    if missing:
        warnings.append(f"class {name!r}: no vector for word(s) {', '.join(repr(m) for m in missing)}; "
                        f"using the mean of {', '.join(repr(u) for u in used)}")
    return np.mean(np.stack(found), axis=0), "mean of " + ", ".join(repr(u) for u in used), tried, warnings


def resolve_class_vectors(
    classes: list[str],
    vectors: Any,
    *,
    vectors_name: str = "<vectors>",
    phrase_map: Mapping[str, str] | None = None,
    normalize: bool = True,
) -> ClassVectors:
    """Like :func:`class_vectors`, also returning how each class was resolved and any warnings."""
    lookup = _Lookup(vectors)
    pm = dict(phrase_map or {})
    pm_keys = {_name_key(k): v for k, v in pm.items()}
    rows, sources, warnings = [], {}, []
    missing: dict[str, list[str]] = {}
    phrases: dict[str, str] = {}
    for c in classes:
        phrase = pm.get(c, pm_keys.get(_name_key(c)))
        v, source, tried, warns = _resolve_one(phrase if phrase is not None else c, lookup)
        if phrase is not None:
            source = f"phrase map {phrase!r}: {source}"
            phrases[c] = phrase
        if v is None:
            missing[c] = tried
            continue
        rows.append(v)
        sources[c] = source
        for w in warns:
            logger.warning("%s (vectors: %s)", w, vectors_name)
        warnings.extend(warns)
    if missing:
        raise MissingWordVectorError(missing, vectors_name, phrases)
    mat = np.stack(rows).astype(np.float32) if rows else np.zeros((0, lookup.dim), np.float32)
    if normalize and len(mat):
        mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    return ClassVectors(list(classes), mat, sources, warnings)


def class_vectors(
    classes: list[str],
    vectors: Any,
    *,
    vectors_name: str = "<vectors>",
    phrase_map: Mapping[str, str] | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """One vector per class, as a float32 ``(C, D)`` array in the order of ``classes``.

    ``vectors``: what :func:`load_word_vectors` returns (or a ``{word: vector}`` mapping); ``vectors_name``
    names it in error messages (its URI); ``phrase_map``: explicit ``class -> phrase`` entries, used first.
    Rows are L2-normalised unless ``normalize=False``. See the module docstring for the lookup order.
    Raises :class:`MissingWordVectorError` (a ``KeyError``) naming every class that has no vector.
    """
    return resolve_class_vectors(
        classes, vectors, vectors_name=vectors_name, phrase_map=phrase_map, normalize=normalize
    ).vectors


def semantic_similarity(class_vecs: np.ndarray) -> np.ndarray:
    """Cosine-similarity matrix ``(C, C)`` between class vectors (rows need not be normalised)."""
    v = np.asarray(class_vecs, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.clip(v @ v.T, -1.0, 1.0).astype(np.float32)
