"""The chat page of `vocollama serve` in a real browser (headless Chromium
through Selenium and chromedriver): upload an image through the file picker,
ask, wait for the streamed answer, ask again. Prints what the page showed as
one JSON object (the server's tests compare it); `--screenshot PNG` saves the
page as it looked at the end.

    python tools/browser_chat.py BASE_URL IMAGE QUESTION [QUESTION2] [--screenshot PNG]
"""

import argparse
import json
import os

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("image")
    p.add_argument("questions", nargs="+")
    p.add_argument("--screenshot")
    p.add_argument("--chromium", default=os.environ.get("VOCOLLAMA_CHROMIUM", "/usr/bin/chromium"))
    p.add_argument("--chromedriver", default=os.environ.get("VOCOLLAMA_CHROMEDRIVER", "/usr/bin/chromedriver"))
    a = p.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = a.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=900,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(a.chromedriver), options=options)
    try:
        wait = WebDriverWait(driver, 120)
        driver.get(a.base + "/")
        wait.until(lambda d: d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(os.path.abspath(a.image))
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-ready") == "1")
        out = {"model": driver.find_element(By.ID, "model").text, "status": driver.find_element(By.ID, "status").text}
        answers = []
        for i, q in enumerate(a.questions):
            box = driver.find_element(By.ID, "question")
            box.send_keys(q)
            driver.find_element(By.ID, "send").click()
            done = f".msg.assistant:nth-of-type({2 * i + 2})[data-done='1']"
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, done))
            el = driver.find_element(By.CSS_SELECTOR, done)
            text = driver.execute_script("return arguments[0].firstChild.data", el)
            meta = el.find_elements(By.CLASS_NAME, "meta")
            answers.append(
                {
                    "question": q,
                    "answer": text,
                    "error": "error" in el.get_attribute("class"),
                    "meta": meta[0].text if meta else "",
                    "from_store": bool(el.find_elements(By.CLASS_NAME, "badge")),
                }
            )
        out["answers"] = answers
        if a.screenshot:
            driver.save_screenshot(a.screenshot)
        print(json.dumps(out))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
