"""The MLflow UI as the README tells a newcomer to open it, driven in a real (headless) browser."""

from __future__ import annotations

import re
import shutil
import sys

import pytest

from .conftest import ROOT, children, free_port, local_server, run_in_process, store_uri, tiny_job_args, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.beside_slurm]  # a sweep, a server and a browser; nothing timed

BROWSER = "/usr/bin/chromium-headless-shell"  # Debian's chromium-headless-shell (README: Tests)

# Each run name as the runs table shows it: the text up to where the cell cuts it off (with an ellipsis).
VISIBLE_TEXT = """element => {
    let clip = element.getBoundingClientRect().right;
    for (let node = element; node; node = node.parentElement) {
        if (getComputedStyle(node).overflowX !== "visible") {
            clip = Math.min(clip, node.getBoundingClientRect().right);
        }
    }
    const text = element.textContent, range = document.createRange(), walker = document.createTreeWalker(element, 4);
    let shown = "";
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            if (range.getBoundingClientRect().right > clip - 10) return shown;  // 10 px: room for the ellipsis
            shown += node.data[i];
        }
    }
    return shown || text;
}"""


def _readme_ui_steps() -> tuple[str, str]:
    """The README's `mlflow ui` command and the view it says to click."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^\s*(mlflow ui --backend-store-uri \S+)\s*$", readme, re.M)
    view = re.search(r"click \*\*(.+?)\*\* at the top of the sidebar", readme)
    assert command and view, "the README no longer says how to open the MLflow UI"
    return command.group(1), view.group(1)


def test_the_readmes_way_into_the_mlflow_ui_shows_runs_a_user_can_tell_apart(
    tmp_path, tiny_distilbert_dir, squad_files
):
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which(BROWSER):
        unavailable("browser", FileNotFoundError(f"{BROWSER} is missing (apt-get install chromium-headless-shell)"))
    grid = ("pruning=l1_unstructured", "pruning.amount=0.0,0.3", "quantization=none,dynamic_int8")
    args = ["-m", *tiny_job_args(tiny_distilbert_dir, squad_files, *grid, "benchmark.enabled=false", fine_tune=False)]
    assert run_in_process(args, tmp_path).returncode == 0
    names = sorted(run.info.run_name for run in children(tmp_path))
    assert len(names) == 4

    command, view = _readme_ui_steps()
    port = free_port()
    ui = [sys.executable, "-m", *command.split()[:-1], store_uri(tmp_path), "-h", "127.0.0.1", "-p", str(port)]
    with local_server(ui, f"http://127.0.0.1:{port}/health", tmp_path / "ui.log"), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_text(view, exact=True).first.click()
        page.get_by_role("link", name="qa-compress").first.click()
        page.wait_for_url(re.compile(r"/experiments/\d+/runs\?.*workflowType=machine_learning"))
        parent = page.get_by_text("sweep | ", exact=False).first
        box = parent.bounding_box()
        page.mouse.click(box["x"] - 30, box["y"] + box["height"] / 2)  # the row's expand button (⊞)
        page.get_by_role("link", name=names[0], exact=True).wait_for()
        shown = {name: page.get_by_role("link", name=name, exact=True).evaluate(VISIBLE_TEXT) for name in names}
        browser.close()
    assert all(name.startswith(text) for name, text in shown.items()), shown
    assert len(set(shown.values())) == len(names), shown  # as the table cuts them, no two look alike
