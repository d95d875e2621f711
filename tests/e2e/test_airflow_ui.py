"""The Airflow UI in a real browser: trigger form, runs, reuse, extra links, the build-record view.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by selenium against the
deployment of tests/e2e/deployment.py. Every step saves a screenshot in a directory printed at
the start (``$BUTIDO_UI_SCREENSHOTS`` to choose it), so that what the test asserts can be seen.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import unavailable
from tests.e2e.deployment import DAG_ID, PASSWORD, RUN_TIMEOUT, Deployment, wait_until

pytestmark = [pytest.mark.airflow, pytest.mark.docker, pytest.mark.postgres]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
UI_WAIT = 30
CONSUMER_DAG = "z_rebuilt"
CONSUMER = f'''
from airflow.sdk import DAG, task

from airflow_butido.assets import package_asset, release_asset

with DAG("{CONSUMER_DAG}", schedule=[package_asset("bookworm", "z", "26")],
         is_paused_upon_creation=False, catchup=False):
    @task
    def seen(triggering_asset_events=None):
        return [e.extra for events in triggering_asset_events.values() for e in events]

    seen()

with DAG("released", schedule=[release_asset("default")], is_paused_upon_creation=False,
         catchup=False):
    @task
    def noted(triggering_asset_events=None):
        return [e.extra for events in triggering_asset_events.values() for e in events]

    noted()
'''


@pytest.fixture(scope="module")
def extra_dag_files() -> dict[str, str]:
    """A DAG scheduled on the asset of package z 26, one on the release store's asset."""
    return {"consumers.py": CONSUMER}


class Browser:
    """A logged-in-able Chromium with a screenshot per step."""

    def __init__(self, driver: Any, base_url: str, shots: Path, downloads: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots
        self.downloads = downloads
        self.step = 0

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def shot(self, name: str) -> Path:
        self.step += 1
        path = self.shots / f"{self.step:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait_for(self, what: str, find: Callable[[], Any], timeout: float = UI_WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = find()
            except Exception:  # not rendered yet
                found = None
            if found:
                return found
            time.sleep(0.5)
        self.shot(f"timeout-{what.replace(' ', '-')}")
        pytest.fail(f"the page never showed {what} ({self.driver.current_url})")

    def xpath(self, expression: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.XPATH, expression)

    def css(self, selector: str, within: Any = None) -> list[Any]:
        from selenium.webdriver.common.by import By

        return (within or self.driver).find_elements(By.CSS_SELECTOR, selector)

    def text(self) -> str:
        return self.css("body")[0].text

    def login(self, user: str, password: str) -> None:
        self.open("/auth/login")
        self.wait_for("the login form", lambda: self.css("input[name=username]"))
        self.css("input[name=username]")[0].send_keys(user)
        self.css("input[name=password]")[0].send_keys(password)
        self.shot("login")
        self.xpath("//button[normalize-space()='Sign in']")[0].click()
        self.wait_for("the session cookie", lambda: self.driver.get_cookie("_token"))

    def type_into_editor(self, editor: Any, text: str) -> None:
        """Replace the text of a Monaco editor (the form's JSON fields) as a user types."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        ActionChains(self.driver).move_to_element(editor).click().perform()
        ActionChains(self.driver).key_down(Keys.CONTROL).send_keys("a").key_up(
            Keys.CONTROL
        ).send_keys(Keys.DELETE).perform()
        ActionChains(self.driver).send_keys(text).perform()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory, pytestconfig) -> Path:
    chosen = os.environ.get("BUTIDO_UI_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("ui-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"UI screenshots: {path}")
    print(f"UI screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser(deployment: Deployment, screenshots: Path, tmp_path_factory) -> Iterator[Browser]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable("chromium and chromium-driver are not installed (scripts/ensure-services)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (the dev extra)")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    downloads = tmp_path_factory.mktemp("downloads")
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield Browser(driver, deployment.url, screenshots, downloads)
    finally:
        driver.quit()


def _session_cookie(browser: Browser) -> dict[str, str]:
    return {"_token": browser.driver.get_cookie("_token")["value"]}


def test_anonymous_requests_to_the_build_record_are_refused(deployment: Deployment):
    job = uuid.uuid4()
    paths = ("/butido/", f"/butido/jobs/{job}", f"/butido/jobs/{job}/log")
    paths += (f"/butido/jobs/{job}/artifacts/z-26.pkg", "/butido/releases")
    for path in paths:
        anonymous = requests.get(deployment.url + path, timeout=30)
        assert anonymous.status_code == 401, (path, anonymous.text[:300])
        forged = requests.get(
            deployment.url + path, headers={"Authorization": "Bearer forged"}, timeout=30
        )
        assert forged.status_code in (401, 403), (path, forged.status_code)
    client = deployment.client()  # a logged-in user reads it
    token = client.session.headers["Authorization"]
    page = requests.get(deployment.url + "/butido/", headers={"Authorization": token}, timeout=30)
    assert page.status_code == 200 and "Submits" in page.text
    plugins = client._request("GET", "/api/v2/plugins")["plugins"]
    butido = next(p for p in plugins if p["name"] == "butido")
    assert butido["fastapi_apps"][0]["url_prefix"] == "/butido"
    assert butido["external_views"][0]["href"] == "/butido/"


def _open_trigger_form(browser: Browser) -> Any:
    browser.open(f"/dags/{DAG_ID}")
    button = browser.wait_for(
        "the Trigger button", lambda: browser.xpath("//button[normalize-space()='Trigger']")
    )
    button[0].click()
    return browser.wait_for(
        "the trigger form",
        lambda: [d for d in browser.css(".chakra-dialog__content") if "Packages" in d.text],
    )[0]


def _choose_package(browser: Browser, form: Any, label: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = browser.css("input[role=combobox], input.css-2ngcys", within=form)
    field = field or browser.xpath("//input[@name='element_packages']/preceding::input[1]")
    field[0].click()
    field[0].send_keys(label)
    browser.wait_for(
        f"the package {label} offered",
        lambda: [o for o in browser.css("[role=option]") if o.text.strip() == label],
    )
    field[0].send_keys(Keys.ENTER)


def test_the_trigger_form_offers_the_packages_and_refuses_a_disallowed_env_name(
    browser: Browser, deployment: Deployment
):
    browser.login("ci", PASSWORD)
    form = _open_trigger_form(browser)
    assert "Allowed names: FAIL_H, SLEEP_H." in form.text
    _choose_package(browser, form, "z 26")
    editor = browser.css(".view-lines", within=form)[0]
    browser.type_into_editor(editor, '{"NOPE": 1')  # the editor closes the brace itself
    browser.shot("form-with-a-disallowed-env-name")
    runs_before = len(
        deployment.client()._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    )
    browser.xpath(
        "//div[contains(@class,'chakra-dialog__content')]//button[normalize-space()='Trigger']"
    )[0].click()
    error = browser.wait_for(
        "the refusal",
        lambda: [
            e for e in browser.css(".chakra-dialog__content") if "'NOPE' is not one of" in e.text
        ],
    )
    browser.shot("form-refuses-NOPE")
    assert "FAIL_H" in error[0].text
    runs_after = len(
        deployment.client()._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    )
    assert runs_after == runs_before  # nothing started


def _successful_runs(client: Any, dag_id: str) -> list[str]:
    runs = client._request("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
    return [r["dag_run_id"] for r in runs if r["state"] == "success"]


def _wait_for_run(deployment: Deployment, run_id: str) -> dict[str, Any]:
    client = deployment.client()
    return wait_until(
        f"run {run_id} to end",
        lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
            client.dag_run(DAG_ID, run_id)
        ),
        RUN_TIMEOUT,
        deployment,
    )  # type: ignore[return-value]


def _trigger_from_the_form(browser: Browser, deployment: Deployment, label: str) -> str:
    form = _open_trigger_form(browser)
    _choose_package(browser, form, label)
    browser.shot(f"form-{label.replace(' ', '-')}")
    known = {
        r["dag_run_id"]
        for r in deployment.client()._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    }
    browser.xpath(
        "//div[contains(@class,'chakra-dialog__content')]//button[normalize-space()='Trigger']"
    )[0].click()

    def new_run() -> str | None:
        runs = deployment.client()._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
        fresh = [r["dag_run_id"] for r in runs if r["dag_run_id"] not in known]
        return fresh[0] if fresh else None

    return str(wait_until("the run triggered from the form", new_run, 60, deployment))


def test_a_run_from_the_form_succeeds_and_a_rerun_shows_the_reuse(
    browser: Browser, deployment: Deployment, workspace
):
    first = _trigger_from_the_form(browser, deployment, "z 26")
    assert _wait_for_run(deployment, first)["state"] == "success"
    browser.open(f"/dags/{DAG_ID}/runs/{first}")
    browser.wait_for("the run's tasks", lambda: "z 26" in browser.text())
    browser.shot("first-run-succeeded")
    client = deployment.client()
    built = client.xcom(DAG_ID, first, "z-26")
    assert built["outcome"] == "built"

    # the new artifacts updated z 26's asset: the DAG scheduled on it ran with the manifest
    consumer_runs = wait_until(
        f"a successful run of {CONSUMER_DAG}", lambda: _successful_runs(client, CONSUMER_DAG),
        RUN_TIMEOUT, deployment,
    )  # fmt: skip
    (seen,) = client.xcom(CONSUMER_DAG, consumer_runs[0], "seen")
    assert seen["job_uuid"] == built["job_uuid"] and seen["outcome"] == "built"
    assert seen["artifacts"][0]["path"] == "z-26.pkg" and len(seen["artifacts"][0]["sha256"]) == 64

    links = client._request(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{first}/taskInstances/z-26/links"
    )["extra_links"]
    assert links["Build record"].startswith(f"/butido/tasks/{DAG_ID}/")
    assert links["Artifacts"] == f"/butido/jobs/{built['job_uuid']}#artifacts"
    assert links["Reused from"] is None  # built, not reused

    # the same request again: the plan reuses z 26 up front, its task never starts
    second = _trigger_from_the_form(browser, deployment, "z 26")
    assert _wait_for_run(deployment, second)["state"] == "success"
    assert client.xcom(DAG_ID, second, "z-26") is None
    states = {t["task_id"]: t["state"] for t in client.task_instances(DAG_ID, second)}
    assert states["z-26"] == "skipped" and states["plan"] == "success"
    plan = client.xcom(DAG_ID, second, "plan")
    reused = plan["reused"]["z-26"]
    assert reused["outcome"] == "reused"
    assert reused["reused_from"]["job_uuid"] == built["job_uuid"]
    # a reuse is no rebuild: no new event on the asset, no new run of the scheduled DAG
    asset_id = client.asset_id("butido://bookworm/z/26")
    events = client._request("GET", "/api/v2/assets/events", params={"asset_id": asset_id})
    assert events["total_entries"] == 1, events
    time.sleep(10)
    assert len(_successful_runs(client, CONSUMER_DAG)) == 1

    # the plan's log says so, and its Build record link shows the submit: z 26 reused
    browser.open(f"/dags/{DAG_ID}/runs/{second}/tasks/plan")
    browser.wait_for("the reuse in the plan's log", lambda: "reused  z 26" in browser.text())
    browser.shot("plan-log-says-reused")
    browser.wait_for(
        "the Details tab", lambda: browser.xpath("//*[self::a or self::button][.='Details']")
    )[0].click()
    browser.wait_for("the plan's link", lambda: browser.xpath("//a[.='Build record']"))
    browser.shot("plan-extra-link")
    browser.xpath("//a[.='Build record']")[0].click()
    browser.wait_for("the submit page", lambda: browser.css("table#jobs"))
    assert f"/butido/submits/{plan['submit_uuid']}" in browser.driver.current_url
    row = browser.xpath("//table[@id='jobs']//tr[td[normalize-space()='z 26']]")[0]
    assert row.find_elements("css selector", ".state-reused")  # marked reused
    browser.shot("submit-marks-z-reused")
    row.find_elements("css selector", "a")[0].click()
    browser.wait_for("the job page", lambda: "/butido/jobs/" in browser.driver.current_url)
    assert "reused" in browser.css("#state")[0].text
    assert built["job_uuid"] in browser.text()  # reused from the job of the first run
    browser.shot("build-record-of-the-reused-job")
    manifest = {"reused_from": {"job_uuid": built["job_uuid"]}}

    # the job that built it: its log and the artifact, downloaded by the browser
    original = manifest["reused_from"]["job_uuid"]
    browser.open(f"/butido/jobs/{original}")
    browser.wait_for("the build log", lambda: browser.css("#log") and browser.css("#log")[0].text)
    assert "success" in browser.css("#state")[0].text
    assert "#BUTIDO:STATE:OK" in browser.css("#log")[0].text
    browser.driver.execute_script("arguments[0].scrollIntoView()", browser.css("#log")[0])
    browser.shot("build-record-with-log")
    browser.xpath("//table[@id='artifacts']//a[normalize-space()='z-26.pkg']")[0].click()
    downloaded = browser.downloads / "z-26.pkg"
    browser.wait_for(
        "the downloaded artifact", lambda: downloaded.is_file() and downloaded.read_text()
    )
    assert downloaded.read_text() == "26\n"
    browser.shot("artifact-downloaded")
    # the same download without the session is refused
    url = f"{deployment.url}/butido/jobs/{original}/artifacts/z-26.pkg"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, cookies=_session_cookie(browser), timeout=30).content == b"26\n"


def test_the_build_records_are_in_the_navigation(browser: Browser):
    browser.open("/")
    browser.wait_for("the Browse menu", lambda: browser.xpath("//button[.='Browse']"))[0].click()
    browser.wait_for(
        "the Build records entry", lambda: browser.xpath("//*[normalize-space()='Build records']")
    )[0].click()
    frame = browser.wait_for("the embedded view", lambda: browser.css("iframe"))[0]
    assert frame.get_attribute("src").endswith("/butido/")
    browser.driver.switch_to.frame(frame)
    browser.wait_for("the submits", lambda: browser.css("#submits"))
    browser.driver.switch_to.default_content()
    browser.shot("build-records-in-the-navigation")


def test_a_release_updates_the_release_store_asset(deployment: Deployment, workspace):
    import subprocess

    from tests.e2e.deployment import VENV_BIN

    client = deployment.client()
    built = next(
        run
        for run in _successful_runs(client, DAG_ID)
        if (client.xcom(DAG_ID, run, "z-26") or {}).get("outcome") == "built"
    )
    submit = client.xcom(DAG_ID, built, "plan")["submit_uuid"]
    env = {k: v for k, v in deployment.env.items() if not k.startswith("AIRFLOW__")}
    env |= {"BUTIDO_AIRFLOW_URL": deployment.url, "BUTIDO_AIRFLOW_USER": "ci",
            "BUTIDO_AIRFLOW_PASSWORD": PASSWORD}  # fmt: skip
    done = subprocess.run(
        [str(VENV_BIN / "butido"), "--repo", str(workspace["repo"]), "release", "new", submit,
         "--to", "default", "z", "26"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    runs = wait_until(
        "a successful run of the DAG scheduled on the release store",
        lambda: _successful_runs(client, "released"), RUN_TIMEOUT, deployment,
    )  # fmt: skip
    (noted,) = client.xcom("released", runs[0], "noted")
    assert noted["store"] == "default" and noted["submit_uuid"] == submit
    assert noted["released"][0]["package"] == "z" and noted["released"][0]["version"] == "26"
