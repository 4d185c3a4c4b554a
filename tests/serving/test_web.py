"""The doodle page in a real headless browser: draw with the mouse, get thumbnails of the gallery.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``) and the ``playwright`` Python package (the
``dev`` extra); Playwright's own browser download is not used. Skipped, saying so, when either is missing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.serving.browser import CHROMIUM, CHROMIUM_ARGS, draw_strokes, needs_chromium, sync_api
from tests.serving.helpers import make_gallery, serve_config_for, start_serve, stop_serve

httpx = pytest.importorskip("httpx")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = [needs_chromium, pytest.mark.exclusive]


@pytest.fixture(scope="module")
def web(ray_local, tmp_path_factory):
    gallery = make_gallery(str(tmp_path_factory.mktemp("web")))
    base = start_serve(serve_config_for(gallery))
    yield base, gallery
    stop_serve()


def test_doodle_page_shows_results_for_a_drawing(web):
    base, gallery = web
    errors: list[str] = []
    bodies: list[dict] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("request", lambda r: bodies.append(json.loads(r.post_data))
                    if r.method == "POST" and r.url.endswith("/search") else None)
            page.goto(base + "/", wait_until="networkidle")
            assert page.title().startswith("ray-sbir")
            # /info filled in the class list
            page.wait_for_function("document.getElementById('classes').textContent.includes('gallery items')")

            box = page.locator("#pad").bounding_box()
            _item_id, label, strokes = gallery.drawings[0]
            draw_strokes(page, strokes, box)
            n_strokes = len(strokes)
            page.wait_for_function(
                f"document.getElementById('status').textContent.includes('for {n_strokes} stroke')", timeout=60_000)
            page.wait_for_function(
                "(() => { const imgs = [...document.querySelectorAll('#results .item img')];"
                " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); })()", timeout=60_000)
            items = page.eval_on_selector_all(
                "#results .item",
                "els => els.map(e => ({cls: e.querySelector('.cls').textContent,"
                " score: e.querySelector('.score').textContent, src: e.querySelector('img').getAttribute('src'),"
                " w: e.querySelector('img').naturalWidth, h: e.querySelector('img').naturalHeight}))")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "doodle_page.png"), full_page=True)

            # One search per finished stroke, each with all strokes so far.
            assert len(bodies) == n_strokes
            assert [len(b["strokes"]) for b in bodies] == list(range(1, n_strokes + 1))
            assert all(len(s) == 2 and len(s[0]) == len(s[1]) >= 1 for s in bodies[-1]["strokes"])
            # The page shows what the API answers for the same strokes: same items, classes, order.
            api = httpx.post(base + "/search", json=bodies[-1], timeout=60).json()
            assert len(items) == api["count"] == 20
            assert [i["src"] for i in items] == [r["image_url"] for r in api["results"]]
            assert [i["cls"] for i in items] == [r["class"] for r in api["results"]]
            assert all(i["cls"] in set(gallery.labels) for i in items)
            assert all(i["w"] == i["h"] == 128 for i in items)
            assert all(i["score"].startswith("#") for i in items)

            # The class filter the index offers: every result then is of that class, as the API answers it.
            other = sorted(set(gallery.labels) - {label})[0]
            before = len(bodies)
            page.select_option("#class", other)
            page.wait_for_function(f"[...document.querySelectorAll('#results .item .cls')].length > 0 && "
                                   f"[...document.querySelectorAll('#results .item .cls')]"
                                   f".every(e => e.textContent === {json.dumps(other)})", timeout=60_000)
            assert len(bodies) == before + 1 and bodies[-1]["filter"] == {"label": other}
            assert page.locator("#country-label").is_hidden()  # not a QuickDraw gallery: no country column
            page.select_option("#class", "")

            # Clear empties the canvas and the results.
            page.click("#clear")
            assert page.locator("#results .item").count() == 0
            ink = page.evaluate(
                "(() => { const c = document.getElementById('pad'); const d = c.getContext('2d')"
                ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
                " for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++; return n; })()")
            assert ink == 0
            # A new drawing after Clear searches again from scratch.
            before = len(bodies)
            draw_strokes(page, gallery.drawings[1][2][:1], box)
            deadline = time.time() + 60
            while len(bodies) == before and time.time() < deadline:
                page.wait_for_timeout(100)
            assert len(bodies) == before + 1 and len(bodies[-1]["strokes"]) == 1
            page.wait_for_function("document.querySelectorAll('#results .item').length > 0", timeout=60_000)
        finally:
            browser.close()
    assert not errors, errors

