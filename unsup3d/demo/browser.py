"""The demo page driven in a real headless Chromium (Playwright): the end-to-end test's and the README
screenshot's one procedure, :func:`check_page`.

Chromium is the system's (Debian's ``chromium`` package, ``/usr/bin/chromium``; ``$UNSUP3D_CHROMIUM``
names another), never a browser that Playwright downloads. It starts headless in a fresh profile with
background networking off, and WebGL on the CPU (SwiftShader), which the 3D viewer needs.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

__all__ = ["CHROMIUM_ARGS", "PageCheck", "check_page", "find_chromium"]

#: Headless, no sandbox (root in CI), nothing contacted in the background, WebGL through SwiftShader.
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
)


def find_chromium() -> str | None:
    """The Chromium executable: ``$UNSUP3D_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on the PATH."""
    env = os.environ.get("UNSUP3D_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageCheck:
    """What :func:`check_page` saw.

    Attributes:
        requests: every URL the page requested (``data:`` and ``blob:`` URLs left out).
        external: those not on the server's own host and port.
        canvas_drawn: the 3D viewer's canvas shows more than its background.
        depth_src: the ``src`` of the depth image once it appeared.
        relit_changed, posed_changed: moving the light (``dx``) and the yaw slider re-rendered the relit
            and the posed view.
        fonts: the computed ``font-family`` of the page's text (Gradio's container).
        console_errors: the browser console's error messages.
        screenshot: the full-page screenshot, when one was asked for.
        seconds: from loading the page to the finished checks.
    """

    requests: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    canvas_drawn: bool = False
    depth_src: str = ""
    relit_changed: bool = False
    posed_changed: bool = False
    fonts: str = ""
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    seconds: float = 0.0


def _canvas_varies(png: bytes) -> bool:
    """Whether a canvas screenshot has more than a flat background (some pixels far from the median)."""
    with Image.open(io.BytesIO(png)) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    median = np.median(rgb.reshape(-1, 3), axis=0)
    far = np.abs(rgb - median).max(-1) > 24
    return bool(far.mean() > 0.01)


def _slider_rerenders(page, slider: str, value: str, image: str, timeout_s: float) -> bool:
    """Move a slider as a user would (its range input) and wait for ``image``'s ``src`` to change."""
    img = page.locator(image).first
    img.wait_for(state="visible", timeout=timeout_s * 1000)
    before = img.get_attribute("src")
    page.locator(f"{slider} input[type=range]").first.fill(value)
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if img.get_attribute("src") not in (before, None):
            return True
        page.wait_for_timeout(200)
    return False


def check_page(
    url: str,
    photo: str | os.PathLike,
    screenshot: str | os.PathLike | None = None,
    *,
    chromium: str | None = None,
    timeout_s: float = 120.0,
    viewport: tuple[int, int] = (1360, 1200),
) -> PageCheck:
    """Load the demo page, upload ``photo``, wait until the 3D viewer's canvas is drawn and the depth image
    appears, move the light and yaw sliders, optionally take a full-page screenshot.

    Args:
        url: the page (``http://127.0.0.1:PORT/``).
        photo: the photo to upload.
        screenshot: PNG file to write (parent folders created).
        chromium: the browser executable (default :func:`find_chromium`).
        timeout_s: the longest wait for the results.
        viewport: browser window ``(width, height)`` in CSS pixels.

    Raises:
        RuntimeError: no Chromium found.
        playwright.sync_api.TimeoutError: the results did not appear in time.
    """
    from playwright.sync_api import sync_playwright

    exe = chromium or find_chromium()
    if exe is None:
        raise RuntimeError("no Chromium found (install Debian's chromium package or set UNSUP3D_CHROMIUM)")
    own = urlsplit(url).netloc
    check = PageCheck()
    timeout_ms = timeout_s * 1000
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unsup3d-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": viewport[0], "height": viewport[1]})
        try:
            page = context.new_page()

            def on_request(request) -> None:
                if not request.url.startswith(("data:", "blob:")):
                    check.requests.append(request.url)

            page.on("request", on_request)
            page.on("console", lambda msg: check.console_errors.append(msg.text) if msg.type == "error" else None)
            page.goto(url, wait_until="load", timeout=timeout_ms)
            page.locator("#photo input[type=file]").set_input_files(str(photo), timeout=timeout_ms)
            depth = page.locator("#map-depth img").first
            depth.wait_for(state="visible", timeout=timeout_ms)
            check.depth_src = depth.get_attribute("src") or ""
            canvas = page.locator("#viewer canvas").first
            canvas.wait_for(state="visible", timeout=timeout_ms)
            deadline = time.perf_counter() + timeout_s
            while not check.canvas_drawn and time.perf_counter() < deadline:
                page.wait_for_timeout(500)
                check.canvas_drawn = _canvas_varies(canvas.screenshot(timeout=timeout_ms))
            page.locator("#turntable video").first.wait_for(state="attached", timeout=timeout_ms)
            check.relit_changed = _slider_rerenders(page, "#light-dx", "0.8", "#relit img", timeout_s)
            check.posed_changed = _slider_rerenders(page, "#yaw", "45", "#posed img", timeout_s)
            page.wait_for_timeout(1000)  # the video and the last images settle
            check.fonts = page.evaluate(
                "getComputedStyle(document.querySelector('.gradio-container') || document.body).fontFamily")
            if screenshot is not None:
                out = Path(screenshot)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
                check.screenshot = out
        finally:
            context.close()
    check.external = [u for u in check.requests if urlsplit(u).netloc != own]
    check.seconds = time.perf_counter() - start
    return check
