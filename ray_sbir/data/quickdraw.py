"""Quick, Draw! drawings: ndjson parsing/validation and batched, antialiased stroke rasterisation.

Two ndjson formats are read, one drawing per line:

- *simplified* (``"drawing": [[[x...], [y...]], ...]``): integer coordinates 0-255, top-left aligned;
- *raw* (``"drawing": [[[x...], [y...], [t...]], ...]``): unnormalised screen coordinates and timings in ms.
  :func:`parse_line` normalises them with :func:`normalize_strokes` (top-left aligned, longest side scaled
  to 0..255, as Google's simplification does, without its RDP step) so both formats look alike.

Malformed lines never crash a run: :func:`read_ndjson` skips them and reports each one, with its file and
line number, as a :class:`MalformedDrawing` (``strict=True`` raises instead). The stroke checks themselves are
:func:`strokes_from_lists`, which serving also applies to posted strokes.

Strokes stay arrays from parsing to the rasteriser: a :class:`Drawing` holds one array per stroke, and catalogs
(and so Ray Data batches) hold each drawing as one flat float32 array of ``(x, y, end)`` triples
(:func:`pack_strokes`), which :func:`rasterize_packed` draws without splitting it into strokes again.

:func:`rasterize` draws a whole batch of drawings at once with PyTorch (CPU by default, any ``device``).
Every segment is split into pieces no longer than a few pixels; each piece owns a small fixed-size pixel
window around it, in which the exact distance from every pixel centre to the piece gives an antialiased
coverage ``clamp(line_width / 2 + 0.5 - distance, 0, 1)``; windows are max-reduced (``scatter_reduce``) into
the canvases. The work is proportional to the ink length, not to ``pixels x segments``, and pieces are
processed in chunks so memory stays bounded however long a drawing is.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ray_sbir import fs

logger = logging.getLogger(__name__)

# Coordinates of the simplified format: 0..SIMPLIFIED_MAX after alignment and scaling.
SIMPLIFIED_MAX = 255.0
# Elements (pieces x window pixels) per rasterisation chunk: ~8 MB per float32 temporary.
_CHUNK_ELEMENTS = 1 << 21


@dataclass
class Drawing:
    """One drawing. ``strokes``: float32 arrays of shape ``(n, 2)`` (x, y), or ``(n, 3)`` (x, y, t in ms) when
    timings were kept from the raw format."""

    key_id: str
    word: str
    countrycode: str
    recognized: bool
    timestamp: str
    strokes: list[np.ndarray]

    @property
    def num_points(self) -> int:
        return sum(len(s) for s in self.strokes)


class MalformedDrawing(ValueError):
    """A line that is not a valid drawing; says which file, which line (1-based) and why."""

    def __init__(self, source: str, line_no: int, reason: str):
        self.source = source
        self.line_no = line_no
        self.reason = reason
        super().__init__(f"{source}:{line_no}: malformed drawing: {reason}")

    def __reduce__(self):  # keep pickling (Ray) working with the three-argument constructor
        return (type(self), (self.source, self.line_no, self.reason))


# ---------------------------------------------------------------------------------------------------------
# Parsing


def _numbers(values, what: str) -> np.ndarray:
    if not isinstance(values, list):
        raise ValueError(f"{what} is not a list")
    for v in values:
        # bool is an int subclass, and numpy would happily turn numeric strings into numbers: check types.
        if type(v) is not int and type(v) is not float:
            raise ValueError(f"{what} holds a non-numeric value {v!r}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except OverflowError as e:
        raise ValueError(f"{what} holds a number out of range") from e
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds a non-finite value")
    return arr


def strokes_from_lists(drawing) -> list[np.ndarray]:
    """Validate a drawing given as JSON-style lists -- ``[[[x...], [y...]], ...]``, or ``[x, y, t]`` per stroke
    (raw format) -- and turn it into float64 arrays ``(n, 2)``, or ``(n, 3)`` for a stroke with timings.

    Empty strokes are dropped (a drawing with no points at all is an error). Raises ``ValueError`` saying
    what is wrong (``"stroke 2 y holds a non-finite value"``); ndjson lines (:func:`parse_line`) and posted
    search requests are both validated here."""
    if not isinstance(drawing, list):
        raise ValueError("'drawing' is not a list of strokes")
    if not drawing:
        raise ValueError("empty drawing")
    strokes = []
    for i, stroke in enumerate(drawing):
        if not isinstance(stroke, list) or len(stroke) not in (2, 3):
            raise ValueError(f"stroke {i} is not a list of 2 (x, y) or 3 (x, y, t) coordinate lists")
        cols = [_numbers(c, f"stroke {i} {name}") for c, name in zip(stroke, ("x", "y", "t"))]
        if len({len(c) for c in cols}) != 1:
            raise ValueError(f"stroke {i} has coordinate lists of different lengths "
                             f"({'/'.join(str(len(c)) for c in cols)})")
        if len(cols[0]) == 0:
            continue  # an empty stroke draws nothing; the drawing is still fine if others have points
        strokes.append(np.stack(cols, axis=1))
    if not strokes:
        raise ValueError("empty drawing")
    return strokes


def parse_line(line: str | bytes, *, source: str = "<string>", line_no: int = 0, normalize: bool = True,
               keep_time: bool = False) -> Drawing:
    """Parse and validate one ndjson line (simplified or raw format).

    Raw-format drawings (strokes with timings) are normalised to the simplified coordinate frame unless
    ``normalize=False``; ``keep_time`` keeps the timings as a third column. Raises :class:`MalformedDrawing`.
    """
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object but {type(obj).__name__}")
        for name in ("word", "key_id", "drawing"):
            if name not in obj:
                raise ValueError(f"missing {name!r}")
        word, key_id = obj["word"], obj["key_id"]
        if not isinstance(word, str) or not word:
            raise ValueError(f"'word' is not a non-empty string: {word!r}")
        if isinstance(key_id, bool) or not isinstance(key_id, (str, int)) or key_id == "":
            raise ValueError(f"'key_id' is not a string or integer: {key_id!r}")
        strokes = strokes_from_lists(obj["drawing"])
        if normalize and any(len(s) == 3 for s in obj["drawing"]):  # raw format: strokes carry timings
            strokes = normalize_strokes(strokes)
        recognized = obj.get("recognized", True)  # not every dump carries the flag: absent counts as usable
        if not isinstance(recognized, (bool, int)):
            raise ValueError(f"'recognized' is not a boolean: {recognized!r}")
        return Drawing(
            key_id=str(key_id),
            word=word,
            countrycode=str(obj.get("countrycode") or ""),
            recognized=bool(recognized),
            timestamp=str(obj.get("timestamp") or ""),
            strokes=[np.ascontiguousarray(s if keep_time else s[:, :2], dtype=np.float32) for s in strokes],
        )
    except UnicodeDecodeError as e:
        raise MalformedDrawing(source, line_no, f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except (ValueError, TypeError) as e:
        raise MalformedDrawing(source, line_no, str(e)) from None


def read_ndjson(uri: str, *, errors: list[MalformedDrawing] | None = None, strict: bool = False,
                normalize: bool = True, keep_time: bool = False) -> Iterator[Drawing]:
    """Stream the drawings of an ndjson file (any :mod:`ray_sbir.fs` URI; ``.gz`` is decompressed).

    Lines are read one at a time, never the whole file. Blank lines are skipped. A malformed line is skipped
    and appended to ``errors`` (logged when no list is given), or raised when ``strict``.
    """
    compression = "gzip" if uri.endswith(".gz") else None
    with fs.open_sequential(uri, compression=compression) as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield parse_line(raw, source=uri, line_no=line_no, normalize=normalize, keep_time=keep_time)
            except MalformedDrawing as e:
                if strict:
                    raise
                if errors is not None:
                    errors.append(e)
                else:
                    logger.warning("skipping %s", e)


def normalize_strokes(strokes: Sequence[np.ndarray], scale_to: float = SIMPLIFIED_MAX) -> list[np.ndarray]:
    """Shift a drawing to the top-left corner (minimum 0) and scale uniformly so its longest side spans
    ``0..scale_to``, as Google's simplified format does (without resampling or RDP). Extra columns (timings)
    are kept as they are. A single-point drawing is only shifted."""
    arrs = [np.asarray(s, dtype=np.float64) for s in strokes]
    pts = np.concatenate([a[:, :2] for a in arrs if len(a)], axis=0) if any(len(a) for a in arrs) else None
    if pts is None:
        return [a.astype(np.float32) for a in arrs]
    lo = pts.min(axis=0)
    extent = float((pts.max(axis=0) - lo).max())
    scale = scale_to / extent if extent > 0 else 1.0
    out = []
    for a in arrs:
        a = a.copy()
        if len(a):
            a[:, :2] = (a[:, :2] - lo) * scale
        out.append(a.astype(np.float32))
    return out


def drawing_to_json(d: Drawing) -> str:
    """One line of the simplified format (coordinates rounded to integers)."""
    drawing = [[np.rint(s[:, 0]).astype(np.int64).tolist(), np.rint(s[:, 1]).astype(np.int64).tolist()]
               for s in d.strokes]
    obj = {"word": d.word, "countrycode": d.countrycode, "timestamp": d.timestamp, "recognized": d.recognized,
           "key_id": d.key_id, "drawing": drawing}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------
# Rasterisation


def _flatten_batch(batch: Sequence[Sequence[np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All points of the batch ``[N, 2]`` float32, points per drawing ``[B]`` and points per stroke.

    Single-point strokes are doubled into a zero-length segment, which draws a round dot."""
    pieces: list[np.ndarray] = []
    stroke_lens: list[int] = []
    draw_lens = np.zeros(len(batch), dtype=np.int64)
    for i, strokes in enumerate(batch):
        n = 0
        for s in strokes:
            a = np.asarray(s, dtype=np.float32)
            if a.ndim != 2 or a.shape[1] < 2:
                raise ValueError(f"batch index {i}: a stroke must be an array of shape (n, 2), got {a.shape}")
            if len(a) == 0:
                continue
            if len(a) == 1:
                a = np.repeat(a[:, :2], 2, axis=0)
            pieces.append(a[:, :2])
            stroke_lens.append(len(a))
            n += len(a)
        if n == 0:
            raise ValueError(f"batch index {i}: empty drawing (no points to rasterize)")
        draw_lens[i] = n
    pts = np.concatenate(pieces, axis=0)
    if not np.isfinite(pts).all():
        bad = np.repeat(np.arange(len(batch)), draw_lens)[~np.isfinite(pts).all(axis=1)][0]
        raise ValueError(f"batch index {bad}: non-finite coordinates")
    return pts, draw_lens, np.asarray(stroke_lens, dtype=np.int64)


def _combine(coef: torch.Tensor, basis: torch.Tensor, matmul: bool) -> torch.Tensor:
    """``coef @ basis`` ([M, K] x [K, P]), as a matrix product or in exact elementwise float32."""
    if matmul:
        return coef @ basis
    out = coef[:, :1] * basis[0]
    for i in range(1, basis.shape[0]):
        out.addcmul_(coef[:, i:i + 1], basis[i])
    return out


def _flatten_packed(rows: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_flatten_batch` for packed drawings (:func:`pack_strokes`): one concatenation for the batch, stroke
    boundaries read off the end flags, no per-stroke Python work."""
    arrays = [np.asarray(r, dtype=np.float32) for r in rows]
    lens = np.fromiter((a.size for a in arrays), np.int64, len(arrays))
    bad = np.flatnonzero((lens == 0) | (lens % 3 != 0) | np.array([a.ndim != 1 for a in arrays]))
    if len(bad):
        i = int(bad[0])
        what = "empty drawing (no points to rasterize)" if lens[i] == 0 else \
            f"a packed drawing is a flat array of (x, y, end) triples, got shape {arrays[i].shape}"
        raise ValueError(f"batch index {i}: {what}")
    tri = np.concatenate(arrays).reshape(-1, 3)
    draw_lens = lens // 3
    ends = tri[:, 2] != 0
    last = np.cumsum(draw_lens) - 1
    if not ends[last].all():
        raise ValueError(f"batch index {int(np.flatnonzero(~ends[last])[0])}: the last point does not end a stroke")
    pts = tri[:, :2]
    if not np.isfinite(pts).all():
        bad = np.repeat(np.arange(len(arrays)), draw_lens)[~np.isfinite(pts).all(axis=1)][0]
        raise ValueError(f"batch index {bad}: non-finite coordinates")
    stroke_lens = np.diff(np.flatnonzero(ends), prepend=-1)
    single = stroke_lens == 1
    if single.any():  # a single-point stroke is doubled into a zero-length segment: a round dot
        reps = np.repeat(np.where(single, 2, 1), stroke_lens)
        pts = np.repeat(pts, reps, axis=0)
        draw_lens = np.add.reduceat(reps, last - draw_lens + 1)
        stroke_lens = np.where(single, 2, stroke_lens)
    return np.ascontiguousarray(pts), draw_lens, stroke_lens


def pack_strokes(strokes: Sequence[np.ndarray]) -> np.ndarray:
    """A drawing as one flat float32 array of ``(x, y, end)`` triples, ``end`` = 1 on a stroke's last point
    (the "stroke-3" layout, in absolute coordinates): how catalogs and Ray Data batches carry QuickDraw drawings
    (an Arrow ``list<float32>`` column; a numpy batch holds one such array per row) down to
    :func:`rasterize_packed`. Timings are dropped; empty strokes vanish."""
    parts = [np.asarray(s, dtype=np.float32)[:, :2] for s in strokes]
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros(0, np.float32)
    out = np.zeros((sum(len(p) for p in parts), 3), np.float32)
    out[:, :2] = np.concatenate(parts)
    out[np.cumsum([len(p) for p in parts]) - 1, 2] = 1
    return out.reshape(-1)


def unpack_strokes(packed) -> list[np.ndarray]:
    """The float32 ``(n, 2)`` strokes of a :func:`pack_strokes` array (or of the list Arrow's ``to_pylist``
    gives back)."""
    tri = np.asarray(packed, dtype=np.float32).reshape(-1, 3)
    return np.split(np.ascontiguousarray(tri[:, :2]), np.flatnonzero(tri[:-1, 2] != 0) + 1)


def _check_render(size: int, line_width: float, padding: float) -> None:
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not 0 <= padding < 0.5:
        raise ValueError(f"padding must be in [0, 0.5), got {padding}")
    if not line_width > 0:
        raise ValueError(f"line_width must be positive, got {line_width}")


def _fit(pts: np.ndarray, draw_lens: np.ndarray, size: int, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """Points in canvas pixels (each drawing's bounding box fitted, aspect kept, and centred into the padded
    canvas) and the drawing of every point. NumPy: O(points), cheap."""
    starts = np.concatenate([[0], np.cumsum(draw_lens)[:-1]])
    lo = np.minimum.reduceat(pts, starts, axis=0)
    hi = np.maximum.reduceat(pts, starts, axis=0)
    centre = (lo + hi) / 2
    extent = (hi - lo).max(axis=1)
    avail = size * (1 - 2 * padding)
    scale = np.where(extent > 0, avail / np.maximum(extent, 1e-12), 1.0).astype(np.float32)
    draw_id = np.repeat(np.arange(len(draw_lens)), draw_lens)
    return (pts - centre[draw_id]) * scale[draw_id, None] + np.float32(size / 2), draw_id


def _pieces(p: np.ndarray, draw_id: np.ndarray, stroke_lens: np.ndarray, piece: float, dev: torch.device):
    """The segments (consecutive points of a stroke) split into pieces no longer than ``piece`` pixels per
    axis: piece starts ``[M, 2]``, ends ``[M, 2]`` and drawing index ``[M]``, on ``dev``."""
    stroke_id = np.repeat(np.arange(len(stroke_lens)), stroke_lens)
    same = stroke_id[:-1] == stroke_id[1:]
    seg_a = torch.from_numpy(np.ascontiguousarray(p[:-1][same])).to(dev)
    seg_b = torch.from_numpy(np.ascontiguousarray(p[1:][same])).to(dev)
    seg_draw = torch.from_numpy(draw_id[:-1][same]).to(dev)
    d = seg_b - seg_a
    k = torch.clamp(torch.ceil(d.abs().amax(dim=1) / piece), min=1).to(torch.long)
    seg_idx = torch.repeat_interleave(torch.arange(len(k), device=dev), k)
    first = torch.cumsum(k, 0) - k
    j = (torch.arange(len(seg_idx), device=dev) - first[seg_idx]).to(torch.float32)
    kf = k[seg_idx].to(torch.float32)
    pa = seg_a[seg_idx] + (j / kf)[:, None] * d[seg_idx]
    pb = seg_a[seg_idx] + ((j + 1) / kf)[:, None] * d[seg_idx]
    return pa, pb, seg_draw[seg_idx]


def _window(win: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A piece's ``win x win`` pixel window, flattened row-major: the basis ``[1, gx, gy, gx^2 + gy^2]``
    ``[4, P]`` and the column and row offsets ``[P]``. Per-piece quantities are linear/quadratic in (gx, gy):
    they are evaluated for all window pixels as small matrix products ``[M, 4] @ [4, P]`` instead of
    broadcasting elementwise ops (much faster on CPU)."""
    gy, gx = torch.meshgrid(torch.arange(win, device=dev), torch.arange(win, device=dev), indexing="ij")
    gx, gy = gx.reshape(-1), gy.reshape(-1)
    gxf, gyf = gx.to(torch.float32), gy.to(torch.float32)
    return torch.stack([torch.ones_like(gxf), gxf, gyf, gxf * gxf + gyf * gyf]), gx, gy


def _ink(a: torch.Tensor, e: torch.Tensor, basis: torch.Tensor, reach: float,
         exact_mm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ink ``[M, P]`` (255 x antialiased coverage ``clamp(reach - distance, 0, 1)``) in the windows of
    pieces ``a -> e``, and each window's corner pixel ``[M, 2]``."""
    origin = torch.floor(torch.minimum(a, e) - (reach + 0.5))  # pixel index of the window's corner
    dd = e - a
    len2 = (dd * dd).sum(dim=1)
    inv_len2 = 1.0 / torch.clamp(len2, min=1e-12)
    q0 = origin + 0.5 - a  # from the piece's start to the centre of the window's corner pixel
    zero = torch.zeros_like(len2)
    # u: projection of (pixel centre - start) on the piece, in units of its length (unclamped t).
    u_coef = torch.stack([(q0 * dd).sum(dim=1) * inv_len2, dd[:, 0] * inv_len2, dd[:, 1] * inv_len2, zero], 1)
    # |q|^2: squared distance from the piece's start to every pixel centre.
    q_coef = torch.stack([(q0 * q0).sum(dim=1), 2 * q0[:, 0], 2 * q0[:, 1], torch.ones_like(len2)], 1)
    u = _combine(u_coef, basis, exact_mm)  # [M, P]
    dist2 = _combine(q_coef, basis, exact_mm)
    t = u.clamp(0.0, 1.0)
    # |q - t d|^2 = |q|^2 + |d|^2 t (t - 2u)
    u.mul_(-2.0).add_(t).mul_(t).mul_(len2[:, None])
    # ink = 255 * clamp(reach - dist, 0, 1), rounded (+0.5 then truncation by the uint8 cast)
    ink = dist2.add_(u).clamp_(min=0.0).sqrt_().mul_(-255.0).add_(255.0 * reach + 0.5).clamp_(0.0, 255.49)
    return ink.to(torch.uint8), origin


def _render(pts: np.ndarray, draw_lens: np.ndarray, stroke_lens: np.ndarray, size: int, line_width: float,
            padding: float, dev: torch.device) -> torch.Tensor:
    """Flattened drawings (:func:`_flatten_batch`) -> uint8 images ``[B, size, size]`` on ``dev``."""
    b = len(draw_lens)
    p, draw_id = _fit(pts, draw_lens, size, padding)
    r = line_width / 2
    reach = r + 0.5  # coverage is positive within this distance of the centre line
    # A pixel is inked only if its centre lies within `reach` of the piece, so with the window's corner at
    # floor(min corner - r - 1), a side W >= piece + 2r + 2 holds every pixel a piece can touch (a rounding
    # excess of the piece's length could only drop a pixel at distance ~reach, i.e. of coverage ~0).
    # piece = 2r + 2 minimises the work per unit of ink length, W^2 / piece.
    piece = 2 * r + 2
    win = int(math.ceil(piece + 2 * r + 2))
    pa, pb, pdraw = _pieces(p, draw_id, stroke_lens, piece, dev)

    # Coverage in each piece's window, max-reduced into margin-padded canvases. Windows start at most r + 2 px
    # before the canvas and end at most `win` px after it.
    lo_margin, hi_margin = int(math.ceil(r)) + 2, win
    side = size + lo_margin + hi_margin
    # Ink in 1/255 units, uint8: a quarter of the memory traffic of float32, and the output is one `255 - x`.
    canvas = torch.zeros(b * side * side, dtype=torch.uint8, device=dev)
    basis, gx, gy = _window(win, dev)
    offsets = gy * side + gx  # [P]
    # Reduced-precision float32 matmul (TF32/bf16, torch.set_float32_matmul_precision) would visibly shift
    # the distances: then combine elementwise instead.
    exact_mm = torch.get_float32_matmul_precision() == "highest" and not (
        dev.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)
    chunk = max(1, _CHUNK_ELEMENTS // (win * win))
    for c0 in range(0, len(pa), chunk):
        ink, origin = _ink(pa[c0:c0 + chunk], pb[c0:c0 + chunk], basis, reach, exact_mm)
        origin_i = origin.to(torch.long) + lo_margin
        start = pdraw[c0:c0 + chunk] * (side * side) + origin_i[:, 1] * side + origin_i[:, 0]
        flat = start[:, None] + offsets
        canvas.scatter_reduce_(0, flat.reshape(-1), ink.reshape(-1), reduce="amax", include_self=True)
    canvas = canvas.view(b, side, side)[:, lo_margin:lo_margin + size, lo_margin:lo_margin + size]
    return 255 - canvas


def rasterize(batch: Sequence[Sequence[np.ndarray]], size: int = 64, line_width: float = 2.0,
              padding: float = 0.08, *, device: str | torch.device | None = None,
              as_tensor: bool = False) -> np.ndarray | torch.Tensor:
    """Rasterise a batch of drawings into ``uint8 [B, size, size]`` images: white paper (255), dark ink (0).

    Each drawing's bounding box is fitted (aspect ratio kept) and centred into the canvas less ``padding``
    (a fraction of ``size``) on every side. Strokes are ``line_width`` output pixels wide whatever the size,
    with round caps and joins, antialiased; a single-point stroke draws a dot. ``device`` selects where the
    work runs (CPU by default); ``as_tensor`` returns the torch tensor on that device instead of NumPy.
    Raises ``ValueError`` naming the batch index for an empty drawing.
    """
    return _rasterize_with(_flatten_batch, batch, size, line_width, padding, device, as_tensor)


def rasterize_packed(rows: Sequence, size: int = 64, line_width: float = 2.0, padding: float = 0.08, *,
                     device: str | torch.device | None = None, as_tensor: bool = False) -> np.ndarray | torch.Tensor:
    """:func:`rasterize` for drawings packed by :func:`pack_strokes` (one flat ``(x, y, end)`` float32 array,
    or list, per drawing), as catalog rows and Ray Data batches carry them: the same images, without building
    per-stroke arrays. Raises ``ValueError`` naming the batch index for an empty or malformed drawing."""
    return _rasterize_with(_flatten_packed, rows, size, line_width, padding, device, as_tensor)


def _rasterize_with(flatten, batch, size, line_width, padding, device, as_tensor):
    _check_render(size, line_width, padding)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if len(batch) == 0:
        out = torch.empty((0, size, size), dtype=torch.uint8, device=dev)
    else:
        out = _render(*flatten(batch), size, line_width, padding, dev)
    return out if as_tensor else out.cpu().numpy()
