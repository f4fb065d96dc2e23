"""End to end in a real browser: start the app, upload a real garment photo in headless Chromium, see K colour
results.

Uses Debian's chromium + chromedriver (installed by scripts/setup.sh --dev); nothing is downloaded. Runs on the
real built-in shop catalogue (440 items, so the first-start build takes seconds) with its shipped fine-tuned model
and the real weights.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import tshirt_photo

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-output"
K = 10
COLOURFULNESS = """
const image = arguments[0], canvas = document.createElement("canvas");
canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
const context = canvas.getContext("2d"); context.drawImage(image, 0, 0);
const d = context.getImageData(0, 0, canvas.width, canvas.height).data;
let coloured = 0;
for (let i = 0; i < d.length; i += 4) coloured += Math.abs(d[i] - d[i + 1]) + Math.abs(d[i + 1] - d[i + 2]) > 40;
return coloured / (d.length / 4);
"""


def browser_paths() -> tuple[str, str]:
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None)
    if not (chromium and driver):
        reason = "no chromium/chromedriver on this machine (install Debian's chromium and chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test, but {reason}")
        pytest.skip(reason)
    return chromium, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(tmp_path):
    port = free_port()
    env = {**os.environ, "FVS_CATALOG": "luma-shop", "FVS_ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    log = (tmp_path / "streamlit.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"the app did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
    yield url
    process.terminate()
    process.wait(timeout=20)


def test_upload_a_photo_in_chromium_and_see_k_results(running_app, tmp_path):
    chromium, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1800"):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download a driver
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        t0 = time.time()
        browser.get(running_app)  # home first: the catalogue overview and the navigation a newcomer sees
        home = WebDriverWait(browser, 240, poll_frequency=0.5)
        home.until(lambda b: b.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebar']"))
        print(f"app shell after {time.time() - t0:.1f} s")
        home.until(lambda b: b.find_elements(By.CSS_SELECTOR, "[data-testid='stMetric']"))
        print(f"metrics after {time.time() - t0:.1f} s")
        home.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .bars"))  # chart drawn
        assert "Search by photo" in browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(str(SCREENSHOTS / "browser-home.png"))
        print(f"home ready after {time.time() - t0:.1f} s")
        browser.get(f"{running_app}/search")
        wait = WebDriverWait(browser, 240, poll_frequency=0.5)
        upload = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "input[type='file']"))[0]
        photo = ROOT.parent / "shared" / "photos" / "model-tshirt.jpg"  # a real photo of a person in a T-shirt
        if not photo.is_file():  # the project without its shared folder: a generated one
            photo = tmp_path / "navy-tshirt.jpg"
            tshirt_photo().save(photo, quality=90)
        print(f"search page ready after {time.time() - t0:.1f} s")
        upload.send_keys(str(photo))

        def rendered_results(b):
            images = b.find_elements(By.CSS_SELECTOR, ".st-key-results [data-testid='stImage'] img")
            loaded = [i for i in images if b.execute_script("return arguments[0].naturalWidth", i) > 0]
            return loaded if len(loaded) == K else False

        images = WebDriverWait(browser, 120, poll_frequency=0.5).until(rendered_results)
        print(f"results after {time.time() - t0:.1f} s")
        assert len(images) == K
        # colour photos in, colour photos out: results with clearly coloured pixels (a gray item has none at all)
        colourful = [browser.execute_script(COLOURFULNESS, image) for image in images]
        assert sum(share > 0.01 for share in colourful) >= 3, colourful
        page = browser.find_element(By.TAG_NAME, "body").text
        assert "Predicted category" in page and "As the catalogue sees it" in page
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
        browser.save_screenshot(str(SCREENSHOTS / "browser-search.png"))

        # The embedding map, in the same session: the query is drawn on it, and a dragged box selects items.
        next(a for a in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebarNav'] a")
             if "Embedding map" in a.text).click()
        WebDriverWait(browser, 240, poll_frequency=0.5).until(
            lambda b: "Silhouette of the map" in b.find_element(By.TAG_NAME, "body").text)
        print(f"map after {time.time() - t0:.1f} s")
        plot = WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".nsewdrag"))[0]
        assert "query: your photo" in browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot").text
        width, height = plot.size["width"], plot.size["height"]
        ActionChains(browser).move_to_element_with_offset(plot, -width // 3, -height // 3).click_and_hold() \
            .move_by_offset(width * 2 // 3, height * 2 // 3).release().perform()
        WebDriverWait(browser, 60, poll_frequency=0.5).until(
            lambda b: "selected items" in b.find_element(By.TAG_NAME, "body").text)
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
        browser.save_screenshot(str(SCREENSHOTS / "browser-map.png"))
    finally:
        browser.quit()
