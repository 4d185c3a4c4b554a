"""Evaluation figures: retrieval result grids and precision-recall curves, rendered to PNG bytes.

Everything returns ``bytes`` (nothing touches the filesystem); :func:`save_png` writes them through
:mod:`ray_sbir.fs`, so ``s3://`` URIs work. Grids are drawn with Pillow (exact pixel layout, described by
:class:`GridGeometry`); PR curves with matplotlib's object API on the Agg canvas (no ``pyplot`` global
state, safe in worker threads/processes).

Both figures stay readable in grayscale: correct/wrong results carry a check/cross badge in addition to
the green/red border, and PR curves differ by line style and marker as well as colour.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ray_sbir import fs

__all__ = [
    "GREEN",
    "RED",
    "QUERY_COLOR",
    "GridGeometry",
    "grid_geometry",
    "to_pil",
    "retrieval_grid_png",
    "pr_curve_png",
    "save_png",
]

GREEN = (0, 160, 60)
RED = (215, 25, 28)
QUERY_COLOR = (40, 40, 40)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


# ------------------------------------------------------------------------------------------ images


def to_pil(img: Any) -> Image.Image:
    """Convert an image to RGB PIL.

    Accepts PIL images, numpy arrays or torch tensors shaped ``HxW``, ``HxWxC`` or ``CxHxW`` (C in 1, 3,
    4); ``uint8`` or float. Floats in ``[0, 1]`` are scaled to 0..255, other floats clipped to 0..255.
    """
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    if hasattr(img, "detach"):  # torch tensor
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"unsupported image shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.size and np.nanmax(a) <= 1.0 and np.nanmin(a) >= 0.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 4:  # composite RGBA onto white
        rgba = Image.fromarray(a, "RGBA")
        bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return Image.fromarray(a).convert("RGB")


def _fit(img: Image.Image, size: int) -> Image.Image:
    """Resize keeping the aspect ratio and centre on a white ``size x size`` square."""
    w, h = img.size
    scale = size / max(w, h, 1)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = Image.new("RGB", (size, size), BACKGROUND)
    out.paste(img.resize((nw, nh), Image.Resampling.LANCZOS), ((size - nw) // 2, (size - nh) // 2))
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


# -------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class GridGeometry:
    """Pixel layout of :func:`retrieval_grid_png` (every length in pixels).

    Each cell is a bordered tile (``thumb + 2 * border`` square) under a title line. Column 0 holds the
    query, columns 1.. its results, with an extra ``query_gap`` after the query column.
    """

    n_rows: int
    n_results: int
    thumb: int
    border: int
    pad: int
    title_h: int
    query_gap: int
    header_h: int

    @property
    def tile(self) -> int:
        return self.thumb + 2 * self.border

    @property
    def cell_w(self) -> int:
        return self.tile + self.pad

    @property
    def row_h(self) -> int:
        return self.title_h + self.tile + self.pad

    @property
    def width(self) -> int:
        return self.pad + (1 + self.n_results) * self.cell_w + self.query_gap

    @property
    def height(self) -> int:
        return self.header_h + self.pad + self.n_rows * self.row_h

    def tile_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the bordered tile (exclusive x1/y1); ``col`` 0 = query."""
        x0 = self.pad + col * self.cell_w + (self.query_gap if col > 0 else 0)
        y0 = self.header_h + self.pad + row * self.row_h + self.title_h
        return x0, y0, x0 + self.tile, y0 + self.tile

    def title_xy(self, row: int, col: int) -> tuple[int, int]:
        x0, y0, _, _ = self.tile_box(row, col)
        return x0, y0 - self.title_h


def grid_geometry(n_rows: int, n_results: int, thumb: int = 64, title: str | None = None) -> GridGeometry:
    """Layout used for a grid of ``n_rows`` queries with up to ``n_results`` results each."""
    border = max(3, round(thumb / 12))
    font_px = max(10, round(thumb / 6))
    return GridGeometry(
        n_rows=n_rows,
        n_results=n_results,
        thumb=thumb,
        border=border,
        pad=max(4, thumb // 10),
        title_h=font_px + 6,
        query_gap=max(8, thumb // 4),
        header_h=(font_px + 12) if title else 0,
    )


def _badge(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], correct: bool, size: int) -> None:
    """Check (correct) or cross (wrong) mark in the tile's top-right corner: a shape, not only a colour."""
    x1, y0 = box[2], box[1]
    r = size // 2
    cx, cy = x1 - r - 1, y0 + r + 1
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=GREEN if correct else RED, outline=BACKGROUND, width=2)
    lw = max(2, size // 7)
    s = r * 0.55
    if correct:
        pts = [(cx - s, cy), (cx - s * 0.25, cy + s * 0.7), (cx + s, cy - s * 0.7)]
        draw.line(pts, fill=BACKGROUND, width=lw, joint="curve")
    else:
        draw.line([(cx - s, cy - s), (cx + s, cy + s)], fill=BACKGROUND, width=lw)
        draw.line([(cx - s, cy + s), (cx + s, cy - s)], fill=BACKGROUND, width=lw)


def retrieval_grid_png(
    queries: Sequence[Any],
    results: Sequence[Sequence[Any]],
    correct: Sequence[Sequence[bool]],
    *,
    query_titles: Sequence[str] | None = None,
    result_titles: Sequence[Sequence[str]] | None = None,
    thumb: int = 64,
    title: str | None = None,
) -> bytes:
    """PNG of retrieval results: one row per query sketch, followed by its ranked results.

    Args:
        queries: one image per row (numpy/torch/PIL; see :func:`to_pil`).
        results: per row, the retrieved images in rank order (typically the top 10).
        correct: per row, one bool per result (same class as the query). Correct results get a thick green
            border and a check badge, wrong ones a thick red border and a cross badge.
        query_titles: text above each query (e.g. its class name); default ``"query i"``.
        result_titles: text above each result (e.g. the photo's class name); default ``"#rank"``.
        thumb: side of each thumbnail in pixels (images are letterboxed, aspect kept).
        title: optional heading over the whole grid.

    The exact layout is :func:`grid_geometry` ``(len(queries), max row length, thumb, title)``.
    """
    n = len(queries)
    if len(results) != n or len(correct) != n:
        raise ValueError("queries, results and correct must have one entry per row")
    for i, (res, cor) in enumerate(zip(results, correct)):
        if len(res) != len(cor):
            raise ValueError(f"row {i}: {len(res)} results but {len(cor)} correctness flags")
    if query_titles is not None and len(query_titles) != n:
        raise ValueError("query_titles must have one entry per row")
    if result_titles is not None and (
        len(result_titles) != n or any(len(t) != len(r) for t, r in zip(result_titles, results))
    ):
        raise ValueError("result_titles must match results")
    if n == 0:
        raise ValueError("no queries to draw")

    geo = grid_geometry(n, max((len(r) for r in results), default=0), thumb, title)
    canvas = Image.new("RGB", (geo.width, geo.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(geo.title_h - 6)
    if title:
        hfont = _font(geo.header_h - 10)
        draw.text((geo.pad, 4), _fit_text(draw, title, hfont, geo.width - 2 * geo.pad), fill=TEXT, font=hfont)

    def put(row: int, col: int, img: Any, color: tuple[int, int, int], text: str) -> tuple[int, int, int, int]:
        box = geo.tile_box(row, col)
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=color)
        canvas.paste(_fit(to_pil(img), geo.thumb), (box[0] + geo.border, box[1] + geo.border))
        tx, ty = geo.title_xy(row, col)
        draw.text((tx, ty + 1), _fit_text(draw, text, font, geo.tile), fill=TEXT, font=font)
        return box

    for i in range(n):
        qt = query_titles[i] if query_titles is not None else f"query {i}"
        put(i, 0, queries[i], QUERY_COLOR, str(qt))
        for j, (img, ok) in enumerate(zip(results[i], correct[i])):
            rt = result_titles[i][j] if result_titles is not None else f"#{j + 1}"
            box = put(i, j + 1, img, GREEN if ok else RED, str(rt))
            _badge(draw, box, bool(ok), max(12, thumb // 4))
        # separator between the query column and its results
        x = geo.tile_box(i, 0)[2] + (geo.pad + geo.query_gap) // 2
        y0, y1 = geo.tile_box(i, 0)[1], geo.tile_box(i, 0)[3]
        draw.line([(x, y0), (x, y1 - 1)], fill=(170, 170, 170), width=2)

    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- PR curve

_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 1)), "x")]


def pr_curve_png(
    curves: Mapping[str, tuple[Any, Any]],
    title: str = "Precision-recall",
    *,
    size: tuple[float, float] = (5.0, 4.0),
    dpi: int = 120,
) -> bytes:
    """PNG with one or more named PR curves (e.g. ``{"untrained": (r, p), "trained": (r, p)}``).

    Curves are ``(recall, precision)`` arrays such as :attr:`ray_sbir.eval.metrics.RetrievalMetrics.pr_curve`.
    Each curve gets its own colour, line style and marker (distinguishable in grayscale).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("no curves to plot")
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, (rec, prec)) in enumerate(curves.items()):
        rec, prec = np.asarray(rec, dtype=float), np.asarray(prec, dtype=float)
        if rec.shape != prec.shape:
            raise ValueError(f"curve {name!r}: recall {rec.shape} and precision {prec.shape} differ")
        ls, marker = _STYLES[i % len(_STYLES)]
        ax.plot(rec, prec, linestyle=ls, marker=marker, markersize=4, linewidth=1.8,
                markevery=max(1, len(rec) // 11), label=str(name))
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Interpolated precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def training_curves_png(history: Sequence[Mapping[str, float]], title: str = "Training", *,
                        size: tuple[float, float] = (8.0, 3.6), dpi: int = 110) -> bytes:
    """PNG of a run's per-epoch history: the loss and each loss term (left), validation metrics (right).

    ``history`` rows are the per-epoch metrics a run records (``epoch``, ``train_<term>``, ``val_map``, ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from matplotlib.ticker import MaxNLocator

    if not history:
        raise ValueError("no epochs to plot")
    epochs = [int(row.get("epoch", i)) + 1 for i, row in enumerate(history)]
    keys = list(dict.fromkeys(k for row in history for k in row))
    train_keys = [k for k in keys if k.startswith("train_") and not k.endswith(("_accuracy", "_weight"))]
    val_keys = [k for k in keys if k.startswith("val_")]
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    for col, (names, ylabel) in enumerate(((train_keys, "training loss (epoch mean)"),
                                           (val_keys, "validation (held-out classes)"))):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, name in enumerate(names):
            ys = [float(row.get(name, float("nan"))) for row in history]
            ls, marker = _STYLES[i % len(_STYLES)]
            ax.plot(epochs, ys, linestyle=ls, marker=marker, markersize=4, linewidth=1.6,
                    label=name.split("_", 1)[1])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if names:
            ax.legend(loc="best", fontsize="small", framealpha=0.9)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_png(uri: str, data: bytes) -> None:
    """Write PNG bytes to a local path or ``s3://`` URI (atomic where the store allows)."""
    fs.write_bytes(uri, data)
