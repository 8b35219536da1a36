"""Take the README's MLflow UI screenshot: a sweep's children with F1, HasAns/NoAns F1, size and latency.

    python run.py -m experiment=quickstart
    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db -p 5000 &
    pip install playwright && apt-get install chromium-headless-shell   # a browser without a display
    python docs/screenshot_mlflow_ui.py --url http://127.0.0.1:5000 --out docs/mlflow_ui.png

It does in a headless browser what the README tells a user to do: open the experiment in the
"Model training" view, choose the metric and tag columns, and expand the latest sweep's parent run.
"""

from __future__ import annotations

import argparse

from mlflow.tracking import MlflowClient
from playwright.sync_api import sync_playwright

COLUMNS = ("Dataset", "Source", "Models", "f1", "HasAns_f1", "NoAns_f1", "size_mb", "latency_ms")  # toggled
TAGS = ("pareto", "recommended")  # found through the column search: the list of tags is long


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--store", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--browser", default="/usr/bin/chromium-headless-shell")
    parser.add_argument("--out", default="docs/mlflow_ui.png")
    opts = parser.parse_args()
    experiment = MlflowClient(opts.store).get_experiment_by_name("qa-compress").experiment_id

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=opts.browser, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(f"{opts.url}/#/experiments/{experiment}/runs?workflowType=machine_learning")
        page.wait_for_timeout(5000)
        assistant = page.locator("button[aria-label='Close']:visible")  # the assistant panel's
        if assistant.count():
            assistant.last.click()
            page.wait_for_timeout(800)
        page.get_by_role("button", name="Columns").click()
        page.wait_for_timeout(800)
        for title in COLUMNS:
            page.locator(f".du-bois-light-tree-node-content-wrapper[title='{title}']").first.click()
            page.wait_for_timeout(300)
        search = page.get_by_placeholder("Search columns")
        for title in TAGS:
            search.fill(title)
            page.wait_for_timeout(500)
            page.locator(f".du-bois-light-tree-node-content-wrapper[title='{title}']").first.click()
            page.wait_for_timeout(300)
        page.keyboard.press("Escape")
        page.wait_for_timeout(800)
        parent = page.get_by_text("sweep | ", exact=False).first.bounding_box()
        page.mouse.click(parent["x"] - 30, parent["y"] + parent["height"] / 2)  # the row's expand button
        page.wait_for_timeout(2000)
        page.set_viewport_size({"width": 1500, "height": 560})
        page.wait_for_timeout(1000)
        page.screenshot(path=opts.out)
        browser.close()
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
