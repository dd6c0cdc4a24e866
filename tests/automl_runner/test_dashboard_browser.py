"""The dashboard in a real browser: Debian's headless chromium, driven by selenium through
/usr/bin/chromedriver (selenium-manager never runs, nothing is downloaded), against a served
SQLite queue with real trials and a ledger. It reads what a person looks for, follows links,
watches a page update itself from the API without a reload, and saves screenshots.

Without chromium these tests skip locally, naming the apt packages; under CI (CI=true) they fail.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("EASEML_DASHBOARD_SHOTS", "")) if os.environ.get("EASEML_DASHBOARD_SHOTS") else None


def _need_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        why = (f"{', '.join(missing)} missing: apt-get install chromium chromium-driver "
               "(.ci/run installs them)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    _need_browser()
    import waitress
    from waitress.server import create_server

    from automl_runner.dashboard import create_app
    from test_dashboard_data import build_ledger, build_queue

    tmp = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{tmp / 'queue.db'}"
    facts = build_queue(url, tmp)
    facts.update(build_ledger(tmp))
    port = _free_port()
    server = create_server(create_app(url, config_path=facts["config"]), host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    facts.update(base=f"http://127.0.0.1:{port}", url=url, tmp=tmp)
    yield facts
    server.close()
    assert waitress  # the served app is waitress's, as in `easeml-automl dashboard`


@pytest.fixture(scope="module")
def browser(served, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _shot(driver, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def test_overview_shows_best_score_and_links_to_the_tenant(browser, served, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(served["base"] + "/")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="alpha"]')
    assert row.find_element(By.CSS_SELECTOR, "td.best").text == "0.8750"
    assert "knn-15 on cuda:0" in row.text
    browser.save_screenshot(str(tmp_path / "overview.png"))
    assert (tmp_path / "overview.png").stat().st_size > 1000
    _shot(browser, "overview")
    row.find_element(By.LINK_TEXT, "alpha").click()
    assert browser.current_url.endswith("/tenants/alpha")
    assert _text(browser, "#best-score") == "0.8750"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 3
    _shot(browser, "tenant")


def test_trial_page_shows_its_device_and_card_as_text(browser, served):
    from selenium.webdriver.common.by import By

    browser.get(served["base"] + "/tenants/alpha?sort=id")
    browser.find_element(By.LINK_TEXT, str(served["running_trial"])).click()
    assert _text(browser, "#trial-device") == "cuda:0"
    browser.get(f"{served['base']}/trials/{served['best_trial']}")
    card = _text(browser, "#model-card")
    assert "<script>document.title='pwned'</script>" in card  # shown, not run
    assert "pwned" not in browser.title
    assert browser.execute_script("return document.querySelectorAll('#model-card *').length") == 0


def test_hostile_schema_runs_no_script(browser, served):
    browser.get(served["base"] + "/tenants/beta")
    assert browser.execute_script("return document.querySelectorAll('main script, main img').length") == 0
    assert '<script>alert("col")</script>' in _text(browser, "#schema")


def test_testset_page_shows_steps_left(browser, served):
    from selenium.webdriver.common.by import By

    browser.get(served["base"] + "/testsets")
    assert _text(browser, "td.steps-left") == "5"
    bits = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "td.bits .bit")]
    assert bits == ["0", "1", "0"]
    browser.find_element(By.CSS_SELECTOR, "td a").click()
    assert _text(browser, "#steps-left") == "5"
    _shot(browser, "testset")


def test_page_updates_itself_without_a_reload(browser, served):
    from selenium.webdriver.support.ui import WebDriverWait

    from automl_runner.store import open_store

    browser.get(served["base"] + "/")
    browser.execute_script("window.__same_page = 1")
    # the running trial finishes with a new best while the page is open
    with open_store(served["url"]) as st:
        claim = st.try_claim("alpha", "random-forest-100", "w-cpu", "cpu")
        assert st.complete(claim, "w-cpu", 0.95, 2.0, None, None, ran_on="cpu")
    WebDriverWait(browser, 15).until(
        lambda d: d.find_element("css selector", 'tr[data-tenant="alpha"] td.best').text == "0.9500")
    assert browser.execute_script("return window.__same_page") == 1
    assert browser.find_element("id", "live").get_attribute("class") == "live ok"



def test_overview_and_tenant_page_show_the_schedulers_next_choice(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from automl_runner.store import NextChoice, open_store

    browser.get(served["base"] + "/")
    alpha = browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="alpha"] td.next')
    beta = browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="beta"] td.next')
    assert alpha.text == "random-forest-100: 5.00e-3 EI/s" and beta.text == "not scheduled yet"
    # a worker schedules for beta while the page is open: the poller writes the same text the
    # server would (app.next_choice_text and dashboard.js agree)
    with open_store(served["url"]) as st:
        st.record_next_choice(NextChoice("beta", "gaussian-nb", ei=0.000123, expected_seconds=0.5,
                                         scheduler="multitenant"), worker="w-cpu")
    WebDriverWait(browser, 15).until(
        lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-tenant="beta"] td.next').text == "gaussian-nb: 2.46e-4 EI/s")
    browser.get(served["base"] + "/tenants/beta")
    assert _text(browser, "#next-choice") == "gaussian-nb: 2.46e-4 EI/s"


def test_tenant_page_draws_learning_curves_of_stopped_and_full_trials(browser, served):
    from selenium.webdriver.common.by import By

    browser.get(served["base"] + "/tenants/alpha")
    chart = browser.find_element(By.CSS_SELECTOR, 'svg[data-chart="stopped"]')
    stopped = chart.find_elements(By.CSS_SELECTOR, "g.curve.stopped")
    full = chart.find_elements(By.CSS_SELECTOR, "g.curve.full")
    assert [g.get_attribute("data-trial") for g in stopped] == [str(served["stopped_trial"])]
    assert len(full) >= 2  # logreg-C1 and gaussian-nb (and random-forest-100 once the live test ran)
    assert len(stopped[0].find_elements(By.CSS_SELECTOR, "circle")) == 2  # its two rungs
    title = browser.execute_script("return arguments[0].querySelector('title').textContent", stopped[0])
    assert title == f"trial {served['stopped_trial']} decision-tree-d5 (stopped early): 6% 0.5500, 25% 0.7000"
    _shot(browser, "tenant-curves")


def test_a_dashboard_without_the_key_shows_no_label_request(browser, served):
    from selenium.webdriver.common.by import By

    browser.get(f"{served['base']}/testsets/{served['fingerprint']}")
    assert _text(browser, "#steps-left") == "5"
    assert browser.find_elements(By.ID, "pending-label-requests") == []


def test_the_owners_dashboard_shows_pending_label_requests_on_the_test_sets_page(browser, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from waitress.server import create_server

    from automl_runner.dashboard import create_app
    from test_dashboard_data import SINK_SECRET, build_owner, build_queue

    facts = build_owner(tmp_path)
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    build_queue(url, tmp_path)
    monkeypatch.setenv("OWNER_KEY", facts["key"])
    port = _free_port()
    server = create_server(create_app(url, config_path=facts["owner_config"], sink_key_env="OWNER_KEY"),
                           host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        browser.get(base + "/testsets")
        assert browser.find_elements(By.ID, "pending-label-requests") == []  # never on the overview
        browser.find_element(By.CSS_SELECTOR, "td a").click()
        rows = browser.find_elements(By.CSS_SELECTOR, "#pending-label-requests tbody tr")
        assert len(rows) == 1
        cells = [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")]
        assert cells[4] == "3" and cells[5] == "req-a7, req-a3, req-a5"
        body = browser.find_element(By.TAG_NAME, "body").text
        assert SINK_SECRET not in body and facts["sink"] not in body and "req-b9" not in body
        _shot(browser, "testset-owner")
    finally:
        server.close()
