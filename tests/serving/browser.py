"""Driving the doodle page in a real headless browser (tests/serving/test_web*.py): Debian's ``chromium`` package
(``apt-get install -y chromium``) through the ``playwright`` Python package (the ``dev`` extra); Playwright's own
browser download is not used."""

from __future__ import annotations

import os
import shutil

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="needs Debian's chromium: apt-get install -y chromium")


def draw_strokes(page, strokes, box) -> None:
    """Draw QuickDraw strokes (0-255 coordinates) into the canvas with mouse moves."""
    margin = 0.15 * box["width"]
    scale = (box["width"] - 2 * margin) / 255.0
    for xs, ys in ((s[0], s[1]) for s in strokes):
        pts = [(box["x"] + margin + x * scale, box["y"] + margin + y * scale) for x, y in zip(xs, ys)]
        page.mouse.move(*pts[0])
        page.mouse.down()
        for p in pts[1:]:
            page.mouse.move(*p, steps=3)
        page.mouse.up()
