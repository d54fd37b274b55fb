"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium), served by `taskorch server` as the chart installs it, beside the real operator, a
worker, Redis and the API server. Screenshots go to test-artifacts/ (kept by CI)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import Cluster, Server, caller_token
from tests.e2e.processes import Proc
from tests.support import REPO

ARTIFACTS = REPO / "test-artifacts"
EVERYTHING = ("tasks", "workflows", "taskqueues", "schedules", "workerpools")
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "make system-packages installs chromium and chromium-driver"
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # The machine's network is closed: no background fetches, sync or component updates.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    b = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield b
    finally:
        b.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(browser: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))


def until(
    browser: WebDriver, what: str, probe: Callable[[WebDriver], T], timeout: float = 60.0
) -> T:
    """Wait for `probe` to return something truthy; the live sections are swapped in anew on
    every change, so an element found a moment ago may be gone: that counts as not yet."""
    wait = WebDriverWait(
        browser, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )
    return wait.until(probe, message=what)


def sign_in(browser: WebDriver, server: Server, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(server.url + "/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    until(browser, "signed in", lambda b: "/login" not in b.current_url)


def row_state(browser: WebDriver, name: str) -> str | None:
    rows = browser.find_elements(By.CSS_SELECTOR, f'#task-table tr[data-name="{name}"]')
    return rows[0].get_attribute("data-state") if rows else None


def apply(cluster: Cluster, namespace: str, manifest: dict[str, object]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), namespace=namespace)


@pytest.mark.usefixtures("operator")
def test_dashboard_live_tasks_dlq_requeue_and_workflow_graph(
    cluster: Cluster,
    namespace: str,
    server: Server,
    workers: Callable[..., Proc],
    redis_url: str,
    browser: WebDriver,
) -> None:
    token = caller_token(cluster, namespace, "dev", VERBS, EVERYTHING)
    workers()
    sign_in(browser, server, token)

    # A Task applied with kubectl shows up on the open page, live, and turns succeeded.
    browser.get(f"{server.url}/ns/{namespace}/tasks?queue=default")
    browser.execute_script("window.notReloaded = true")
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "square-7"},
            "spec": {"type": "square", "payload": {"value": 7}},
        },
    )
    until(browser, "the Task's row", lambda b: row_state(b, "square-7") is not None)
    until(browser, "the row turns succeeded", lambda b: row_state(b, "square-7") == "succeeded")
    assert browser.execute_script("return window.notReloaded") is True  # pushed, not reloaded
    shot(browser, "tasks")

    # A dead-lettered task is requeued from the DLQ page and then succeeds.
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "taskorch.io/v1alpha1",
            "kind": "Task",
            "metadata": {"name": "needs-flag"},
            "spec": {"type": "fail_until_flag", "retry": {"maxAttempts": 1}},
        },
    )
    browser.get(f"{server.url}/ns/{namespace}/dead?queue=default")
    until(browser, "the dead task in the DLQ", lambda b: row_state(b, "needs-flag") == "dead")
    shot(browser, "dead-letters")
    dead_row = '#task-table tr[data-name="needs-flag"]'
    task_id = until(
        browser,
        "its id",
        lambda b: b.find_element(By.CSS_SELECTOR, dead_row).get_attribute("data-id"),
    )
    redis.Redis.from_url(redis_url).set(f"flag:{task_id}", "1")
    until(
        browser,
        "a click on Requeue",
        lambda b: b.find_element(By.CSS_SELECTOR, f"{dead_row} button.requeue").click() or True,
    )
    until(
        browser,
        "the requeue's message",
        lambda b: "requeued" in b.find_element(By.ID, "flash").text,
    )
    until(browser, "the DLQ row leaves", lambda b: row_state(b, "needs-flag") is None)
    browser.get(f"{server.url}/ns/{namespace}/tasks/{task_id}?queue=default")
    until(
        browser,
        "the requeued task succeeds",
        lambda b: b.find_element(By.ID, "task-state").text == "succeeded",
    )
    assert '"revived"' in browser.find_element(By.ID, "result").text

    # A workflow's graph shows each step's phase, live.
    browser.get(f"{server.url}/ns/{namespace}/workflows")
    cluster.kubectl("apply", "-f", str(REPO / "examples" / "workflow.yaml"), namespace=namespace)
    until(
        browser,
        "the workflow in the list",
        lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-name="image-processing-pipeline"]'),
    )
    browser.get(f"{server.url}/ns/{namespace}/workflows/image-processing-pipeline")

    def phases(b: WebDriver) -> dict[str, str | None]:
        steps = b.find_elements(By.CSS_SELECTOR, "#dag g.step")
        return {s.get_attribute("data-step") or "": s.get_attribute("data-phase") for s in steps}

    until(
        browser,
        "every step Succeeded in the graph",
        lambda b: phases(b) == dict.fromkeys(("download", "resize", "upload"), "Succeeded"),
    )
    assert browser.find_element(By.ID, "workflow-phase").text == "Succeeded"
    edges = browser.find_elements(By.CSS_SELECTOR, "#dag path.edge")
    assert len(edges) == 2  # download → resize → upload
    shot(browser, "workflow")

    # The queue page's chart fills as work flows: a burst submitted over the HTTP API.
    browser.get(f"{server.url}/ns/{namespace}/queues")
    tasks = [{"type": "square", "payload": {"value": i}} for i in range(300)]
    status, _ = server.call(
        "POST", f"/api/v1/namespaces/{namespace}/tasks/batch", token, {"tasks": tasks}
    )
    assert status == 201

    def drawn_above_zero(b: WebDriver, row: str) -> bool:
        lines = b.find_elements(By.CSS_SELECTOR, f"{row} polyline.tput")
        return bool(lines) and any(
            float(p.split(",")[1]) < 27 for p in (lines[0].get_attribute("points") or "").split()
        )

    queue_row = '#queue-table tr[data-queue="default"]'
    until(browser, "the queue's throughput", lambda b: drawn_above_zero(b, queue_row))
    # per task type too, from the workers' own counts
    type_row = '#type-table tr[data-type="square"]'
    until(browser, "the square type's attempts", lambda b: drawn_above_zero(b, type_row))
    shot(browser, "queues")


def test_dashboard_shows_what_rbac_forbids_and_sends_strangers_to_login(
    cluster: Cluster, namespace: str, server: Server, browser: WebDriver
) -> None:
    browser.delete_all_cookies()
    browser.get(f"{server.url}/ns/{namespace}/queues")
    assert browser.current_url.endswith("/login")
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    browser.find_element(By.ID, "login").click()
    refusal = until(browser, "the refusal", lambda b: b.find_element(By.ID, "login-error").text)
    assert "does not accept this token" in refusal
    reader = caller_token(cluster, namespace, "reader", ["get", "list"], ("tasks",))
    sign_in(browser, server, reader)
    browser.get(f"{server.url}/ns/{namespace}/workflows")
    assert "may not list workflows.taskorch.io" in browser.find_element(By.ID, "error").text
