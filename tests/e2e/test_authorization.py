"""Who may do what (DESIGN §14), on the whole local stack: every REST API operation and every web page, without
credentials, with another org's, with too small a role and with the right one; and the sign-in forms around them.

The tables below name every route once (a test checks that against the app's routes). No page needs more than the
viewer role, so only the API has 403s to test. Runs are made once for the module: a json-basic run with findings, an
FMU run with an artifact, and a slow FMU run that the one cancel allowed to succeed ends.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from deploy.stack import LocalStack
from schemas.access import key_hash, key_id
from schemas.enums import Role
from tests.support import (
    INVALID,
    VALID,
    Api,
    api_run_running,
    api_submit,
    csrf_token,
    new_key,
    new_org,
    new_user,
    put_workflow,
    signed_in_as,
    slow_fmu_workflow,
    stack_accounts,
    web_session,
    workflow_text,
)
from web.wsgi import app_for

pytestmark = pytest.mark.e2e

PROBLEM_JSON = "application/problem+json"
ROLES = list(Role)  # least to most


@dataclass(frozen=True)
class Scene:
    """Org `org` with a key of every role, its runs, and a member of each org signed in to the web."""

    stack: LocalStack
    org: str
    other: str
    keys: dict[Role, str]
    other_key: str
    json_run: str
    fmu_run: str
    slow_run: str
    member: requests.Session
    executor: requests.Session
    outsider: requests.Session

    def api(self, key: str | None) -> Api:
        return Api(self.stack, key)

    def url(self, path: str) -> str:
        return f"{self.stack.web_url}{path}"


@dataclass(frozen=True)
class Operation:
    """One operation of the API: its template as the OpenAPI document writes it, the least role that may call it
    (None: any valid key), what it answers that role, and which of the scene's runs it acts on."""

    name: str
    method: str
    template: str
    least: Role | None
    ok: int
    run: str = "json_run"

    def path(self, scene: Scene, org: str | None = None) -> str:
        run_id = getattr(scene, self.run)
        filled = self.template.format(
            org=org or scene.org, run_id=run_id, slug="json-basic", step=1, name="results.csv"
        )
        return filled.removeprefix("/api/v1")

    def call(self, scene: Scene, api: Api, org: str | None = None, **kwargs: Any) -> requests.Response:
        return api.request(self.method, self.path(scene, org), **self.body(scene), **kwargs)

    def body(self, scene: Scene) -> dict[str, Any]:
        """A well-formed request body: the answer depends on who asks, not on a body that does not validate."""
        if self.name == "submit":
            return {"files": {"file": ("authorization.json", VALID)}}
        if self.name == "put_workflow":
            text = workflow_text("json-basic", scene.org).encode()
            return {"files": {"workflow": ("json-basic.yaml", text)}}
        return {}

    @property
    def org_scoped(self) -> bool:
        return "{org}" in self.template

    @property
    def run_scoped(self) -> bool:
        return "{run_id}" in self.template


OPERATIONS = [
    Operation("whoami", "GET", "/api/v1/whoami", None, 200),
    Operation("submit", "POST", "/api/v1/orgs/{org}/workflows/{slug}/runs", Role.EXECUTOR, 202),
    Operation("list_runs", "GET", "/api/v1/orgs/{org}/runs", Role.VIEWER, 200),
    Operation("get_run", "GET", "/api/v1/orgs/{org}/runs/{run_id}", Role.VIEWER, 200),
    Operation("list_findings", "GET", "/api/v1/orgs/{org}/runs/{run_id}/findings", Role.VIEWER, 200),
    Operation(
        "get_artifact", "GET", "/api/v1/orgs/{org}/runs/{run_id}/artifacts/{step}/{name}", Role.VIEWER, 200, "fmu_run"
    ),
    Operation("cancel", "POST", "/api/v1/orgs/{org}/runs/{run_id}/cancel", Role.EXECUTOR, 200, "slow_run"),
    Operation("rerun", "POST", "/api/v1/orgs/{org}/runs/{run_id}/rerun", Role.EXECUTOR, 202),
    Operation("list_workflows", "GET", "/api/v1/orgs/{org}/workflows", Role.VIEWER, 200),
    Operation("get_workflow", "GET", "/api/v1/orgs/{org}/workflows/{slug}", Role.VIEWER, 200),
    Operation("put_workflow", "PUT", "/api/v1/orgs/{org}/workflows/{slug}", Role.AUTHOR, 200),
]


def ids(named: list[Any]) -> list[str]:
    return [item.name for item in named]


def below(op: Operation) -> list[tuple[Operation, Role]]:
    least = op.least or Role.VIEWER
    return [(op, role) for role in ROLES if not role.allows(least)]


def allowed(op: Operation) -> list[tuple[Operation, Role]]:
    """The least role that may, and admin; a cancel succeeds once only, so only its least role is asked."""
    least = op.least or Role.VIEWER
    return [(op, role) for role in dict.fromkeys([least] if op.name == "cancel" else [least, Role.ADMIN])]


def pair_ids(pairs: list[tuple[Operation, Role]]) -> list[str]:
    return [f"{op.name}-as-{role.value}" for op, role in pairs]


TOO_SMALL = [pair for op in OPERATIONS for pair in below(op)]
RIGHT_ROLE = [pair for op in OPERATIONS for pair in allowed(op)]


@dataclass(frozen=True)
class Page:
    """A page of the web (by its Flask endpoint), for an org's signed-in members of at least `least`; `run` is the
    scene's run it shows."""

    name: str
    template: str
    run: str | None = None
    least: Role = Role.VIEWER

    def path(self, scene: Scene, org: str | None = None) -> str:
        run_id = getattr(scene, self.run) if self.run else ""
        return self.template.format(org=org or scene.org, run_id=run_id)

    def member(self, scene: Scene) -> requests.Session:
        return scene.executor if self.least == Role.EXECUTOR else scene.member


PAGES = [
    Page("pages.runs", "/orgs/{org}/runs"),
    Page("pages.run", "/orgs/{org}/runs/{run_id}", "json_run"),
    Page("pages.artifact", "/orgs/{org}/runs/{run_id}/steps/1/artifacts/results.csv", "fmu_run"),
    Page("pages.workflows", "/orgs/{org}/workflows"),
    Page("pages.workflow", "/orgs/{org}/workflows/json-basic"),
    Page("live.fragment", "/orgs/{org}/runs/{run_id}/live", "json_run"),
    Page("live.events", "/orgs/{org}/runs/{run_id}/events", "json_run"),
    Page("uploads.form", "/orgs/{org}/upload", least=Role.EXECUTOR),
]
PAGES_OF_A_RUN = [page for page in PAGES if page.run]


@pytest.fixture(scope="module")
def scene(full_stack: LocalStack, fmus: dict[str, Path]) -> Iterator[Scene]:
    org, other = new_org(full_stack, "authz"), new_org(full_stack, "authz-other")
    keys = {role: new_key(full_stack, org, role) for role in Role}
    author, executor = Api(full_stack, keys[Role.AUTHOR]), Api(full_stack, keys[Role.EXECUTOR])
    for slug, text in (
        ("json-basic", workflow_text("json-basic", org)),
        ("fmu-basic", workflow_text("fmu-basic", org)),
        ("slow-fmu", slow_fmu_workflow(org)),
    ):
        applied = put_workflow(author, org, slug, text)
        assert applied.status_code == 200, applied.text
    made = {
        "json_run": api_submit(executor, org, "json-basic", INVALID, "building.json"),
        "fmu_run": api_submit(executor, org, "fmu-basic", fmus["RoomHeater"].read_bytes(), "RoomHeater.fmu"),
        "slow_run": api_submit(executor, org, "slow-fmu", fmus["SlowRoom"].read_bytes(), "SlowRoom.fmu"),
    }
    runs = {name: response.json()["run_id"] for name, response in made.items()}
    for name in ("json_run", "fmu_run"):
        executor.wait_for_verdict(org, runs[name])
    api_run_running(executor, org, runs["slow_run"])
    yield Scene(
        stack=full_stack,
        org=org,
        other=other,
        keys=keys,
        other_key=new_key(full_stack, other, Role.ADMIN),
        member=signed_in_as(full_stack, org, Role.VIEWER),
        executor=signed_in_as(full_stack, org, Role.EXECUTOR),
        outsider=signed_in_as(full_stack, other, Role.ADMIN),
        **runs,
    )
    # Whichever tests ran, the slow job does not outlive the module.
    executor.post(f"/orgs/{org}/runs/{runs['slow_run']}/cancel")


def assert_problem(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == PROBLEM_JSON
    return response.json()


# Routes open to anyone: the health checks (the second says how many live pages stream), the API's description,
# static files.
PUBLIC_ENDPOINTS = {"healthz", "live.watching", "openapi", "static"}
# The upload form's post: its tests are with the sign-in's.
FORM_POSTS = {"uploads.submit"}
# The sign-in form, its post and the sign-out post: their tests are at the end.
SIGN_IN_ENDPOINTS = {"signin.form", "signin.submit", "signin.signout"}


def test_the_tables_name_every_route_of_the_web_and_the_api(full_stack: LocalStack) -> None:
    endpoints = {rule.endpoint for rule in app_for(full_stack.services).url_map.iter_rules()}

    tabled = {f"api_v1.{op.name}" for op in OPERATIONS} | {page.name for page in PAGES}
    assert endpoints == tabled | {"pages.index"} | SIGN_IN_ENDPOINTS | PUBLIC_ENDPOINTS | FORM_POSTS
    for public in ("/healthz", "/healthz/live", "/api/v1/openapi.json"):
        assert requests.get(f"{full_stack.web_url}{public}", timeout=10).status_code == 200


# -- the API -----------------------------------------------------------------------------------------------------


def test_the_table_names_every_operation_of_the_document(full_stack: LocalStack) -> None:
    doc = requests.get(f"{full_stack.web_url}/api/v1/openapi.json", timeout=10).json()

    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert {(op.method.lower(), op.template) for op in OPERATIONS} == documented
    assert {op.name for op in OPERATIONS} == {
        op["operationId"] for item in doc["paths"].values() for op in item.values()
    }


@pytest.mark.parametrize("op", OPERATIONS, ids=ids(OPERATIONS))
@pytest.mark.parametrize("sent", ["nothing", "malformed-key", "unknown-key", "session-cookie"])
def test_the_api_without_a_valid_key_is_401(scene: Scene, op: Operation, sent: str) -> None:
    unknown = "vbk_" + "A" * 43
    headers = {"Authorization": f"Bearer {unknown[:-3]}"} if sent == "malformed-key" else {}
    api = scene.api(unknown if sent == "unknown-key" else None)
    # A signed-in person's cookie is no credential for the API: programs authenticate with a key.
    cookies = scene.member.cookies if sent == "session-cookie" else None

    body = assert_problem(op.call(scene, api, headers=headers, cookies=cookies), 401)

    assert body["detail"].startswith(("Send an API key", "The API key is not valid"))


def test_a_401_says_how_to_authenticate(scene: Scene) -> None:
    refused = scene.api(None).get(f"/orgs/{scene.org}/runs")

    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert assert_problem(refused, 401)["detail"] == "Send an API key as 'Authorization: Bearer vbk_...'."


ORG_SCOPED = [op for op in OPERATIONS if op.org_scoped]
RUN_SCOPED = [op for op in OPERATIONS if op.run_scoped]


@pytest.mark.parametrize("op", ORG_SCOPED, ids=ids(ORG_SCOPED))
def test_another_orgs_key_is_404_as_if_nothing_were_there(scene: Scene, op: Operation) -> None:
    body = assert_problem(op.call(scene, scene.api(scene.other_key)), 404)

    assert body["detail"] == "There is no such resource, or it is not yours to see."


@pytest.mark.parametrize("op", RUN_SCOPED, ids=ids(RUN_SCOPED))
def test_another_orgs_run_through_ones_own_org_is_404(scene: Scene, op: Operation) -> None:
    assert_problem(op.call(scene, scene.api(scene.other_key), org=scene.other), 404)


@pytest.mark.parametrize(("op", "role"), TOO_SMALL, ids=pair_ids(TOO_SMALL))
def test_a_role_too_small_is_403(scene: Scene, op: Operation, role: Role) -> None:
    body = assert_problem(op.call(scene, scene.api(scene.keys[role])), 403)

    assert body["detail"] == f"This key's role ({role.value}) may not do this; it needs {op.least}."


@pytest.mark.parametrize(("op", "role"), RIGHT_ROLE, ids=pair_ids(RIGHT_ROLE))
def test_the_right_role_succeeds(scene: Scene, op: Operation, role: Role) -> None:
    response = op.call(scene, scene.api(scene.keys[role]))

    assert response.status_code == op.ok, response.text
    expected_type = "text/csv; charset=utf-8" if op.name == "get_artifact" else "application/json"
    assert response.headers["Content-Type"] == expected_type


def test_a_revoked_key_is_401_from_then_on(scene: Scene) -> None:
    key = new_key(scene.stack, scene.org, Role.ADMIN)
    api = scene.api(key)
    assert api.get("/whoami").status_code == 200

    stack_accounts(scene.stack).revoke_key(scene.org, key_id(key_hash(key)))

    for op in OPERATIONS:
        body = assert_problem(op.call(scene, api), 401)
        assert body["detail"] == "The API key is not valid: unknown, revoked or malformed."


# -- the web's pages ---------------------------------------------------------------------------------------------


def get(scene: Scene, path: str, session: requests.Session | None = None, **kwargs: Any) -> requests.Response:
    return (session or requests).get(scene.url(path), allow_redirects=False, timeout=30, **kwargs)


def sign_in_redirect(response: requests.Response) -> str | None:
    """The `next` of a redirect to the sign-in page (None when it names none); fails on any other answer."""
    assert response.status_code == 302, response.text
    target = urlsplit(response.headers["Location"])
    assert target.path == "/signin"
    found = parse_qs(target.query).get("next")
    return found[0] if found else None


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
@pytest.mark.parametrize("sent", ["nothing", "api-key"])
def test_a_page_without_a_session_sends_to_the_sign_in_page_and_back(scene: Scene, page: Page, sent: str) -> None:
    # An API key is no credential for the web: people sign in.
    headers = {"Authorization": f"Bearer {scene.keys[Role.ADMIN]}"} if sent == "api-key" else {}

    response = get(scene, page.path(scene), headers=headers)

    assert sign_in_redirect(response) == page.path(scene)


def test_the_landing_page_sends_to_the_sign_in_page_or_to_ones_own_org(scene: Scene) -> None:
    assert sign_in_redirect(get(scene, "/")) is None
    assert get(scene, "/", scene.member).headers["Location"] == f"/orgs/{scene.org}/runs"
    assert get(scene, "/", scene.outsider).headers["Location"] == f"/orgs/{scene.other}/runs"


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_a_page_of_another_org_is_404(scene: Scene, page: Page) -> None:
    assert get(scene, page.path(scene), scene.outsider).status_code == 404


@pytest.mark.parametrize("page", PAGES_OF_A_RUN, ids=ids(PAGES_OF_A_RUN))
def test_another_orgs_run_through_ones_own_org_page_is_404(scene: Scene, page: Page) -> None:
    assert get(scene, page.path(scene, org=scene.other), scene.outsider).status_code == 404


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_a_member_sees_the_page(scene: Scene, page: Page) -> None:
    response = get(scene, page.path(scene), page.member(scene))

    assert response.status_code == 200, response.text
    if page.name == "pages.artifact":
        assert response.content.startswith(b'"time","room_temperature"')
    elif page.name == "live.events":  # the run has ended: the stream says so and closes
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.text.startswith("event: end\n")
    elif page.name == "live.fragment":
        assert 'data-terminal="true"' in response.text
    else:
        assert 'action="/signout"' in response.text


TOO_SMALL_PAGES = [page for page in PAGES if page.least != Role.VIEWER]


@pytest.mark.parametrize("page", TOO_SMALL_PAGES, ids=ids(TOO_SMALL_PAGES))
def test_a_page_above_ones_role_is_403(scene: Scene, page: Page) -> None:
    assert get(scene, page.path(scene), scene.member).status_code == 403


def upload(scene: Scene, session: requests.Session) -> requests.Response:
    """Upload through the dashboard's form with the executor's form's CSRF token."""
    form = get(scene, f"/orgs/{scene.org}/upload", scene.executor)
    return session.post(
        scene.url(f"/orgs/{scene.org}/upload"),
        data={"workflow": "json-basic", "csrf_token": csrf_token(form.text)},
        files={"file": ("building.json", INVALID)},
        allow_redirects=False,
        timeout=60,
    )


def test_uploading_from_the_dashboard_needs_a_session_an_org_of_ones_own_and_the_executor_role(scene: Scene) -> None:
    # A CSRF token is tied to its session: each caller posts one of its own form's; without a session there is
    # none to match, and the post is refused before anything is read.
    anonymous = upload(scene, requests.Session())
    outsider_form = get(scene, f"/orgs/{scene.other}/upload", scene.outsider)
    outsider = scene.outsider.post(
        scene.url(f"/orgs/{scene.org}/upload"),
        data={"workflow": "json-basic", "csrf_token": csrf_token(outsider_form.text)},
        files={"file": ("building.json", INVALID)},
        allow_redirects=False,
        timeout=60,
    )
    viewer_token = csrf_token(get(scene, f"/orgs/{scene.org}/runs", scene.member).text)
    viewer = scene.member.post(
        scene.url(f"/orgs/{scene.org}/upload"),
        data={"workflow": "json-basic", "csrf_token": viewer_token},
        files={"file": ("building.json", INVALID)},
        allow_redirects=False,
        timeout=60,
    )
    executor = upload(scene, scene.executor)

    assert anonymous.status_code == 400
    assert outsider.status_code == 404
    assert viewer.status_code == 403
    assert executor.status_code == 303
    assert executor.headers["Location"].startswith(f"/orgs/{scene.org}/runs/")


# -- signing in and out ------------------------------------------------------------------------------------------


def sign_in_form(scene: Scene, session: requests.Session, **data: str) -> requests.Response:
    return session.post(scene.url("/signin"), data=data, allow_redirects=False, timeout=30)


def test_the_sign_in_form_is_public_and_sends_a_signed_in_person_on(scene: Scene) -> None:
    anonymous = get(scene, "/signin")
    onward = get(scene, f"/signin?next=/orgs/{scene.org}/runs/{scene.json_run}", scene.member)

    assert anonymous.status_code == 200
    assert csrf_token(anonymous.text)
    assert get(scene, "/signin", scene.member).headers["Location"] == "/"
    assert onward.headers["Location"] == f"/orgs/{scene.org}/runs/{scene.json_run}"


@pytest.mark.parametrize("token", ["missing", "forged"])
def test_a_sign_in_without_the_forms_csrf_token_is_refused(scene: Scene, token: str) -> None:
    email, password = new_user(scene.stack, scene.org, Role.VIEWER)
    browser = requests.Session()
    get(scene, "/signin", browser)  # the session cookie the token belongs to
    data = {"email": email, "password": password} | ({"csrf_token": "forged"} if token == "forged" else {})

    refused = sign_in_form(scene, browser, **data)

    assert refused.status_code == 400
    assert "The CSRF token is" in refused.text
    assert sign_in_redirect(get(scene, f"/orgs/{scene.org}/runs", browser)) == f"/orgs/{scene.org}/runs"


def test_a_wrong_password_is_refused_on_the_form_and_the_right_one_goes_where_it_was_headed(scene: Scene) -> None:
    email, password = new_user(scene.stack, scene.org, Role.VIEWER)
    browser = requests.Session()
    token = csrf_token(get(scene, "/signin", browser).text)
    headed = f"/orgs/{scene.org}/runs/{scene.json_run}"

    wrong = sign_in_form(scene, browser, email=email, password="not-" + password, csrf_token=token, next=headed)
    right = sign_in_form(scene, browser, email=email, password=password, csrf_token=token, next=headed)

    assert wrong.status_code == 401
    assert "The email or the password is wrong." in wrong.text
    assert (right.status_code, right.headers["Location"]) == (302, headed)
    assert get(scene, headed, browser).status_code == 200


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("runs", "/"),
        # A path of this site with its backslash escaped: sent raw, browsers would read "/\" as "//", another host.
        ("/\\evil.example", "/%5Cevil.example"),
    ],
    ids=["protocol-relative", "absolute", "relative", "backslash"],
)
def test_after_signing_in_a_next_never_leads_off_the_site(scene: Scene, target: str, landing: str) -> None:
    email, password = new_user(scene.stack, scene.org, Role.VIEWER)
    browser = requests.Session()
    token = csrf_token(get(scene, "/signin", browser).text)

    signed = sign_in_form(scene, browser, email=email, password=password, csrf_token=token, next=target)

    assert (signed.status_code, signed.headers["Location"]) == (302, landing)


def test_too_many_wrong_passwords_lock_the_account(scene: Scene) -> None:
    email, password = new_user(scene.stack, scene.org, Role.VIEWER)
    browser = requests.Session()
    token = csrf_token(get(scene, "/signin", browser).text)
    for n in range(scene.stack.settings.signin_max_failures):
        wrong = sign_in_form(scene, browser, email=email, password=f"wrong-{n}", csrf_token=token)
        assert "The email or the password is wrong." in wrong.text

    locked = sign_in_form(scene, browser, email=email, password=password, csrf_token=token)

    # The right password, refused: the account is locked (and the answer is the one every refusal gets).
    settings = scene.stack.settings
    assert locked.status_code == 401
    assert "The email or the password is wrong." in locked.text
    assert f"After {settings.signin_max_failures} wrong passwords in a row" in locked.text


def test_signing_out_needs_the_token_and_ends_the_session(scene: Scene) -> None:
    browser = web_session(scene.stack, *new_user(scene.stack, scene.org, Role.VIEWER))
    runs = f"/orgs/{scene.org}/runs"
    token = csrf_token(get(scene, runs, browser).text)
    # A copy of the session cookie taken before signing out (a stolen one, say) dies with the session.
    copied = requests.Session()
    copied.cookies.update(browser.cookies)

    refused = browser.post(scene.url("/signout"), allow_redirects=False, timeout=30)
    still_in = get(scene, runs, browser)
    signed_out = browser.post(scene.url("/signout"), data={"csrf_token": token}, allow_redirects=False, timeout=30)

    assert refused.status_code == 400
    assert still_in.status_code == 200
    assert (signed_out.status_code, signed_out.headers["Location"]) == (302, "/signin")
    assert sign_in_redirect(get(scene, runs, browser)) == runs
    assert sign_in_redirect(get(scene, runs, copied)) == runs


def test_another_orgs_run_as_a_cursor_tells_nothing(scene: Scene) -> None:
    """Were it to position the page, a cursor naming a newer run of another org would list this org's older runs,
    and so tell that the run exists and roughly when it was made."""
    outsider = scene.api(scene.other_key)
    assert (
        put_workflow(outsider, scene.other, "json-basic", workflow_text("json-basic", scene.other)).status_code == 200
    )
    older = api_submit(outsider, scene.other, "json-basic", INVALID, "older.json").json()["run_id"]
    outsider.wait_for_verdict(scene.other, older)
    newer = api_submit(scene.api(scene.keys[Role.EXECUTOR]), scene.org, "json-basic", INVALID, "newer.json")
    cursor = base64.urlsafe_b64encode(newer.json()["run_id"].encode()).decode().rstrip("=")

    page = outsider.get(f"/orgs/{scene.other}/runs", params={"cursor": cursor})

    assert page.status_code == 200
    assert page.json() == {"items": [], "next_cursor": None}
