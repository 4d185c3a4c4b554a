"""The compiled CPU engine of exact Hamming top-``k`` (:class:`ray_sbir.search.hamming.HammingShard`), in numba.

One pass over the codes, fused: XOR, population count (LLVM ``ctpop``: ``vpopcntq`` where the CPU has it) and
selection, with no distance ever written to memory.

Scan (:func:`scan_part`)
    Rows go in tiles (``tile`` rows, about 32 KiB of codes: they stay in L1 while every query of the batch
    scans them, so a batch reads the gallery once). Per query, a tile goes in blocks of :data:`BLOCK` rows: one
    vectorised pass takes the block's minimum distance, and only when it is below the query's running threshold
    ``t`` (its current k-th distance) is the block looked at again: per 64 rows one vectorised compare gives the
    rows closer than ``t`` as bits of a word, and only those rows are visited (``tzcnt``). After the first few
    thousand rows ``t`` is small and almost every block is rejected by one comparison.

Selection without a heap
    Distances are small integers (``0..64 W``). Each query keeps a buffer of candidates in row order and a
    histogram of their distances; a row enters only if strictly closer than ``t`` (at ``t`` itself an earlier,
    lower row already holds the place: the tie rule). After each entry, ``t`` drops while the rows strictly
    closer than it are ``k`` or more. When the buffer is full it is compacted to ``k``: every row closer than
    ``t``, then the first rows at exactly ``t`` (lowest rows). At the end a counting sort by distance (stable,
    so rows stay ascending among equals) gives the order of the ranking contract.

Threads
    :func:`search` splits the rows into contiguous parts, one per thread (the kernels release the GIL), and
    merges the parts' sorted lists by a counting sort (parts in row order: ties keep the lower row).

Compiled once per machine (``cache=True``: later processes load the machine code from numba's cache);
:func:`warm_up` compiles or loads it on tiny arrays, which :class:`HammingShard` does at construction, so no
request ever pays for it. :data:`COMPILE_SECONDS` holds what that first call took in this process.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import types
from numba.core.extending import intrinsic

BLOCK = 256  # rows per vectorised minimum
TILE_BYTES = 1 << 15  # codes per tile, shared by a batch of queries (L1-sized)
MIN_PART_WORDS = 1 << 19  # rows x queries x words below which a thread more does not pay
COMPILE_SECONDS: float | None = None  # the first warm_up's time in this process (compile, or load from cache)

_lock, _pool_lock = threading.Lock(), threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _jit(fn=None, **kw):
    if fn is None:
        return lambda f: _jit(f, **kw)
    try:
        return numba.njit(nogil=True, cache=True, boundscheck=False, **kw)(fn)
    except RuntimeError:  # no writable cache folder anywhere: compile in every process instead
        return numba.njit(nogil=True, boundscheck=False, **kw)(fn)


@intrinsic
def _popcount(typingctx, x):
    """Bits set in a 64-bit word, as int64 (one LLVM ``ctpop``)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])

    return types.int64(x), codegen


@intrinsic
def _ctz(typingctx, x):
    """Trailing zero bits of a non-zero ``uint64`` (one ``tzcnt``), as int64."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], context.get_constant(types.boolean, True))

    return types.int64(x), codegen


@_jit(inline="always")
def _distance4(codes, u, q0, q1, q2, q3):
    """Distance of the 256-bit code at word ``u`` to the query words ``q0..q3``: four words unrolled, so the
    loops over rows vectorise as the 1- and 2-word ones do (a loop over ``words`` inside them does not)."""
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    return (_popcount(codes[u] ^ q0) + _popcount(codes[u + one] ^ q1) + _popcount(codes[u + two] ^ q2)
            + _popcount(codes[u + three] ^ q3))


@_jit(inline="always")
def _query4(queries, qb):
    """The four words of the 256-bit query starting at word ``qb``."""
    return (queries[np.uint64(qb)], queries[np.uint64(qb + 1)], queries[np.uint64(qb + 2)],
            queries[np.uint64(qb + 3)])


@_jit(inline="always")
def _distance(codes, row, queries, qb, words):
    """Distance of row ``row`` to the query whose words start at ``qb`` in ``queries``."""
    if words == 1:
        return _popcount(codes[np.uint64(row)] ^ queries[np.uint64(qb)])
    if words == 2:
        u, v = np.uint64(2 * row), np.uint64(qb)
        return (_popcount(codes[u] ^ queries[v]) + _popcount(codes[u + np.uint64(1)] ^ queries[v + np.uint64(1)]))
    if words == 4:
        q0, q1, q2, q3 = _query4(queries, qb)
        return _distance4(codes, np.uint64(4 * row), q0, q1, q2, q3)
    x = 0
    for w in range(words):
        x += _popcount(codes[np.uint64(row * words + w)] ^ queries[np.uint64(qb + w)])
    return x


@_jit(inline="always")
def _block_min(codes, lo, hi, queries, qb, words):
    """The smallest distance of rows ``lo:hi``: one vectorised pass. Indices are cast to unsigned (no
    negative-index wraparound for the compiler to guard) and the loops make no array object (no reference
    counting): either would keep LLVM from vectorising, or cost more than the rows themselves."""
    m = 64 * words + 1
    if words == 1:
        q0 = queries[np.uint64(qb)]
        for j in range(lo, hi):
            m = min(m, _popcount(codes[np.uint64(j)] ^ q0))
    elif words == 2:
        q0, q1 = queries[np.uint64(qb)], queries[np.uint64(qb + 1)]
        for j in range(lo, hi):
            u = np.uint64(2 * j)
            m = min(m, _popcount(codes[u] ^ q0) + _popcount(codes[u + np.uint64(1)] ^ q1))
    elif words == 4:
        q0, q1, q2, q3 = _query4(queries, qb)
        for j in range(lo, hi):
            m = min(m, _distance4(codes, np.uint64(4 * j), q0, q1, q2, q3))
    else:
        for j in range(lo, hi):
            m = min(m, _distance(codes, j, queries, qb, words))
    return m


@_jit
def _compact(qi, k, thr, below, size, bd, br):
    """Keep the rows closer than ``thr`` and the first ``k - below`` rows at exactly ``thr`` (buffer order is
    row order)."""
    t, quota, m = thr[qi], k - below[qi], 0
    for i in range(size[qi]):
        d = bd[qi, i]
        if d < t or (d == t and quota > 0):
            if d == t:
                quota -= 1
            bd[qi, m] = d
            br[qi, m] = br[qi, i]
            m += 1
    size[qi] = m


@_jit(inline="always")
def _below_mask(codes, lo, hi, queries, qb, words, t):
    """Bit ``i`` set where row ``lo + i`` (``hi - lo <= 64``) is closer than ``t``: a vectorised compare."""
    mask = np.uint64(0)
    if words == 1:
        q0 = queries[np.uint64(qb)]
        for j in range(lo, hi):
            if _popcount(codes[np.uint64(j)] ^ q0) < t:
                mask |= np.uint64(1) << np.uint64(j - lo)
    elif words == 2:
        q0, q1 = queries[np.uint64(qb)], queries[np.uint64(qb + 1)]
        for j in range(lo, hi):
            u = np.uint64(2 * j)
            if _popcount(codes[u] ^ q0) + _popcount(codes[u + np.uint64(1)] ^ q1) < t:
                mask |= np.uint64(1) << np.uint64(j - lo)
    elif words == 4:
        q0, q1, q2, q3 = _query4(queries, qb)
        for j in range(lo, hi):
            if _distance4(codes, np.uint64(4 * j), q0, q1, q2, q3) < t:
                mask |= np.uint64(1) << np.uint64(j - lo)
    else:
        for j in range(lo, hi):
            if _distance(codes, j, queries, qb, words) < t:
                mask |= np.uint64(1) << np.uint64(j - lo)
    return mask


@_jit(inline="always")
def _take(codes, lo, hi, queries, qi, words, k, thr, below, size, hist, bd, br):
    """Rows ``lo:hi`` (ascending) that are strictly closer than query ``qi``'s threshold enter its buffer;
    returns the new threshold. Per 64 rows one vectorised compare gives the candidates as bits; only those
    rows are looked at (the threshold may drop on the way: each is checked again)."""
    cap, qb = bd.shape[1], qi * words
    for c0 in range(lo, hi, 64):
        mask = _below_mask(codes, c0, min(hi, c0 + 64), queries, qb, words, thr[qi])
        while mask:
            j = c0 + _ctz(mask)
            mask &= mask - np.uint64(1)
            x = _distance(codes, j, queries, qb, words)
            t = thr[qi]
            if x >= t:
                continue
            if size[qi] == cap:
                _compact(qi, k, thr, below, size, bd, br)
            p = size[qi]
            bd[qi, p] = x
            br[qi, p] = j
            size[qi] = p + 1
            hist[qi, x] += 1
            b = below[qi] + 1
            while b >= k:  # the rows closer than t fill k places: t drops
                t -= 1
                b -= hist[qi, t]
            thr[qi], below[qi] = t, b
    return thr[qi]


@_jit
def _sort_out(qi, k, thr, below, size, bd, br, count, out_d, out_r, out_n):
    """Query ``qi``'s buffer, compacted to its ``k`` best, into ``out_*[qi]`` by a counting sort on distance
    (stable: rows stay ascending among equals)."""
    _compact(qi, k, thr, below, size, bd, br)
    count[:] = 0
    for i in range(size[qi]):
        count[bd[qi, i] + 1] += 1
    for d in range(1, count.shape[0]):
        count[d] += count[d - 1]
    for i in range(size[qi]):
        d = bd[qi, i]
        out_d[qi, count[d]] = d
        out_r[qi, count[d]] = br[qi, i]
        count[d] += 1
    out_n[qi] = size[qi]


@_jit
def scan_part(codes, queries, words, k, lo, hi, tile, out_d, out_r, out_n):
    """Rows ``lo:hi`` of ``codes`` (flat ``uint64``, ``words`` per row) against every query of ``queries``
    (flat): per query ``i``, its ``out_n[i] = min(k, hi - lo)`` nearest as ``(distance, row)`` in
    ``out_d[i], out_r[i]``, ascending distance, ties by lower row.

    The hot loops are inline here, one per code width (a call per tile would cost reference counting of
    every array argument): per block of :data:`BLOCK` rows one vectorised minimum, and :func:`_take` only
    for a block that holds a row closer than the query's threshold."""
    nq, maxd = queries.shape[0] // words, 64 * words
    cap = max(1, min(2 * k + 64, hi - lo))  # every row fits when the part is small: no compaction
    bd = np.empty((nq, cap), np.int32)
    br = np.empty((nq, cap), np.int64)
    hist = np.zeros((nq, maxd + 1), np.int64)
    size = np.zeros(nq, np.int64)
    below = np.zeros(nq, np.int64)  # buffered rows strictly closer than thr
    thr = np.full(nq, maxd + 1, np.int64)  # until k rows are in, every row enters
    for t0 in range(lo, hi, tile):
        t1 = min(hi, t0 + tile)
        for qi in range(nq):
            t, qb = thr[qi], qi * words
            if words == 1:
                q0 = queries[np.uint64(qb)]
                for b0 in range(t0, t1, BLOCK):
                    m = 65
                    for j in range(b0, min(t1, b0 + BLOCK)):
                        m = min(m, _popcount(codes[np.uint64(j)] ^ q0))
                    if m < t:
                        t = _take(codes, b0, min(t1, b0 + BLOCK), queries, qi, words, k, thr, below, size, hist,
                                  bd, br)
            elif words == 2:
                q0, q1 = queries[np.uint64(qb)], queries[np.uint64(qb + 1)]
                for b0 in range(t0, t1, BLOCK):
                    m = 129
                    for j in range(b0, min(t1, b0 + BLOCK)):
                        u = np.uint64(2 * j)
                        m = min(m, _popcount(codes[u] ^ q0) + _popcount(codes[u + np.uint64(1)] ^ q1))
                    if m < t:
                        t = _take(codes, b0, min(t1, b0 + BLOCK), queries, qi, words, k, thr, below, size, hist,
                                  bd, br)
            elif words == 4:
                q0, q1, q2, q3 = _query4(queries, qb)
                for b0 in range(t0, t1, BLOCK):
                    m = 257
                    for j in range(b0, min(t1, b0 + BLOCK)):
                        m = min(m, _distance4(codes, np.uint64(4 * j), q0, q1, q2, q3))
                    if m < t:
                        t = _take(codes, b0, min(t1, b0 + BLOCK), queries, qi, words, k, thr, below, size, hist,
                                  bd, br)
            else:
                for b0 in range(t0, t1, BLOCK):
                    b1 = min(t1, b0 + BLOCK)
                    if _block_min(codes, b0, b1, queries, qb, words) < t:
                        t = _take(codes, b0, b1, queries, qi, words, k, thr, below, size, hist, bd, br)
    count = np.empty(maxd + 2, np.int64)
    for qi in range(nq):
        _sort_out(qi, k, thr, below, size, bd, br, count, out_d, out_r, out_n)


@_jit
def merge_parts(part_d, part_r, part_n, kk, maxd, out_d, out_r):
    """Each part's sorted lists (parts in row order) -> the first ``kk`` by (distance, row), per query."""
    parts, nq = part_n.shape
    start = np.empty(maxd + 2, np.int64)
    for qi in range(nq):
        start[:] = 0
        for p in range(parts):
            for i in range(part_n[p, qi]):
                start[part_d[p, qi, i] + 1] += 1
        for d in range(1, maxd + 2):
            start[d] += start[d - 1]
        for p in range(parts):
            for i in range(part_n[p, qi]):
                d = part_d[p, qi, i]
                pos = start[d]
                if pos < kk:
                    out_d[qi, pos] = d
                    out_r[qi, pos] = part_r[p, qi, i]
                start[d] = pos + 1


def search(codes: np.ndarray, queries: np.ndarray, k: int, threads: int = 1, tile: int | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """``codes`` ``(n, W)`` and ``queries`` ``(q, W)`` C-contiguous ``uint64`` -> ``(distances int32, rows
    int64)``, ``(q, min(k, n))`` each, ascending distance, ties by lower row."""
    n, words = codes.shape
    nq, kk = len(queries), min(k, n)
    if nq == 0 or kk == 0:
        return np.zeros((nq, kk), np.int32), np.zeros((nq, kk), np.int64)
    tile = tile or max(BLOCK, TILE_BYTES // (8 * words))
    parts = int(max(1, min(threads, n // max(kk, BLOCK), n * nq * words // MIN_PART_WORDS)))
    bounds = [n * p // parts for p in range(parts + 1)]
    flat, qflat = codes.reshape(-1), queries.reshape(-1)
    part_d = np.empty((parts, nq, kk), np.int32)
    part_r = np.empty((parts, nq, kk), np.int64)
    part_n = np.empty((parts, nq), np.int64)

    def run(p: int) -> None:
        scan_part(flat, qflat, words, kk, bounds[p], bounds[p + 1], tile, part_d[p], part_r[p], part_n[p])

    if parts > 1:
        futures = [_thread_pool().submit(run, p) for p in range(1, parts)]
        run(0)
        for f in futures:
            f.result()
    else:
        run(0)
    out_d, out_r = np.empty((nq, kk), np.int32), np.empty((nq, kk), np.int64)
    merge_parts(part_d, part_r, part_n, kk, 64 * words, out_d, out_r)
    return out_d, out_r


def _thread_pool() -> ThreadPoolExecutor:
    """The threads that scan the other row parts (the caller scans the first)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="hamming")
        return _pool


def _forget_pool() -> None:  # a forked child has none of its parent's threads (nor their locks)
    global _pool, _lock, _pool_lock
    _pool, _lock, _pool_lock = None, threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel on tiny arrays, once per process; returns the
    seconds the first call took (:data:`COMPILE_SECONDS`)."""
    global COMPILE_SECONDS
    with _lock:
        if COMPILE_SECONDS is None:
            t0 = time.perf_counter()
            for words in (1, 2, 3, 4):  # one compiled function serves every W; each branch runs once
                codes = np.arange(3 * BLOCK * words, dtype=np.uint64).reshape(-1, words)
                search(codes, codes[:2], 5)
            COMPILE_SECONDS = time.perf_counter() - t0
        return COMPILE_SECONDS
