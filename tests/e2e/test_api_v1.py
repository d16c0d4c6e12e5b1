"""REST API v1 (DESIGN §14) on the whole local stack: every operation of its OpenAPI document, as a program calls it.

The tests work in an org of their own, whose workflows they apply through the API itself, so that listings, filters
and pages hold exactly the runs this module made.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_spec_validator import validate

from deploy.stack import LocalStack
from schemas.enums import Role
from tests.support import (
    EXAMPLES,
    INVALID,
    INVALID_MESSAGES,
    VALID,
    XML_RESOURCES,
    Api,
    api_run_running,
    api_submit,
    new_key,
    new_org,
    put_workflow,
    slow_fmu_workflow,
    workflow_text,
)

pytestmark = pytest.mark.e2e

# Every operation the tests below exercise. The document must list exactly these: a new operation fails
# test_the_document_is_openapi_3_1_and_every_operation_in_it_is_tested until it has a test and a line here.
TESTED_OPERATIONS = {
    ("get", "/api/v1/whoami"),
    ("post", "/api/v1/orgs/{org}/workflows/{slug}/runs"),
    ("get", "/api/v1/orgs/{org}/runs"),
    ("get", "/api/v1/orgs/{org}/runs/{run_id}"),
    ("get", "/api/v1/orgs/{org}/runs/{run_id}/findings"),
    ("get", "/api/v1/orgs/{org}/runs/{run_id}/artifacts/{step}/{name}"),
    ("post", "/api/v1/orgs/{org}/runs/{run_id}/cancel"),
    ("post", "/api/v1/orgs/{org}/runs/{run_id}/rerun"),
    ("get", "/api/v1/orgs/{org}/workflows"),
    ("get", "/api/v1/orgs/{org}/workflows/{slug}"),
    ("put", "/api/v1/orgs/{org}/workflows/{slug}"),
}
PROBLEM_JSON = "application/problem+json"
RUN_ID = re.compile(r"[0-9a-f]{24}")


@dataclass(frozen=True)
class Org:
    """The module's org and a key of each role in it."""

    slug: str
    viewer: Api
    executor: Api
    author: Api

    def runs(self, **query: Any) -> requests.Response:
        return self.viewer.get(f"/orgs/{self.slug}/runs", params=query)


@dataclass(frozen=True)
class Runs:
    """The runs the module made for listing: run id → (workflow, status), newest last."""

    made: dict[str, tuple[str, str]]

    def ids(self, *, workflow: str | None = None, status: str | None = None) -> list[str]:
        """Newest first, as the API lists them."""
        chosen = [i for i, (w, s) in self.made.items() if workflow in (None, w) and status in (None, s)]
        return chosen[::-1]


def problem(response: requests.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 body of an error response, checked for its shape."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == PROBLEM_JSON
    body = response.json()
    assert (body["status"], body["type"]) == (status, "about:blank")
    assert body["title"]
    assert body["instance"] == response.request.path_url.split("?")[0]
    return body


def accepted(response: requests.Response) -> str:
    """The run id of a 202, checked against its Location and href."""
    assert response.status_code == 202, response.text
    body = response.json()
    assert RUN_ID.fullmatch(body["run_id"])
    assert body["status"] == "ACCEPTED"
    assert response.headers["Location"] == body["href"] == f"{runs_path_of(response)}{body['run_id']}"
    return body["run_id"]


def runs_path_of(response: requests.Response) -> str:
    """/api/v1/orgs/{org}/runs/ of the request's org."""
    org = response.request.path_url.split("/")[4]
    return f"/api/v1/orgs/{org}/runs/"


def all_pages(api: Api, path: str, **query: Any) -> tuple[list[dict[str, Any]], int]:
    """Every item of a paged listing, following next_cursor, and how many pages it took."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for pages in range(1, 100):
        page = api.get(path, params={**query, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items, pages
    raise AssertionError("the listing never ended")


@pytest.fixture(scope="module")
def org(full_stack: LocalStack) -> Org:
    slug = new_org(full_stack, "api")
    found = Org(
        slug=slug,
        viewer=Api(full_stack, new_key(full_stack, slug, Role.VIEWER)),
        executor=Api(full_stack, new_key(full_stack, slug, Role.EXECUTOR)),
        author=Api(full_stack, new_key(full_stack, slug, Role.AUTHOR)),
    )
    for workflow in ("json-basic", "json-second"):
        applied = put_workflow(found.author, slug, workflow, workflow_text("json-basic", slug, workflow))
        assert applied.status_code == 200, applied.text
    return found


@pytest.fixture(scope="module")
def runs(org: Org) -> Runs:
    """Six runs over two workflows, three of them FAILED, each with its verdict."""
    made: dict[str, tuple[str, str]] = {}
    for n, (workflow, data) in enumerate([("json-basic", VALID), ("json-basic", INVALID), ("json-second", VALID)] * 2):
        run_id = accepted(api_submit(org.executor, org.slug, workflow, data, f"listed-{n}.json"))
        made[run_id] = (workflow, org.executor.wait_for_verdict(org.slug, run_id)["status"])
    assert sorted(status for _, status in made.values()) == ["FAILED"] * 2 + ["SUCCEEDED"] * 4
    return Runs(made)


@pytest.fixture(scope="module")
def failed_run(org: Org, runs: Runs) -> str:
    """A json-basic run with INVALID's four findings."""
    return runs.ids(workflow="json-basic", status="FAILED")[0]


# -- the document ------------------------------------------------------------------------------------------------


def test_the_document_is_openapi_3_1_and_every_operation_in_it_is_tested(full_stack: LocalStack) -> None:
    # Public, like any API's description: no key is needed to read it.
    response = requests.get(f"{full_stack.web_url}/api/v1/openapi.json", timeout=10)

    assert response.status_code == 200
    doc = response.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    operations = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert operations == TESTED_OPERATIONS
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"api_key": []}], (method, path)
            # Errors are documented as what they are sent as.
            for status in ("401", "404", "429"):
                assert list(operation["responses"][status]["content"]) == [PROBLEM_JSON], (method, path, status)
    assert doc["components"]["securitySchemes"]["api_key"]["scheme"] == "bearer"


# -- who am I ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
def test_whoami_names_the_keys_org_role_and_id(full_stack: LocalStack, org: Org, role: Role) -> None:
    key = new_key(full_stack, org.slug, role)

    found = Api(full_stack, key).get("/whoami")

    assert found.status_code == 200, found.text
    assert found.headers["Content-Type"] == "application/json"
    assert found.json() == {
        "org": org.slug,
        "role": role.value,
        "key_id": hashlib.sha256(key.encode()).hexdigest()[:12],
        "name": f"test {role.value}",
    }


# -- submitting --------------------------------------------------------------------------------------------------


def test_a_submission_is_accepted_with_its_location_and_its_run_reaches_a_verdict(org: Org) -> None:
    run_id = accepted(api_submit(org.executor, org.slug, "json-basic", INVALID, "submitted.json"))

    verdict = org.viewer.wait_for_verdict(org.slug, run_id)

    assert (verdict["run_id"], verdict["org"], verdict["workflow"]) == (run_id, org.slug, "json-basic")
    assert (verdict["status"], verdict["error_category"], verdict["counts"]["ERROR"]) == (
        "FAILED",
        "VALIDATION_FAILED",
        4,
    )
    assert verdict["submission_name"] == "submitted.json"


def test_the_same_idempotency_key_and_body_give_the_same_run_and_another_body_is_refused(org: Org) -> None:
    first = api_submit(org.executor, org.slug, "json-basic", VALID, "idempotent.json", "order-4711")
    again = api_submit(org.executor, org.slug, "json-basic", VALID, "idempotent.json", "order-4711")
    other_body = api_submit(org.executor, org.slug, "json-basic", INVALID, "idempotent.json", "order-4711")

    run_id = accepted(first)
    assert accepted(again) == run_id
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "used with another request body" in problem(other_body, 422)["detail"]
    assert org.viewer.wait_for_verdict(org.slug, run_id)["status"] == "SUCCEEDED"
    listed = org.runs(limit=200).json()["items"]
    assert [r["run_id"] for r in listed if r["submission_name"] == "idempotent.json"] == [run_id]


def test_submissions_without_a_file_to_an_unknown_workflow_or_under_an_unsafe_name_are_refused(org: Org) -> None:
    missing = org.executor.post(f"/orgs/{org.slug}/workflows/json-basic/runs", data={"note": "no file"})
    unknown = api_submit(org.executor, org.slug, "no-such-workflow", VALID, "building.json")
    unsafe = api_submit(org.executor, org.slug, "json-basic", VALID, "building\u202enosj.exe")

    assert problem(missing, 422)["errors"] == [{"loc": ["file"], "msg": "Field required", "type": "missing"}]
    assert problem(unknown, 404)["detail"] == "There is no such resource, or it is not yours to see."
    assert "bidirectional override" in problem(unsafe, 422)["detail"]


def test_a_file_over_the_workflows_limit_is_413(org: Org) -> None:
    tiny = workflow_text("json-basic", org.slug, "json-tiny") + "limits:\n  max_submission_bytes: 100\n"
    assert put_workflow(org.author, org.slug, "json-tiny", tiny).status_code == 200

    refused = api_submit(org.executor, org.slug, "json-tiny", VALID, "building.json")

    assert (
        problem(refused, 413)["detail"]
        == f"the file is {len(VALID)} bytes; workflow json-tiny takes at most 100 bytes."
    )


# -- reading runs ------------------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_in_pages_a_cursor_leads_through(org: Org, runs: Runs) -> None:
    whole = org.runs(limit=200).json()
    paged, pages = all_pages(org.viewer, f"/orgs/{org.slug}/runs", limit=2)

    mine = [r["run_id"] for r in whole["items"] if r["run_id"] in runs.made]
    assert mine == runs.ids()
    assert whole["next_cursor"] is None
    assert [r["run_id"] for r in paged] == [r["run_id"] for r in whole["items"]]
    assert pages == (len(whole["items"]) + 1) // 2
    created = [r["created_at"] for r in whole["items"]]
    assert created == sorted(created, reverse=True)
    first = whole["items"][-1]
    assert first["href"] == f"/api/v1/orgs/{org.slug}/runs/{first['run_id']}"


@pytest.mark.parametrize(
    "query",
    [
        {"status": "FAILED"},
        {"status": "SUCCEEDED"},
        {"workflow": "json-second"},
        {"workflow": "json-basic", "status": "SUCCEEDED"},
        {"workflow": "json-second", "status": "FAILED"},
    ],
    ids=["failed", "succeeded", "one-workflow", "workflow-and-status", "nothing-matches"],
)
def test_status_and_workflow_filters_hold_on_every_page(org: Org, runs: Runs, query: dict[str, str]) -> None:
    paged, _ = all_pages(org.viewer, f"/orgs/{org.slug}/runs", limit=1, **query)

    mine = [r["run_id"] for r in paged if r["run_id"] in runs.made]
    assert mine == runs.ids(**query)
    assert all(query.get("status") in (None, r["status"]) for r in paged)
    assert all(query.get("workflow") in (None, r["workflow"]) for r in paged)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "DONE"}, "status"),
        ({"workflow": "Not A Slug"}, "workflow"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"cursor": "x" * 201}, "cursor"),
    ],
    ids=["unknown-status", "bad-workflow", "limit-zero", "limit-too-big", "cursor-too-long"],
)
def test_a_malformed_listing_query_is_422_naming_the_field(org: Org, query: dict[str, str], field: str) -> None:
    body = problem(org.runs(**query), 422)

    assert [e["loc"] for e in body["errors"]] == [[field]]


@pytest.mark.parametrize(
    "cursor", ["!!!", "YS9i", "Li4", "X194X18"], ids=["not-base64", "a-path", "dot-dot", "reserved-id"]
)
def test_a_cursor_this_api_did_not_return_is_422(org: Org, failed_run: str, cursor: str) -> None:
    runs = org.runs(cursor=cursor)
    findings = org.viewer.get(f"/orgs/{org.slug}/runs/{failed_run}/findings", params={"cursor": cursor})

    assert problem(runs, 422)["detail"] == "The cursor is not one this API returned."
    assert problem(findings, 422)["detail"] == "The cursor is not one this API returned."


def test_a_run_is_read_with_its_steps(org: Org, failed_run: str) -> None:
    found = org.viewer.get(f"/orgs/{org.slug}/runs/{failed_run}")

    assert found.status_code == 200, found.text
    run = found.json()
    assert (run["run_id"], run["status"], run["workflow_version"], run["rerun_of"]) == (failed_run, "FAILED", 1, None)
    [step] = run["steps"]
    assert (step["number"], step["key"], step["validator"], step["status"]) == (1, "schema", "json-schema", "FAILED")
    assert step["counts"]["ERROR"] == 4
    assert step["artifacts"] == []
    # Internal fields (object uris, attempt ids, signing material) never reach a response.
    assert "gs://" not in found.text
    assert "attempt" not in found.text


def test_an_unknown_or_malformed_run_id_is_404(org: Org) -> None:
    for run_id in ("0" * 24, "not-a-run-id"):
        problem(org.viewer.get(f"/orgs/{org.slug}/runs/{run_id}"), 404)


def test_findings_come_in_order_in_pages_a_cursor_leads_through(org: Org, failed_run: str) -> None:
    path = f"/orgs/{org.slug}/runs/{failed_run}/findings"
    whole = org.viewer.get(path).json()
    first = org.viewer.get(path, params={"limit": 3}).json()
    rest = org.viewer.get(path, params={"limit": 3, "cursor": first["next_cursor"]}).json()

    assert [f["message"] for f in whole["items"]] == INVALID_MESSAGES
    assert whole["next_cursor"] is None
    assert len(first["items"]) == 3
    assert first["items"] + rest["items"] == whole["items"]
    assert rest["next_cursor"] is None
    assert {(f["step"], f["severity"]) for f in whole["items"]} == {(1, "ERROR")}
    assert whole["items"][3]["location"]["path"] == "/systems/1/kind"


# -- artifacts ---------------------------------------------------------------------------------------------------


def auth(api: Api) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.key}"}


def test_an_fmu_runs_results_are_served_as_recorded_and_unknown_names_are_404(
    full_stack: LocalStack, org: Org, fmus: dict[str, Path]
) -> None:
    assert put_workflow(org.author, org.slug, "fmu-basic", workflow_text("fmu-basic", org.slug)).status_code == 200
    model = fmus["RoomHeater"].read_bytes()
    run_id = accepted(api_submit(org.executor, org.slug, "fmu-basic", model, "RoomHeater.fmu"))
    verdict = org.viewer.wait_for_verdict(org.slug, run_id)
    assert verdict["status"] == "SUCCEEDED", verdict

    [listed] = org.viewer.get(f"/orgs/{org.slug}/runs/{run_id}").json()["steps"][0]["artifacts"]
    served = requests.get(f"{full_stack.web_url}{listed['href']}", headers=auth(org.viewer), timeout=30)

    assert (listed["name"], listed["mime_type"]) == ("results.csv", "text/csv")
    assert listed["href"] == f"/api/v1/orgs/{org.slug}/runs/{run_id}/artifacts/1/results.csv"
    assert served.status_code == 200
    assert (len(served.content), hashlib.sha256(served.content).hexdigest()) == (
        listed["size_bytes"],
        listed["sha256"],
    )
    assert served.content.startswith(b'"time","room_temperature"')
    assert served.headers["Content-Disposition"] == "attachment; filename=results.csv"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    base = f"/orgs/{org.slug}/runs/{run_id}/artifacts"
    for missing in (f"{base}/1/no-such.csv", f"{base}/2/results.csv", f"{base}/1/output.json"):
        problem(org.viewer.get(missing), 404)


# -- cancel and re-run -------------------------------------------------------------------------------------------


@pytest.fixture
def slow_run(full_stack: LocalStack, org: Org, fmus: dict[str, Path]) -> Iterator[str]:
    """A run whose job is running (and would run for half an hour)."""
    assert put_workflow(org.author, org.slug, "slow-fmu", slow_fmu_workflow(org.slug)).status_code == 200
    run_id = accepted(api_submit(org.executor, org.slug, "slow-fmu", fmus["SlowRoom"].read_bytes(), "Slow.fmu"))
    api_run_running(org.viewer, org.slug, run_id)
    yield run_id
    # Whatever the test did, the job does not outlive it.
    org.executor.post(f"/orgs/{org.slug}/runs/{run_id}/cancel")


def test_cancel_ends_a_running_run_and_a_second_cancel_is_409(org: Org, slow_run: str) -> None:
    canceled = org.executor.post(f"/orgs/{org.slug}/runs/{slow_run}/cancel")
    again = org.executor.post(f"/orgs/{org.slug}/runs/{slow_run}/cancel")

    assert canceled.status_code == 200, canceled.text
    assert canceled.json() == {"run_id": slow_run, "status": "CANCELED"}
    run = org.viewer.get(f"/orgs/{org.slug}/runs/{slow_run}").json()
    assert (run["status"], run["steps"][0]["status"]) == ("CANCELED", "CANCELED")
    assert "has ended already: CANCELED" in problem(again, 409)["detail"]


def test_a_run_that_ended_cannot_be_canceled_and_an_unknown_one_is_404(org: Org, failed_run: str) -> None:
    ended = org.executor.post(f"/orgs/{org.slug}/runs/{failed_run}/cancel")
    unknown = org.executor.post(f"/orgs/{org.slug}/runs/{'0' * 24}/cancel")

    assert "has ended already: FAILED" in problem(ended, 409)["detail"]
    problem(unknown, 404)


def test_a_rerun_is_a_new_run_of_the_same_submission_linked_to_the_first(org: Org, failed_run: str) -> None:
    rerun_id = accepted(org.executor.post(f"/orgs/{org.slug}/runs/{failed_run}/rerun"))

    verdict = org.viewer.wait_for_verdict(org.slug, rerun_id)

    original = org.viewer.get(f"/orgs/{org.slug}/runs/{failed_run}").json()
    assert rerun_id != failed_run
    assert verdict["rerun_of"] == failed_run
    assert (verdict["status"], verdict["counts"], verdict["submission_name"]) == (
        "FAILED",
        original["counts"],
        original["submission_name"],
    )
    problem(org.executor.post(f"/orgs/{org.slug}/runs/{'0' * 24}/rerun"), 404)


# -- workflows ---------------------------------------------------------------------------------------------------


def test_workflows_are_listed_and_read_one_by_one(org: Org) -> None:
    listed = org.viewer.get(f"/orgs/{org.slug}/workflows")
    one = org.viewer.get(f"/orgs/{org.slug}/workflows/json-basic")

    assert listed.status_code == 200, listed.text
    slugs = [w["slug"] for w in listed.json()["items"]]
    assert {"json-basic", "json-second"} <= set(slugs)
    assert slugs == sorted(slugs)
    assert one.status_code == 200, one.text
    assert one.json() == next(w for w in listed.json()["items"] if w["slug"] == "json-basic")
    body = one.json()
    assert (body["name"], body["version"], body["fail_policy"]) == ("Building summary (JSON Schema)", 1, "stop")
    assert [(s["key"], s["validator"]) for s in body["steps"]] == [("schema", "json-schema")]
    for slug in ("no-such-workflow", "Not_A_Slug"):
        problem(org.viewer.get(f"/orgs/{org.slug}/workflows/{slug}"), 404)


def test_put_applies_a_workflow_with_its_resource_files_once_and_a_change_as_a_new_version(org: Org) -> None:
    text = workflow_text("xml-basic", org.slug, "xml-mine")

    first = put_workflow(org.author, org.slug, "xml-mine", text, XML_RESOURCES)
    same = put_workflow(org.author, org.slug, "xml-mine", text, XML_RESOURCES)
    renamed = text.replace("name: Building summary (XML Schema)", "name: Building summary, renamed")
    changed = put_workflow(org.author, org.slug, "xml-mine", renamed, XML_RESOURCES)

    assert (first.status_code, first.json()) == (200, {"slug": "xml-mine", "version": 1, "changed": True})
    assert (same.status_code, same.json()) == (200, {"slug": "xml-mine", "version": 1, "changed": False})
    assert (changed.status_code, changed.json()) == (200, {"slug": "xml-mine", "version": 2, "changed": True})
    current = org.viewer.get(f"/orgs/{org.slug}/workflows/xml-mine").json()
    assert (current["name"], current["version"]) == ("Building summary, renamed", 2)
    # The schema and the file it includes were applied: documents validate against them.
    for example, status in (("building-valid.xml", "SUCCEEDED"), ("building-invalid.xml", "FAILED")):
        data = (EXAMPLES / example).read_bytes()
        run_id = accepted(api_submit(org.executor, org.slug, "xml-mine", data, example))
        verdict = org.viewer.wait_for_verdict(org.slug, run_id)
        assert (verdict["status"], verdict["workflow_version"]) == (status, 2)


def test_a_bad_workflow_file_is_422_listing_its_problems_and_changes_nothing(org: Org) -> None:
    text = workflow_text("xml-basic", org.slug, "xml-refused")
    bad_policy = text.replace("fail_policy: stop", "fail_policy: sometimes")

    missing_resource = put_workflow(org.author, org.slug, "xml-refused", text, {"xml/building.xsd": b"<x/>"})
    bad_field = put_workflow(org.author, org.slug, "xml-refused", bad_policy, XML_RESOURCES)
    other_slug = put_workflow(org.author, org.slug, "xml-elsewhere", text, XML_RESOURCES)
    not_yaml = put_workflow(org.author, org.slug, "xml-refused", "steps: [unclosed", XML_RESOURCES)
    no_file = org.author.put(f"/orgs/{org.slug}/workflows/xml-refused", files={"other": ("x", b"")})

    assert problem(missing_resource, 422)["errors"] == [
        {
            "step": "schema",
            "field": "config.resources[0]",
            "message": "'xml/types.xsd' names no file sent with the workflow",
        }
    ]
    assert problem(bad_field, 422)["errors"] == [
        {"step": None, "field": "fail_policy", "message": "Input should be 'stop' or 'continue'"}
    ]
    assert problem(other_slug, 422)["detail"] == (
        f"the file is workflow {org.slug}/xml-refused; this request applies {org.slug}/xml-elsewhere"
    )
    assert problem(not_yaml, 422)["detail"].startswith("the workflow file cannot be read as YAML or JSON")
    assert [e["loc"] for e in problem(no_file, 422)["errors"]] == [["workflow"]]
    for slug in ("xml-refused", "xml-elsewhere"):
        problem(org.viewer.get(f"/orgs/{org.slug}/workflows/{slug}"), 404)


# -- anything else under /api/v1 ---------------------------------------------------------------------------------


def test_an_unknown_path_under_the_api_is_a_404_problem_and_a_wrong_method_a_405_saying_the_right_ones(
    org: Org,
) -> None:
    problem(org.viewer.get("/no-such-operation"), 404)
    problem(org.viewer.get(f"/orgs/{org.slug}/runs/{'0' * 24}/artifacts/one/results.csv"), 404)
    wrong_method = org.viewer.request("DELETE", f"/orgs/{org.slug}/runs")
    assert problem(wrong_method, 405)["title"] == "Method Not Allowed"
    assert set(wrong_method.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
