"""The page at / in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): choose a
generated image, read the predicted label off the page, and compare it with `vitkit predict` (skips without them)."""

from __future__ import annotations

import json
import shutil

import pytest

from serve_helpers import CLASSES, image_bytes, running_server, tiny_checkpoint
from vitkit.cli.main import main
from vitkit.serve import Engine, create_app

BROWSER = next((found for found in map(shutil.which, ("chromium", "chromium-browser")) if found), None)
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-test.txt)")
pytestmark = pytest.mark.skipif(
    BROWSER is None or DRIVER is None,
    reason="no chromium + chromedriver on PATH (Debian: apt-get install -y chromium chromium-driver)",
)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_shows_the_label_vitkit_predict_gives(browser, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    picture = tmp_path / "picture.png"
    picture.write_bytes(image_bytes(11, (60, 44)))
    assert main(["predict", str(checkpoint), str(picture), "--json", "--top-k", "4", "--device", "cpu"]) == 0
    expected = json.loads(capsys.readouterr().out)["predictions"][0]["top_k"]

    with running_server(create_app(Engine.load(checkpoint))) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda driver: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert "cat, dog, bird, fish" in browser.find_element(By.ID, "card").text
        browser.find_element(By.ID, "file").send_keys(str(picture))
        wait.until(lambda driver: driver.find_element(By.TAG_NAME, "body").get_attribute("data-done"))
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-done") == "1", browser.find_element(
            By.ID, "error"
        ).text
        label = browser.find_element(By.ID, "top-label").text
        bars = browser.find_elements(By.CSS_SELECTOR, "#bar-list .bar .name")
        overlay_width = browser.execute_script("return document.getElementById('overlay').naturalWidth")
    assert label == expected[0]["label"] and label in CLASSES
    assert [bar.text for bar in bars] == [entry["label"] for entry in expected]
    assert overlay_width == 32  # the rollout overlay was drawn
