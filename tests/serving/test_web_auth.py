"""The doodle page of a private gallery (API key) in a real headless browser: the key field, the 401 message,
then searching with the key (its own Serve app: the other page test's app holds Serve's HTTP port)."""

from __future__ import annotations

import pytest

from tests.serving.browser import CHROMIUM, CHROMIUM_ARGS, draw_strokes, needs_chromium, sync_api
from tests.serving.helpers import make_gallery, serve_config_for, start_serve, stop_serve

pytestmark = [needs_chromium, pytest.mark.exclusive]


def test_doodle_page_of_a_private_gallery_asks_for_the_key(ray_local, tmp_path):
    """With an API key configured the page shows a key field; without the key it says so, with it the page
    searches and shows the thumbnails (fetched with the key, since an <img> cannot send it)."""
    gallery = make_gallery(str(tmp_path / "gallery"))
    (tmp_path / "key").write_text("page-key\n")
    base = start_serve(serve_config_for(gallery, search_mode="colocated", api_key_file=str(tmp_path / "key"),
                                        colocated={"num_cpus": 0.25}))
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
                page.goto(base + "/", wait_until="networkidle")
                assert page.locator("#key-label").is_visible()
                page.wait_for_function("document.getElementById('status').textContent.includes('needs an API key')")
                box = page.locator("#pad").bounding_box()
                draw_strokes(page, gallery.drawings[0][2][:1], box)
                page.wait_for_function("document.getElementById('status').textContent.includes('Error 401')",
                                       timeout=60_000)
                assert page.locator("#results .item").count() == 0

                page.fill("#key", "page-key")
                page.dispatch_event("#key", "change")
                page.wait_for_function("document.getElementById('classes').textContent.includes('gallery items')")
                draw_strokes(page, gallery.drawings[0][2][1:2] or gallery.drawings[0][2][:1], box)
                page.wait_for_function(
                    "(() => { const imgs = [...document.querySelectorAll('#results .item img')];"
                    " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); })()",
                    timeout=60_000)
                srcs = page.eval_on_selector_all("#results .item img", "els => els.map(e => e.src)")
                assert srcs and all(s.startswith("blob:") for s in srcs)
                assert page.evaluate("sessionStorage.getItem('ray-sbir-key')") == "page-key"
            finally:
                browser.close()
    finally:
        stop_serve()
    assert not errors, errors
