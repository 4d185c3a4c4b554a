"""The embedding kind: what a model's embeddings are and how search scores them, decided here once.

``float``
    Dense vectors scored by their inner product (cosine when the model L2-normalises), higher is nearer.
``binary``
    Hash codes (SSAH, Li et al. CVPR 2018): the model outputs a relaxation in (-1, 1) whose signs are the
    ``bits``-bit code; items are ranked by Hamming distance, reported as the score ``bits - 2 * distance``
    (the inner product of the codes as +-1 vectors, so higher is nearer for every kind and one merge rule
    serves all). An index keeps both the packed codes (:func:`ray_sbir.search.hamming.pack_codes`) and the
    relaxation (two-stage re-scoring and re-rank stages score it).

``float`` with sign codes
    A float index may also hold binary codes of its own (``ray-sbir embed --codes BITS``,
    :mod:`ray_sbir.search.sign_codes`): the signs of a seeded random rotation of each embedding. It is searched
    two-stage, Hamming distance over the codes and the first ``candidates`` rows re-scored by the floats.

Every writer of an index (the embedding job, QuickDraw indexing), validation during training, ``ray-sbir
evaluate`` and both serving modes take the kind from here: from the model when embedding, from the index's
manifest (``embedding`` entry) when searching.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ray_sbir.models.base import BINARY, EMBEDDING_KINDS, FLOAT
from ray_sbir.search.sign_codes import SignCodes

__all__ = ["ENCODE", "EmbeddingKind", "encode_entry", "index_flip_average", "index_flip_queries", "index_kind"]

# The manifest entry saying how the rows were encoded beyond the model itself: ``{"flip_average": true}``
# when every item was embedded as the mean of its and its mirror's embeddings
# (:func:`ray_sbir.models.inference.encode`). Queries of such an index are encoded the same way (``ray-sbir
# evaluate`` and the endpoint read it here), unless ``"flip_queries": false`` says the gallery alone was
# mirrored (each query then one view: the mean of both views is compared with one, 0.009 mAP below both sides
# mirrored on held-out Sketchy classes, at half the query's encoder work; docs/benchmarks.md).
ENCODE = "encode"


def encode_entry(flip_average: bool, flip_queries: bool = True) -> dict:
    """The manifest fields an index writer adds (none when nothing beyond the model was applied).
    ``flip_queries`` False (with ``flip_average``): the gallery was mirrored, its queries are not (one encoder
    pass per query instead of two; its held-out quality is measured in ``docs/benchmarks.md``)."""
    if not flip_average:
        return {}
    return {ENCODE: {"flip_average": True, **({} if flip_queries else {"flip_queries": False})}}


def _encode_flag(layout, key: str, default: bool) -> bool:
    entry = (layout.manifest.extra.get(ENCODE) if layout.manifest else None) or {}
    value = entry.get(key, default) if isinstance(entry, dict) else None
    if not isinstance(value, bool):
        raise ValueError(f"index manifest: '{ENCODE}' must be {{flip_average: true|false, flip_queries: "
                         f"true|false}}, got {entry!r}")
    return value


def index_flip_average(layout) -> bool:
    """Whether an index's rows were embedded with mirror averaging (its manifest's ``encode`` entry)."""
    return _encode_flag(layout, "flip_average", False)


def index_flip_queries(layout) -> bool:
    """Whether the queries of an index are embedded with mirror averaging: as its rows were, unless its
    ``encode`` entry says ``flip_queries: false`` (the gallery alone mirrored). ``ray-sbir evaluate`` and the
    endpoint encode queries as this says."""
    return index_flip_average(layout) and _encode_flag(layout, "flip_queries", True)


@dataclass(frozen=True)
class EmbeddingKind:
    kind: str = FLOAT
    dim: int = 0
    unit_norm: bool = True
    sign_codes: SignCodes | None = None  # a float kind's own codes (None: none)

    def __post_init__(self):
        if self.kind not in EMBEDDING_KINDS:
            raise ValueError(f"unknown embedding kind {self.kind!r}; expected one of {EMBEDDING_KINDS}")
        if self.sign_codes is not None and self.binary:
            raise ValueError("sign codes of a random rotation are for float embeddings: this model already makes "
                             "hash codes")

    @property
    def binary(self) -> bool:
        """A hashing model's kind: its embedding is the relaxation of its code."""
        return self.kind == BINARY

    @property
    def coded(self) -> bool:
        """The index holds packed codes and its first stage ranks by Hamming distance."""
        return self.binary or self.sign_codes is not None

    @property
    def bits(self) -> int:
        if self.sign_codes is not None:
            return self.sign_codes.bits
        return self.dim if self.binary else 0

    def with_sign_codes(self, bits: int, seed: int = 0, candidates: int = 200) -> "EmbeddingKind":
        """This float kind with ``bits``-bit sign codes (0: without)."""
        codes = SignCodes(int(self.dim), bits, seed, candidates) if bits else None
        return dataclasses.replace(self, sign_codes=codes)

    @property
    def default_rescore(self) -> int:
        """How many Hamming-nearest rows the floats re-score by default: sign codes' ``candidates``; a hashing
        model's codes: 0 (Hamming alone)."""
        return self.sign_codes.candidates if self.sign_codes is not None else 0

    # ------------------------------------------------------------------------------------------ sources

    @classmethod
    def of_model(cls, model) -> "EmbeddingKind":
        """The kind of a built :class:`~ray_sbir.models.RetrievalModel`."""
        return cls(model.embedding_kind, int(model.embed_dim), bool(model.unit_norm))

    @classmethod
    def of_model_config(cls, model_cfg) -> "EmbeddingKind":
        """The kind of the model a ``ModelConfig`` names, without building it (its registry entry says)."""
        from ray_sbir.models import model_embedding_kind

        return cls(model_embedding_kind(model_cfg), int(model_cfg.embed_dim), bool(model_cfg.unit_norm))

    @classmethod
    def from_manifest(cls, spec: dict | None, dim: int = 0) -> "EmbeddingKind":
        """The kind an index's manifest records (no entry: a float index of the first format)."""
        spec = spec or {}
        if spec.get("kind", FLOAT) == BINARY:
            return cls(BINARY, int(spec["bits"]), False)
        codes = SignCodes.from_manifest(spec["codes"], dim) if spec.get("codes") else None
        return cls(FLOAT, int(dim), bool(spec.get("unit_norm", True)), codes)

    def manifest_spec(self) -> dict:
        """The manifest's ``embedding`` entry for this kind."""
        if self.binary:
            return {"kind": BINARY, "score": "hamming", "bits": self.bits}
        spec = {"kind": FLOAT, "score": "inner_product", "unit_norm": self.unit_norm}
        return {**spec, "codes": self.sign_codes.manifest_entry()} if self.sign_codes is not None else spec

    def describe(self, rescore: int = 0) -> dict:
        """How the first stage scores, as ``/info`` and evaluation reports show it, with the ``rescore`` rows the
        floats re-score (:meth:`ray_sbir.search.pipeline.SearchSpec.scoring` says how many)."""
        spec = self.manifest_spec()
        if self.coded and rescore:
            spec["rescore"] = {"candidates": int(rescore), "score": "inner_product"}
        return spec

    # ------------------------------------------------------------------------------------------ values

    def codes(self, embeddings: np.ndarray) -> np.ndarray | None:
        """What an index stores beside the float rows, and how a query is coded for Hamming search: packed
        codes (a hashing model's signs, or the sign codes of a rotation), else None."""
        if self.sign_codes is not None:
            return self.sign_codes.codes(embeddings)
        if not self.binary:
            return None
        from ray_sbir.search.hamming import pack_codes

        return pack_codes(embeddings)


def index_kind(layout) -> EmbeddingKind:
    """The embedding kind an index folder holds (its manifest's ``embedding`` entry)."""
    return EmbeddingKind.from_manifest(layout.manifest.embedding if layout.manifest else None, layout.dim)
