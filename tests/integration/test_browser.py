"""The MLflow and Prefect web UIs, driven in a real headless Chromium (Selenium).

One tiny retrain (`visiongate retrain` as a subprocess) reports to the session's real Prefect
server; an `mlflow server` on loopback then serves the project's store. The tests read the
ids and expected values through the servers' own APIs and check that the UIs show them: the
registered model's alias `champion`, the run's metrics with the values the client reports,
the flow run's state `Completed` and its gate-report artifact. Every page visited leaves a
screenshot and its visible text in the test's output folder (tmp_path/screenshots), also
when an assertion fails.

Chromium and chromedriver are the Debian packages (`bash tests/system-deps.sh` installs
them); without them the module is skipped, naming what is missing.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import TINY_PARAMS, make_project  # tests/integration/conftest.py

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]

pytestmark = [
    pytest.mark.integration, pytest.mark.server,
    pytest.mark.skipif(bool(MISSING), reason=f"browser not installed: {', '.join(MISSING)} "
                       "missing; `bash tests/system-deps.sh` (as root) installs it"),
]

VISIONGATE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "visiongate"
MODEL, REPORT_KEY = "shapes-detect", "gate-report-shapes-detect"
PARAMS = {**TINY_PARAMS, "segment": {**TINY_PARAMS["segment"], "enabled": False}}
UI_TIMEOUT = 60  # s: a loaded 2-core machine renders these SPAs slowly
# This machine has no outside network: without these Chromium keeps trying to phone home.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1400,1000"]


# ---- the scenario: one retrain, the servers, the browser (once for the module) -------------
@pytest.fixture(scope="module")
def retrained(prefect_server, tmp_path_factory) -> SimpleNamespace:
    """A tiny project retrained once, its flow run reported to the real Prefect server."""
    root = make_project(tmp_path_factory.mktemp("browser") / "project", PARAMS)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, which the UI then serves
    done = subprocess.run([str(VISIONGATE), "retrain", "--root", str(root)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"retrain failed ({done.returncode}):\n" \
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return SimpleNamespace(root=root, api=prefect_server)


@pytest.fixture(scope="module")
def mlflow_ui(retrained) -> str:
    """`mlflow server` (visiongate.stack, as `visiongate up`) on the project's store."""
    from visiongate import stack

    root = retrained.root
    server = stack.Server("mlflow", "127.0.0.1", stack.free_port())
    state = root.parent / "mlflow-server"
    stack.start(server, stack.command(server, state, f"sqlite:///{root}/mlruns/mlflow.db",
                                      root / "mlruns" / "artifacts"),
                state, stack.environment(state))
    yield server.url
    stack.stop(state, "mlflow")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through the Debian chromedriver; Selenium Manager stays offline."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = tmp_path_factory.mktemp("chromium")
    patch = pytest.MonkeyPatch()
    patch.setenv("SE_OFFLINE", "true")  # belt and braces: explicit paths need no manager
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={home / 'profile'}"]:
        options.add_argument(flag)
    service = Service(str(CHROMEDRIVER), log_output=str(home / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    yield driver
    driver.quit()
    patch.undo()


# ---- helpers ---------------------------------------------------------------------------------
def post_json(url: str, body: dict) -> list | dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def page_text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''")


def squash(text: str) -> str:
    """Whitespace as the comparison needs it: runs of spaces and nbsp become one space."""
    return re.sub(r"\s+", " ", text.replace("\xa0", " ")).strip()


@contextmanager
def captured(driver, tmp_path: Path, name: str):
    """Screenshot + visible text of the page as the block leaves it, passed or failed."""
    folder = tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    try:
        yield
    finally:
        driver.save_screenshot(str(png))
        (folder / f"{name}.txt").write_text(page_text(driver))
        print(f"screenshot: {png}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"


def wait_for(driver, what: str, condition, timeout: float = UI_TIMEOUT):
    """WebDriverWait on `condition(driver)` (truthy = done) that tolerates a page mid-render."""
    from selenium.common.exceptions import (JavascriptException, NoSuchElementException,
                                            StaleElementReferenceException)
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException, JavascriptException)
    return WebDriverWait(driver, timeout, poll_frequency=0.25, ignored_exceptions=ignored) \
        .until(condition, message=f"no {what} after {timeout} s")


def into_view(driver, element):
    """Scroll `element` to the middle of the window, so the screenshot shows it."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    return element


def js_number(value: float) -> str:
    """A float as JavaScript's Number#toString writes it (MLflow's run page uses that)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-6 <= abs(value) < 1e21:
        return np.format_float_positional(value, trim="-")  # shortest round-trip, like JS
    mantissa, exponent = repr(value).split("e")
    return f"{mantissa}e{int(exponent):+d}"


# ---- MLflow ----------------------------------------------------------------------------------
ALIAS_TAGS = '[data-component-id*="aliastag"][title]'
RUN_METRICS_JS = """
return Array.from(document.querySelectorAll('a[href$="/model-metrics"]'))
  .map(a => a.closest('[role="row"]')).filter(row => row)
  .map(row => Array.from(row.querySelectorAll('[role="cell"]'), c => c.textContent.trim()));
"""


def champion_version(mlflow_url: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    return client, client.get_model_version_by_alias(MODEL, "champion")


def test_registered_model_pages_show_the_champion_alias(mlflow_ui, browser, tmp_path):
    from selenium.webdriver.common.by import By

    _, champion = champion_version(mlflow_ui)
    assert "champion" in champion.aliases

    with captured(browser, tmp_path, "mlflow-registered-model"):
        browser.get(f"{mlflow_ui}/#/models/{MODEL}")
        row = wait_for(browser, f"row of version {champion.version}", lambda d: d.find_element(
            By.XPATH, f"//a[normalize-space(.)='Version {champion.version}']"
                      "/ancestor::*[@role='row'][1]"))
        into_view(browser, row)
        shown = wait_for(browser, "alias tags in the version's row", lambda d: {
            tag.get_attribute("title") for tag in row.find_elements(By.CSS_SELECTOR, ALIAS_TAGS)})
        assert shown == set(champion.aliases), squash(row.text)
        assert "@ champion" in squash(row.text)

    with captured(browser, tmp_path, "mlflow-model-version"):
        browser.get(f"{mlflow_ui}/#/models/{MODEL}/versions/{champion.version}")
        # same SPA, new hash route: wait for this page's own "Aliases" field, not old tags
        field = wait_for(browser, "Aliases field of the version page", lambda d: d.find_element(
            By.XPATH, "//*[@data-testid='descriptions-item'][*[@data-testid="
                      "'descriptions-item-label'][normalize-space(.)='Aliases']]"
                      "[.//*[contains(@data-component-id, 'aliastag')]]"))
        tags = field.find_elements(By.CSS_SELECTOR, ALIAS_TAGS)
        assert {t.get_attribute("title") for t in tags} == set(champion.aliases)
        assert "@ champion" in squash(field.text)


def test_run_page_shows_the_metrics_the_client_reports(mlflow_ui, browser, tmp_path):
    from selenium.webdriver.common.by import By

    client, champion = champion_version(mlflow_ui)
    run = client.get_run(champion.run_id)
    expected = {name: js_number(value) for name, value in run.data.metrics.items()}
    assert "test/map50" in expected and len(expected) > 10, sorted(expected)

    with captured(browser, tmp_path, "mlflow-run"):
        browser.get(f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
        rows = wait_for(browser, f"{len(expected)} metric rows", lambda d: (
            rows if len(rows := d.execute_script(RUN_METRICS_JS)) >= len(expected) else None))
        into_view(browser, browser.find_element(By.XPATH, "//a[normalize-space(.)='test/map50']"))
        shown = {cells[0]: cells[1] for cells in rows}
        assert shown["test/map50"] == expected["test/map50"]
        assert shown == expected  # every metric, each with the value the client reports
        assert run.info.run_name in page_text(browser)


# ---- Prefect ---------------------------------------------------------------------------------
def flow_run_of(retrained) -> dict:
    runs = post_json(f"{retrained.api}/flow_runs/filter",
                     {"flows": {"name": {"any_": ["retrain"]}}})
    mine = [r for r in runs if r["parameters"].get("root") == str(retrained.root)]
    assert len(mine) == 1, [(r["name"], r["parameters"]) for r in runs]
    return mine[0]


def open_flow_run(driver, api: str, flow_run: dict) -> None:
    """Load the flow run's page; fail plainly when the UI reads another API than `api`."""
    ui = api.removesuffix("/api")
    driver.get(f"{ui}/runs/flow-run/{flow_run['id']}")
    talks_to = get_json(f"{ui}/ui-settings")["api_url"]
    assert talks_to == api, (
        f"the Prefect UI at {ui} talks to {talks_to}, not to its own server {api}: "
        "visiongate/stack.py starts `prefect server start --port N` without "
        "PREFECT_UI_API_URL (or PREFECT_SERVER_API_HOST/PORT), so the UI falls back to "
        "127.0.0.1:4200")


def report_phrases(markdown: str) -> list[str]:
    """Text the rendered report must show: headline, verdict line, every gate check."""
    lines = markdown.splitlines()
    verdict = next(line for line in lines if line.startswith("**Verdict"))
    checks = [line[2:] for line in lines if line.startswith(("- ✅", "- ❌"))]
    assert checks, markdown
    return [squash(p.replace("`", "").replace("**", ""))
            for p in [lines[0].removeprefix("# "), verdict, *checks]]


def test_flow_run_page_shows_completed(retrained, browser, tmp_path):
    from selenium.webdriver.common.by import By

    flow_run = flow_run_of(retrained)
    assert flow_run["state_name"] == "Completed"

    with captured(browser, tmp_path, "prefect-flow-run"):
        open_flow_run(browser, retrained.api, flow_run)
        badge = wait_for(browser, "state badge of the flow run", lambda d: (
            b if (b := d.find_element(By.CSS_SELECTOR, ".page-heading-flow-run__meta "
                                                       ".state-badge")).text else None))
        assert badge.text == "Completed"
        assert flow_run["name"] in page_text(browser)


def test_gate_report_artifact_is_visible(retrained, browser, tmp_path):
    from selenium.webdriver.common.by import By

    flow_run = flow_run_of(retrained)
    (artifact,) = post_json(f"{retrained.api}/artifacts/filter", {"artifacts": {
        "key": {"any_": [REPORT_KEY]}, "flow_run_id": {"any_": [flow_run["id"]]}}})
    phrases = report_phrases(artifact["data"])
    assert MODEL in phrases[0]

    with captured(browser, tmp_path, "prefect-flow-run-artifacts"):
        open_flow_run(browser, retrained.api, flow_run)
        wait_for(browser, "Artifacts tab", lambda d: d.find_element(By.ID, "artifacts")).click()
        card = wait_for(browser, f"artifact card {REPORT_KEY}", lambda d: d.find_element(
            By.XPATH, f"//*[contains(@class, 'artifact-card__title')]"
                      f"[normalize-space(.)='{REPORT_KEY}']/ancestor::a[1]"))
        into_view(browser, card)
        assert card.get_attribute("href").endswith(f"/artifacts/artifact/{artifact['id']}")
        card.click()

    with captured(browser, tmp_path, "prefect-gate-report"):
        wait_for(browser, "rendered gate report", lambda d: phrases[0] in squash(page_text(d)))
        text = squash(page_text(browser))
        assert [p for p in phrases if p not in text] == []
        assert artifact["id"] in browser.current_url
