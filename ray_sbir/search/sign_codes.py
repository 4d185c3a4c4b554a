"""Binary codes for a float model's embeddings: the signs of a seeded random rotation, searched two-stage.

A float embedding ``x`` (``d`` dims) gets the ``bits``-bit code ``sign(x R)``, ``R`` a ``d x bits`` matrix of
orthonormal columns drawn from a seeded Gaussian (QR of a Gaussian matrix, the Haar-random rotation; more bits
than dims stack independent rotations). The fraction of differing bits between two codes estimates the angle
between the vectors, ``P[bit differs] = angle / pi`` (Charikar, "Similarity estimation techniques from rounding
algorithms", STOC 2002, random-hyperplane LSH); orthogonal hyperplanes rather than independent ones lower the
estimate's variance (Ji et al., "Super-Bit Locality-Sensitive Hashing", NeurIPS 2012) and are the starting point
ITQ optimises (Gong & Lazebnik, CVPR 2011). So Hamming search over the codes finds a float neighbourhood cheaply
(a 128-bit code is 16 bytes against 1 KiB of 256-d float32), and the first ``candidates`` rows are re-scored by
the floats stored beside the codes (:class:`~ray_sbir.search.stages.Rescored`): the two-stage search an index
with such codes gets by default.

The index manifest records ``{method, bits, seed, candidates}`` in its ``embedding`` entry
(:class:`~ray_sbir.search.kinds.EmbeddingKind`), so queries are coded with the same rotation wherever the index
is searched (evaluation, every serving replica).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["METHOD", "SignCodes", "rotation"]

METHOD = "sign_random_rotation"
CHUNK_ROWS = 1 << 16


@functools.lru_cache(maxsize=8)
def rotation(dim: int, bits: int, seed: int) -> np.ndarray:
    """``(dim, bits)`` float32 with orthonormal columns within each block of ``dim`` (the same for the same
    arguments on every machine: NumPy's PCG64 stream and a sign-fixed QR)."""
    rng = np.random.default_rng(seed)
    blocks, left = [], bits
    while left > 0:
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.where(np.diag(r) < 0, -1.0, 1.0)  # the unique QR with a positive diagonal: Haar-distributed
        blocks.append(q[:, :min(left, dim)])
        left -= dim
    out = np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class SignCodes:
    """``bits``-bit sign codes of a ``dim``-d float embedding's seeded random rotation; an index holding them
    is searched by Hamming distance, its first ``candidates`` rows re-scored by the floats."""

    dim: int
    bits: int
    seed: int = 0
    candidates: int = 200

    def __post_init__(self):
        for name, low in (("dim", 1), ("bits", 1), ("seed", 0), ("candidates", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"sign codes: {name} must be an integer >= {low}, got {value!r}")

    def codes(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, dim)`` floats -> ``(n, ceil(bits / 64))`` packed ``uint64`` codes."""
        from ray_sbir.search.hamming import code_words, pack_codes

        x = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"sign codes of {self.dim}-d embeddings: got shape {x.shape}")
        r = rotation(self.dim, self.bits, self.seed)
        out = np.empty((len(x), code_words(self.bits)), np.uint64)
        for a in range(0, len(x), CHUNK_ROWS):  # bounded temporaries over any number of rows (float16 or mapped)
            out[a:a + CHUNK_ROWS] = pack_codes(np.asarray(x[a:a + CHUNK_ROWS], np.float32) @ r)
        return out

    def manifest_entry(self) -> dict:
        return {"method": METHOD, "bits": self.bits, "seed": self.seed, "candidates": self.candidates}

    @classmethod
    def from_manifest(cls, entry: dict, dim: int) -> "SignCodes":
        if not isinstance(entry, dict) or entry.get("method") != METHOD:
            raise ValueError(f"index manifest: embedding.codes must be {{method: {METHOD}, bits, seed, candidates}},"
                             f" got {entry!r}")
        try:
            return cls(int(dim), entry["bits"], entry.get("seed", 0), entry.get("candidates", 200))
        except (KeyError, ValueError) as e:
            raise ValueError(f"index manifest: embedding.codes {entry!r}: {e}") from None
