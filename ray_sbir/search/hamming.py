"""Exact Hamming search over packed binary codes: the search stage of hashing models (SSAH, ZSIH).

Codes
    A model's ``K``-bit code (``sign`` of its relaxed output, bit ``j`` = 1 where the output is positive) is
    packed little-endian into ``W = ceil(K / 64)`` ``uint64`` words (:func:`pack_codes`; padding bits are 0 in
    every code, so they never count). 64 bits are 8 bytes per item against 1 KiB for a 256-d float32 embedding.

Ranking contract (the same shape as :mod:`ray_sbir.search`'s, with distances instead of scores)
    Results are sorted by Hamming distance, ascending; equal distances are ordered by lower global row index,
    so answers are deterministic and independent of the number of shards and of the chunk size.

How a shard selects its top-k
    Distances are small integers (``0..K``), so selection is counting, never a sort of distances. On CPU one
    compiled pass (:mod:`ray_sbir.search.hamming_kernel`, numba) fuses XOR, popcount and selection: row tiles
    shared by the whole query batch, threads over contiguous row parts, a running threshold per query (its
    current k-th distance) that rejects a block of rows with one vectorised comparison, a small candidate
    buffer per query and a final counting sort by distance (rows stay ascending among equals: the tie rule).
    On other devices (or ``use_torch``) a SWAR popcount in int64 arithmetic runs on any torch device, with a
    batched top-k per chunk and its tie repair.

Two-stage search (the ``k'`` Hamming-nearest candidates re-scored by the exact inner product of the float
embeddings stored beside the codes) is the :class:`ray_sbir.search.stages.Rescored` stage over a binary index.
"""

from __future__ import annotations

import numpy as np
import torch

WORD_BITS = 64
_M1, _M2, _M4, _H01 = (0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101)

__all__ = ["HammingScores", "HammingShard", "ShardedHamming", "code_words", "hamming_distances", "merge_hamming",
           "pack_codes", "unpack_codes"]


def code_words(bits: int) -> int:
    if bits < 1:
        raise ValueError(f"a code needs at least 1 bit, got {bits}")
    return -(-bits // WORD_BITS)


def pack_codes(codes) -> np.ndarray:
    """``(N, K)`` codes (bool, 0/1, or real values whose sign is the bit: > 0 -> 1) -> ``(N, ceil(K/64))``
    ``uint64``, bit ``j`` of a code in bit ``j % 64`` of word ``j // 64``."""
    x = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if x.ndim != 2:
        raise ValueError(f"codes must be (N, K), got shape {x.shape}")
    bits = x > 0 if x.dtype != bool else x
    n, k = bits.shape
    padded = np.zeros((n, code_words(k) * WORD_BITS), bool)
    padded[:, :k] = bits
    w = code_words(k)
    packed = np.packbits(padded.reshape(n, w * 8, 8), axis=2, bitorder="little").reshape(n, w * 8)
    return np.ascontiguousarray(packed).view("<u8").reshape(n, w).copy()


def unpack_codes(words: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``(N, K)`` bool."""
    w = np.ascontiguousarray(words, dtype="<u8")
    return np.unpackbits(w.view(np.uint8).reshape(len(w), -1), axis=1, bitorder="little")[:, :bits].astype(bool)


def _popcount_torch(x: torch.Tensor) -> torch.Tensor:
    """Bits set per int64 element (SWAR; arithmetic shifts are harmless: each mask clears the sign-filled bits,
    and the final byte sum is at most 64)."""
    x = x - ((x >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    return (x * _H01) >> 56


def hamming_distances(queries, codes) -> np.ndarray | torch.Tensor:
    """``(q, W)`` x ``(n, W)`` packed codes -> ``(q, n)`` Hamming distances (NumPy: uint8 for one word, else
    uint16; tensors: int64 on the codes' device)."""
    if isinstance(codes, torch.Tensor):
        q = torch.as_tensor(np.asarray(queries).view(np.int64) if not isinstance(queries, torch.Tensor) else queries,
                            device=codes.device)
        return _popcount_torch(q[:, None, :] ^ codes[None, :, :]).sum(-1)
    q = np.asarray(queries, dtype=np.uint64)
    c = np.asarray(codes, dtype=np.uint64)
    d = np.bitwise_count(q[:, 0, None] ^ c[None, :, 0])  # one word: the popcount is the distance
    if c.shape[1] > 1:  # word by word into uint16: NumPy's sum over a short last axis is slow
        d = d.astype(np.uint16)
        for w in range(1, c.shape[1]):
            d += np.bitwise_count(q[:, w, None] ^ c[None, :, w])
    return d


def _kernel():
    """The compiled CPU kernel module, warmed up (imported on first use: numba stays out of processes that
    never search codes on a CPU)."""
    from ray_sbir.search import hamming_kernel as kernel

    kernel.warm_up()
    return kernel


class HammingShard:
    """One contiguous slice of a gallery's packed codes (``(n, W)`` uint64) at global row ``offset``; exact
    top-``k`` by Hamming distance. CPU: the compiled kernel (:mod:`ray_sbir.search.hamming_kernel`), compiled
    or loaded from numba's cache when the first CPU shard of the process is made, never on a request;
    ``chunk_size`` is its tile (rows every query of a batch scans before the next; default about 32 KiB of
    codes). Torch path (``use_torch``, the default off the CPU): chunks of ``chunk_size`` rows (default about
    256M distances)."""

    def __init__(self, codes, bits: int, *, offset: int = 0, device=None, chunk_size: int | None = None,
                 use_torch: bool | None = None, num_threads: int | None = None):
        words = np.ascontiguousarray(codes, dtype=np.uint64)
        if words.ndim != 2 or words.shape[1] != code_words(bits):
            raise ValueError(f"codes must be (n, {code_words(bits)}) uint64 words for {bits} bits, "
                             f"got shape {words.shape}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.bits, self.offset, self.chunk_size = bits, int(offset), chunk_size
        # CPU: the rows split over this many threads (the kernel releases the GIL); None: torch's intra-op
        # setting, which in a Ray actor follows its num_cpus.
        self.num_threads = num_threads
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # CPU: the compiled kernel; other devices (or use_torch): int64 tensors, the SWAR popcount and the
        # selection on the device, so only the k answers per query cross to the host.
        self.use_torch = self.device.type != "cpu" if use_torch is None else use_torch
        self.codes = torch.from_numpy(words.view(np.int64)).to(self.device) if self.use_torch else words
        if not self.use_torch:
            _kernel()  # compile (or load) now: the first request must not pay for it

    def __len__(self) -> int:
        return len(self.codes)

    def memory_bytes(self) -> int:
        return int(self.codes.nbytes if isinstance(self.codes, np.ndarray) else
                   self.codes.numel() * self.codes.element_size())

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(distances int32 (q, k'), global rows int64 (q, k'))``, ``k' = min(k, n)``."""
        q = np.ascontiguousarray(queries, dtype=np.uint64)
        if q.ndim != 2 or q.shape[1] != self.codes.shape[1]:
            raise ValueError(f"queries must be (q, {self.codes.shape[1]}) uint64 words, got shape {q.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        kk = min(k, len(self.codes))
        if self.use_torch:
            return self._search_torch(q, kk)
        d, rows = _kernel().search(self.codes, q, kk, threads=self.num_threads or torch.get_num_threads(),
                                   tile=self.chunk_size)
        if self.offset:
            rows += self.offset
        return d, rows

    @torch.no_grad()
    def _search_torch(self, q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        """Every query at once: a ``(q, rows)`` distance matrix per chunk and one batched top-k with the tie
        repair of :func:`ray_sbir.search.exact_topk` (on negated distances), merged into the running best
        (running first: a tie keeps the lower row). No per-query loop, no host sync but the repair's one."""
        from ray_sbir.search.topk import exact_topk, merge_best

        n = len(self.codes)
        # about 256M distances per chunk on a GPU (2 GB of int64)
        chunk_rows = self.chunk_size or max(4096, (1 << 28) // max(1, len(q) * q.shape[1]))
        queries = torch.from_numpy(q.view(np.int64)).to(self.device)
        best = None
        for start in range(0, n, chunk_rows):
            neg, rows = exact_topk(-hamming_distances(queries, self.codes[start:start + chunk_rows]), kk)
            best = merge_best(best, (-neg, rows + (start + self.offset)), kk, descending=False)
        return best[0].cpu().numpy().astype(np.int32), best[1].cpu().numpy()


def merge_hamming(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(distances, rows)`` into the global top-``k`` (ties by lower row)."""
    d = np.concatenate([r[0] for r in results], axis=1)
    rows = np.concatenate([r[1] for r in results], axis=1)
    kk = min(k, d.shape[1])
    order = np.lexsort((rows, d), axis=1)[:, :kk]
    return np.take_along_axis(d, order, 1), np.take_along_axis(rows, order, 1)


class ShardedHamming:
    """A gallery's codes split into ``num_shards`` contiguous :class:`HammingShard` slices (as
    :func:`ray_sbir.search.shard_slices` cuts float galleries), queried and merged."""

    def __init__(self, codes, bits: int, num_shards: int = 1, **shard_kwargs):
        from ray_sbir.search.sharded import shard_slices

        words = np.ascontiguousarray(codes, dtype=np.uint64)
        self.shards = [HammingShard(words[sl], bits, offset=sl.start, **shard_kwargs)
                       for sl in shard_slices(len(words), num_shards) if sl.stop > sl.start]
        self.bits = bits

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        return merge_hamming([s.search(queries, k) for s in self.shards], k)


class HammingScores:
    """A Hamming shard behind the search interface every kind shares (:mod:`ray_sbir.search.open`): queries are
    what the encoder returns, coded by ``encode`` (a hashing model's relaxed codes ``(q, K)``: their signs,
    :func:`pack_codes`; a float model's embedding: the sign codes of its index's rotation), answers
    ``(scores, rows)`` with ``score = K - 2 * distance`` (the inner product of the codes as +-1 vectors: higher
    is nearer), so :func:`ray_sbir.search.merge_topk`
    merges them across shards with the same tie rule (lower row first). ``embeddings`` (the shard's stored
    float relaxation, optional) serve :meth:`vectors`: what the two-stage rescore and re-rank stages score."""

    def __init__(self, shard: HammingShard, embeddings: np.ndarray | None = None, encode=pack_codes):
        self.shard, self.encode = shard, encode
        self.n, self.device, self.offset = len(shard), shard.device, shard.offset
        # Kept as given (float16, or a memory map, keeps a large gallery's floats small): rows are converted to
        # float32 only when a stage reads them.
        if embeddings is not None and not isinstance(embeddings, np.ndarray):
            embeddings = np.asarray(embeddings, np.float32)
        self.embeddings = embeddings
        if self.embeddings is not None and len(self.embeddings) != self.n:
            raise ValueError(f"{len(self.embeddings)} float rows for {self.n} codes")

    def __len__(self) -> int:
        return self.n

    def search(self, queries, k: int, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """``allowed`` (a boolean mask of the shard's rows, :mod:`ray_sbir.search.filters`): the selected rows'
        codes are gathered and searched alone (16 bytes a row at 128 bits: the copy costs less than the scan
        it replaces), rows mapped back, so ties still go to the lower row."""
        codes = self.encode(np.asarray(queries, np.float32))
        if allowed is None:
            d, rows = self.shard.search(codes, k)
        else:
            d, rows = self._search_allowed(codes, k, allowed)
        return (self.shard.bits - 2 * d).astype(np.float32), rows

    def _search_allowed(self, codes: np.ndarray, k: int, allowed) -> tuple[np.ndarray, np.ndarray]:
        from ray_sbir.search.filters import selected_rows

        local = selected_rows(allowed, self.n)
        if len(local) == self.n:
            return self.shard.search(codes, k)
        if not len(local):
            return np.zeros((len(codes), 0), np.int32), np.zeros((len(codes), 0), np.int64)
        shard = self.shard
        words = shard.codes[local] if isinstance(shard.codes, np.ndarray) else \
            shard.codes[torch.from_numpy(local).to(shard.device)].cpu().numpy().view(np.uint64)
        sub = HammingShard(words, shard.bits, device=shard.device, chunk_size=shard.chunk_size,
                           use_torch=shard.use_torch, num_threads=shard.num_threads)
        d, rows = sub.search(codes, k)
        return d, local[rows] + self.offset

    def vectors(self, rows) -> np.ndarray:
        from ray_sbir.search.exact import shard_local_rows

        if self.embeddings is None:
            raise ValueError("this binary index is served without its float embeddings: nothing to re-rank")
        return np.asarray(self.embeddings[shard_local_rows(rows, self.offset, self.n)], np.float32)

    def memory_bytes(self) -> dict:
        floats = 0 if self.embeddings is None else int(self.embeddings.nbytes)
        return {"embeddings": self.shard.memory_bytes() + floats}
