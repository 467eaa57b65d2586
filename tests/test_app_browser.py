"""End to end: ``hiclip app`` serves the page on 127.0.0.1, headless Chromium renders it.

Checks what AppTest cannot: that the browser shows the tree drawing (an inline ``<svg>``) and the
group overlay (a loaded ``<img>``), and saves a screenshot. Skips when Chromium or chromedriver
is not installed (CI installs both through ``.ci/run``).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viz import demo_assets

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _find("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMEDRIVER = _find("chromedriver")


PAGE_STATE_JS = """
const tree = document.querySelector('div.hiclip-tree-layer svg');
const full = document.querySelector('div.hiclip-tree-full svg');
const imgs = Array.from(document.querySelectorAll('[data-testid="stImage"] img'));
const loaded = imgs.filter(i => i.complete && i.naturalWidth > 0);
const status = document.querySelector('[data-testid="stStatusWidget"]');
const rect = tree ? tree.getBoundingClientRect() : {width: 0, height: 0};
return {
  svgs: document.querySelectorAll('div.hiclip-tree-layer svg, div.hiclip-tree-full svg').length,
  loaded_images: loaded.length,
  running: !!(status && status.offsetParent !== null),
  tree_width: rect.width, tree_height: rect.height,
  tree_words: tree ? Array.from(tree.querySelectorAll('text')).map(t => t.textContent).filter(t => t) : [],
  full_has_gold: !!(full && full.innerHTML.includes('gold')),
  overlay_width: loaded.length ? loaded[0].naturalWidth : 0,
  exceptions: document.querySelectorAll('[data-testid="stException"]').length,
  body: document.body.innerText.slice(0, 4000),
};
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the app did not answer on {url} within {timeout} s")


@pytest.fixture
def served_app(tmp_path):
    """``hiclip app`` on a free port with a tiny untrained checkpoint and 16 synthetic samples."""
    checkpoints = tmp_path / "checkpoints"
    demo_assets.tiny_checkpoint(checkpoints / "tiny")
    data = demo_assets.shapes_dataset(tmp_path / "shapes")
    port = _free_port()
    env = dict(os.environ, HICLIP_DATA=str(tmp_path / "no-real-data"), TMPDIR=str(tmp_path))
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "hiclip.cli", "app", "--checkpoints", str(checkpoints),
         "--data", str(data), "--port", str(port), "--host", "127.0.0.1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, timeout=90)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)     # hiclip and its streamlit child
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="headless browser test needs chromium and chromedriver on PATH "
                           "(apt-get install chromium chromium-driver; CI does this in .ci/run)")
def test_browser_renders_tree_svg_and_overlay(served_app, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                            TimeoutException)
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1500,1900", "--hide-scrollbars"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")      # never let selenium-manager go online
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    shot = tmp_path / "app.png"
    try:
        driver.get(served_app)
        wait = WebDriverWait(driver, 150, poll_frequency=0.5,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))

        def page_state(d) -> dict:
            """Everything checked, read in one script so no element goes stale in between."""
            return d.execute_script(PAGE_STATE_JS)

        def rendered(d) -> bool:
            state = page_state(d)
            return (state["svgs"] >= 2 and state["loaded_images"] >= 1 and not state["running"])

        try:
            wait.until(rendered)
            time.sleep(1.0)                          # let the last images paint
            wait.until(rendered)                     # and still complete (no rerun started)
        except TimeoutException:
            driver.save_screenshot(str(shot))
            log = (tmp_path / "app.log").read_text()[-3000:]
            raise AssertionError(f"page not rendered: {page_state(driver)}; screenshot {shot}"
                                 f"\n--- app log ---\n{log}") from None
        state = page_state(driver)
        assert state["tree_width"] > 100 and state["tree_height"] > 30, state
        assert len(state["tree_words"]) >= 3, state          # the caption's words are drawn
        assert state["full_has_gold"], state                 # induced vs gold pair
        assert state["overlay_width"] >= 128, state          # the overlay image is loaded
        assert "groups" in state["body"] and not state["exceptions"], state

        driver.save_screenshot(str(shot))
        pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
        assert pixels.shape[0] > 500 and pixels.std() > 10   # not a blank page
        keep = os.environ.get("HICLIP_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
    finally:
        driver.quit()
