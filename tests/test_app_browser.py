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
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1500,1900", "--hide-scrollbars"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")      # never let selenium-manager go online
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(served_app)
        wait = WebDriverWait(driver, 150, poll_frequency=0.5)

        def rendered(d) -> bool:
            svgs = d.find_elements(By.CSS_SELECTOR, "div.hiclip-tree-layer svg, div.hiclip-tree-full svg")
            imgs = d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
            loaded = [i for i in imgs if d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", i)]
            running = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
            return len(svgs) >= 2 and len(loaded) >= 1 and not any(r.is_displayed() for r in running)

        wait.until(rendered)
        time.sleep(1.0)                              # let the last images paint
        tree_svg = driver.find_element(By.CSS_SELECTOR, "div.hiclip-tree-layer svg")
        assert tree_svg.size["width"] > 100 and tree_svg.size["height"] > 30
        words = [t.text for t in tree_svg.find_elements(By.TAG_NAME, "text")]
        assert len([w for w in words if w]) >= 3     # the caption's words are drawn
        full = driver.find_element(By.CSS_SELECTOR, "div.hiclip-tree-full svg")
        assert "gold" in full.get_attribute("innerHTML")
        overlay = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')[0]
        assert driver.execute_script("return arguments[0].naturalWidth", overlay) >= 128
        assert "groups" in driver.find_element(By.TAG_NAME, "body").text
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')

        shot = tmp_path / "app.png"
        driver.save_screenshot(str(shot))
        pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
        assert pixels.shape[0] > 500 and pixels.std() > 10   # not a blank page
        keep = os.environ.get("HICLIP_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
    finally:
        driver.quit()
