"""The dashboard in a real browser (Playwright driving Debian's chromium) on the whole stack: sign in, upload, watch a
run go live to its verdict without a reload, see its charts and findings, sign out; what another org sees; hostile
file names; many live pages at once (issue 14)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, Route, expect

from deploy.provision import seed_demo_access
from deploy.stack import LocalStack
from schemas.enums import Role
from tests.support import (
    EXAMPLES,
    ISSUED_SECRETS,
    ROOT,
    Api,
    api_run_running,
    new_key,
    new_org,
    new_user,
    put_workflow,
    slow_fmu_workflow,
    stack_accounts,
    wait_until,
    web_session,
)

pytestmark = pytest.mark.e2e

SCREENSHOT = ROOT / "docs" / "run-page.png"
HOSTILE_NAME = "<img src=x onerror=alert(1)>.json"
# Records each status the live part of a run page shows, and marks the document: a reload would lose both.
WATCH_STATUSES = """() => {
  window.__seen = [document.querySelector('#live [data-status]').dataset.status];
  window.__same_document = true;
  new MutationObserver(() => {
    const shown = document.querySelector('#live [data-status]');
    if (shown && window.__seen[window.__seen.length - 1] !== shown.dataset.status) {
      window.__seen.push(shown.dataset.status);
    }
  }).observe(document.getElementById('live'), {childList: true, subtree: true});
}"""


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    opened = browser.new_context(viewport={"width": 1280, "height": 900})
    yield opened
    opened.close()


def sign_in(page: Page, stack: LocalStack, email: str, password: str) -> None:
    page.goto(f"{stack.web_url}/signin")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("form.signin button[type=submit]")
    page.wait_for_url(f"{stack.web_url}/orgs/**")


def upload(page: Page, stack: LocalStack, org: str, workflow: str, file: Path | dict[str, object]) -> str:
    """Upload through the form; the run page's path once the browser lands on it."""
    page.goto(f"{stack.web_url}/orgs/{org}/upload")
    page.select_option("select[name=workflow]", workflow)
    page.set_input_files("input[name=file]", file)  # type: ignore[arg-type]
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(f"{stack.web_url}/orgs/{org}/runs/*")
    return page.url.removeprefix(stack.web_url)


def watch_live(page: Page) -> None:
    page.evaluate(WATCH_STATUSES)


def live_status(page: Page) -> str:
    return page.locator("#live [data-status]").get_attribute("data-status") or ""


def test_demo_admin_uploads_watches_the_run_live_sees_charts_and_findings_and_signs_out(
    full_stack: LocalStack, context: BrowserContext, fmus: dict[str, Path]
) -> None:
    access = seed_demo_access(stack_accounts(full_stack))
    ISSUED_SECRETS.extend([access.password, access.key])
    page = context.new_page()
    sign_in(page, full_stack, access.email, access.password)

    run_path = upload(page, full_stack, "demo", "energyplus-basic", EXAMPLES / "small-office.idf")
    watch_live(page)
    expect(page.locator("#live [data-status]")).to_have_attribute("data-status", "SUCCEEDED", timeout=120_000)

    seen = page.evaluate("window.__seen")
    assert page.evaluate("window.__same_document") is True  # no reload happened
    assert "RUNNING" in seen, seen
    assert seen[-1] == "SUCCEEDED"
    assert page.url.endswith(run_path)
    electricity = page.locator("figure.chart", has_text="Monthly electricity end uses")
    expect(electricity.locator("svg title").first).to_have_text("Monthly electricity end uses")
    for series in ("Interior Lighting", "Interior Equipment"):
        assert electricity.locator(f"svg rect.bar[data-series='{series}']").count() == 12
        expect(electricity.locator(f"li.series[data-series='{series}']")).to_be_visible()
    expect(electricity.locator("svg text.y-label")).to_have_text("Electricity (kWh)")
    assert "Over the year: Interior Equipment" in (electricity.locator("svg desc").text_content() or "")
    expect(page.locator("figure.chart", has_text="Monthly natural gas end uses")).to_be_visible()
    expect(page.get_by_text("Ground Temperatures").first).to_be_visible()  # the WARNING finding
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    upload(page, full_stack, "demo", "fmu-basic", fmus["RoomHeater"])
    watch_live(page)
    expect(page.locator("#live [data-status]")).to_have_attribute("data-status", "SUCCEEDED", timeout=120_000)
    assert page.evaluate("window.__same_document") is True
    lines = page.locator("figure.chart", has_text="Output variables over time")
    expect(lines.locator("svg polyline.line[data-series='room_temperature']")).to_have_count(1)
    expect(lines.locator("svg text.x-label")).to_have_text("Simulation time (s)")
    assert "room_temperature goes from" in (lines.locator("svg desc").text_content() or "")

    page.click("form.signout button")
    page.wait_for_url(f"{full_stack.web_url}/signin")
    page.goto(f"{full_stack.web_url}{run_path}")
    assert page.url.startswith(f"{full_stack.web_url}/signin")


def test_another_orgs_user_sees_none_of_demos_runs_workflows_or_artifacts(
    full_stack: LocalStack, context: BrowserContext
) -> None:
    key = new_key(full_stack, "demo", Role.EXECUTOR)
    api = Api(full_stack, key)
    accepted = api.post(
        "/orgs/demo/workflows/energyplus-basic/runs",
        files={"file": ("office.idf", (EXAMPLES / "small-office.idf").read_bytes())},
    )
    run_id = accepted.json()["run_id"]
    run = api.wait_for_verdict("demo", run_id)
    artifact = run["steps"][0]["artifacts"][0]["name"]
    outsider = new_org(full_stack, "outsider")
    page = context.new_page()
    sign_in(page, full_stack, *new_user(full_stack, outsider, Role.ADMIN))

    for path in (
        f"/orgs/demo/runs/{run_id}",
        f"/orgs/{outsider}/runs/{run_id}",
        f"/orgs/demo/runs/{run_id}/steps/1/artifacts/{artifact}",
        f"/orgs/{outsider}/runs/{run_id}/steps/1/artifacts/{artifact}",
        f"/orgs/demo/runs/{run_id}/live",
        f"/orgs/demo/runs/{run_id}/events",
        "/orgs/demo/runs",
        "/orgs/demo/workflows",
        "/orgs/demo/workflows/energyplus-basic",
        f"/orgs/{outsider}/workflows/energyplus-basic",
        "/orgs/demo/upload",
    ):
        response = page.goto(f"{full_stack.web_url}{path}")
        assert response is not None
        assert response.status == 404, path
    page.goto(f"{full_stack.web_url}/orgs/{outsider}/runs")
    assert run_id not in page.content()


def test_a_hostile_file_name_shows_as_text_on_every_page(full_stack: LocalStack, context: BrowserContext) -> None:
    page = context.new_page()
    dialogs: list[str] = []

    def dismissed(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismissed)
    sign_in(page, full_stack, *new_user(full_stack, "demo", Role.EXECUTOR))
    document = {
        "name": HOSTILE_NAME,
        "mimeType": "application/json",
        "buffer": (EXAMPLES / "building-invalid.json").read_bytes(),
    }
    run_path = upload(page, full_stack, "demo", "json-basic", document)
    expect(page.locator("#live [data-status]")).to_have_attribute("data-status", "FAILED", timeout=60_000)

    for path in (run_path, "/orgs/demo/runs", "/orgs/demo/runs?workflow=json-basic", "/orgs/demo/workflows/json-basic"):
        page.goto(f"{full_stack.web_url}{path}")
        expect(page.get_by_text(HOSTILE_NAME).first).to_be_visible()
        assert page.locator("main img").count() == 0, path
    assert dialogs == []


def test_ten_live_pages_each_get_their_update_and_release_their_watches(
    full_stack: LocalStack, browser: Browser, fmus: dict[str, Path]
) -> None:
    org = new_org(full_stack, "live")
    api = Api(full_stack, new_key(full_stack, org, Role.AUTHOR))
    assert put_workflow(api, org, "slow-fmu", slow_fmu_workflow(org)).status_code == 200
    slow = fmus["SlowRoom"].read_bytes()
    run_ids = [
        api.post(f"/orgs/{org}/workflows/slow-fmu/runs", files={"file": (f"slow-{n}.fmu", slow)}).json()["run_id"]
        for n in range(10)
    ]
    api_run_running(api, org, run_ids[0])
    email, password = new_user(full_stack, org, Role.VIEWER)
    # Ten people, each in a browser of their own: one browser opens at most six connections to a host over
    # HTTP/1.1, and every live page holds one (README: the dashboard).
    contexts = [browser.new_context() for _ in range(10)]
    pages = [c.new_page() for c in contexts]
    for page, run_id in zip(pages, run_ids, strict=True):
        sign_in(page, full_stack, email, password)
        page.goto(f"{full_stack.web_url}/orgs/{org}/runs/{run_id}")
        assert live_status(page) in ("PENDING", "RUNNING")
        watch_live(page)

    def live_pages() -> int:
        return int(requests.get(f"{full_stack.web_url}/healthz/live", timeout=10).json()["live_pages"])

    wait_until(lambda: live_pages() == 10, 30, "ten live pages")
    # The web and the functions keep serving while ten streams are open.
    quick = Api(full_stack, new_key(full_stack, "demo", Role.EXECUTOR))
    submitted = quick.post(
        "/orgs/demo/workflows/json-basic/runs",
        files={"file": ("ok.json", (EXAMPLES / "building-valid.json").read_bytes())},
    )
    assert quick.wait_for_verdict("demo", submitted.json()["run_id"], timeout=60)["status"] == "SUCCEEDED"

    for run_id in run_ids:
        assert api.post(f"/orgs/{org}/runs/{run_id}/cancel").status_code == 200
    for page in pages:
        expect(page.locator("#live [data-status]")).to_have_attribute("data-status", "CANCELED", timeout=30_000)
        assert page.evaluate("window.__same_document") is True
    # A stream ends with its run: nothing is watched once every run has ended.
    wait_until(lambda: live_pages() == 0, 30, "the watches of ended runs released")

    # Pages closed while their run goes on release their watches too (noticed at the next keep-alive).
    still_running = api.post(f"/orgs/{org}/workflows/slow-fmu/runs", files={"file": ("slow.fmu", slow)}).json()
    wait_until(lambda: api.get(f"/orgs/{org}/runs/{still_running['run_id']}").status_code == 200, 30, "the run")
    for page in pages:
        page.goto(f"{full_stack.web_url}/orgs/{org}/runs/{still_running['run_id']}")
    wait_until(lambda: live_pages() == 10, 30, "ten live pages on one run")
    for opened in contexts:
        opened.close()
    wait_until(lambda: live_pages() == 0, 30, "every closed page's watch released")
    # A stream whose body is never read (a HEAD request) holds no watch either.
    viewer = web_session(full_stack, email, password)
    events = f"{full_stack.web_url}/orgs/{org}/runs/{still_running['run_id']}/events"
    assert [viewer.head(events, timeout=10).status_code for _ in range(3)] == [200] * 3
    assert json.loads(requests.get(f"{full_stack.web_url}/healthz/live", timeout=10).text) == {"live_pages": 0}
    assert api.post(f"/orgs/{org}/runs/{still_running['run_id']}/cancel").status_code == 200


def test_a_page_whose_stream_drops_polls_and_still_gets_its_update(
    full_stack: LocalStack, context: BrowserContext, fmus: dict[str, Path]
) -> None:
    org = new_org(full_stack, "poll")
    api = Api(full_stack, new_key(full_stack, org, Role.AUTHOR))
    assert put_workflow(api, org, "slow-fmu", slow_fmu_workflow(org)).status_code == 200
    slow = fmus["SlowRoom"].read_bytes()
    run_id = api.post(f"/orgs/{org}/workflows/slow-fmu/runs", files={"file": ("slow.fmu", slow)}).json()["run_id"]
    wait_until(lambda: api.get(f"/orgs/{org}/runs/{run_id}").status_code == 200, 30, "the run")
    page = context.new_page()
    sign_in(page, full_stack, *new_user(full_stack, org, Role.VIEWER))
    streams: list[str] = []

    def dropped(route: Route) -> None:
        streams.append(route.request.url)
        route.abort()

    page.route("**/events", dropped)
    page.goto(f"{full_stack.web_url}/orgs/{org}/runs/{run_id}")
    watch_live(page)

    assert api.post(f"/orgs/{org}/runs/{run_id}/cancel").status_code == 200

    expect(page.locator("#live [data-status]")).to_have_attribute("data-status", "CANCELED", timeout=30_000)
    assert page.evaluate("window.__same_document") is True
    assert streams  # the page tried to listen, and its update came by polling
