"""A real browser against the running app: headless Chromium (Debian's package) driven by Playwright.

Skipped where Chromium is not installed; ``.ci/run`` installs it. With
QSIT_UPDATE_SCREENSHOT=1 the screenshot is written to docs/ui-screenshot.png
(QSIT_SCREENSHOT_MODEL picks the model shown; the test model otherwise).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the app did not become healthy in time")


def test_upload_score_explain_and_chat_in_chromium(tmp_path, tiny_checkpoint, photo):
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "QSIT_MODEL": os.environ.get("QSIT_SCREENSHOT_MODEL") or tiny_checkpoint}
    with open(tmp_path / "app.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "qsit.cli", "ui", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, proc)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync"])
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.goto(url)
                page.wait_for_selector('input[type="file"]', state="attached", timeout=120_000)
                page.set_input_files('input[type="file"]', str(photo))
                page.get_by_text("Quality score (1 bad … 5 excellent)").wait_for(timeout=180_000)
                page.get_by_text("Most likely level").wait_for(timeout=60_000)
                box = page.locator('[data-testid="stChatInputTextArea"]')
                box.fill("Is the sky overexposed?")
                box.press("Enter")
                page.wait_for_function(
                    "document.querySelectorAll('[data-testid=\"stChatMessage\"]').length >= 2", timeout=180_000)
                page.wait_for_timeout(1500)  # let the streamed answer settle before the picture
                shot = ROOT / "docs" / "ui-screenshot.png" if os.environ.get("QSIT_UPDATE_SCREENSHOT") else \
                    tmp_path / "ui.png"
                page.screenshot(path=str(shot), full_page=True)
                assert page.locator('[data-testid="stChatMessage"]').first.inner_text().strip().endswith(
                    "Is the sky overexposed?")
                browser.close()
            assert shot.stat().st_size > 20_000
        finally:
            proc.terminate()
            proc.wait(timeout=30)
