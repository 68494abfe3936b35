"""The server's page (GET /) in a real headless browser, and the optional API key: a real server process, Chromium
driven by Playwright (the system's Chromium: Playwright's own browser download needs the internet)."""

from __future__ import annotations

import shutil

import pytest
from conftest import ROOT, write_checkpoint

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")
from test_serve import running_server  # noqa: E402

KEY = "s3cret-key"
IMAGE = ROOT / "data/images/shapes1.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python utils/serve.py --api-key KEY` with one detector; yields its base URL."""
    d = tmp_path_factory.mktemp("page")
    weights = write_checkpoint(d / "shapes.pt", sharp=True)
    with running_server(["--weights", weights, "--imgsz", 320, "--api-key", KEY], d) as (url, _):
        yield url


def test_api_key_guards_every_route_but_health(server):
    files = {"image": ("a.jpg", IMAGE.read_bytes(), "image/jpeg")}
    assert httpx.get(f"{server}/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        r = httpx.post(f"{server}/v1/object-detection/shapes", files=files, headers=headers)
        assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert httpx.get(f"{server}/docs").status_code == 401
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        r = httpx.post(f"{server}/v1/object-detection/shapes", files=files, headers=headers)
        assert r.status_code == 200 and isinstance(r.json(), list)
    page = httpx.get(server)  # the page itself is static and asks for the key
    assert page.status_code == 200 and "<script>" in page.text
    assert "http://" not in page.text.replace(server, "") and "https://" not in page.text  # no external assets


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (apt-get install chromium)")


def test_page_draws_an_uploaded_image_and_shows_the_json(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server)
            page.wait_for_function("document.querySelectorAll('#model option').length > 0")
            page.set_input_files("#file", str(IMAGE))
            page.wait_for_selector("#keybox", state="visible")  # 401: the page asks for the key, once
            page.fill("#key", KEY)
            page.click("#keyok")
            page.wait_for_function("document.getElementById('drawing').naturalWidth > 0", timeout=60_000)
            size = page.evaluate("[document.getElementById('drawing').naturalWidth, "
                                 "document.getElementById('drawing').naturalHeight]")
            shown = page.inner_text("#json")
            page.set_input_files("#file", str(ROOT / "data/images/shapes2.jpg"))  # the key is remembered
            page.wait_for_function("document.getElementById('json').textContent.includes('\"records\"') && "
                                   "!document.getElementById('keybox').offsetParent", timeout=60_000)
        finally:
            browser.close()
    import cv2

    h, w = cv2.imread(str(IMAGE)).shape[:2]
    assert size == [w, h]  # the drawing is the uploaded image, at its own size
    assert '"records"' in shown and '"xmin"' in shown and '"task": "detect"' in shown
