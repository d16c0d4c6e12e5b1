"""Shared test data and helpers. Test modules import from here (and from tests.fakes), never from each other.

The drivers deliver finalize events to a Pipeline the way the platform does, one event at a time:
- `Harness` on the real emulators (integration tests), uploading with a real Cloud Storage client;
- `tests.fakes.FakeWorld` on the in-memory fakes (unit tests), with the same helpers and no I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import subprocess
import sys
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient

from bootstrap import Services
from deploy.provision import provision, seed_demo
from deploy.stack import LocalStack
from functions.pipeline import Pipeline
from functions.stage import Handled, Outcome
from schemas.changes import Write, org_path, workflow_path
from schemas.documents import AttemptDoc, OrgDoc, RunDoc, StepSpec, WorkflowDoc
from schemas.enums import Role, RunStatus
from schemas.envelopes import InputRole, OutputEnvelope
from schemas.objects import ObjectFinalized
from schemas.paths import attempt_id_for, inbox_object, parse_gs_uri, run_id_for
from schemas.settings import Settings
from schemas.signing import SIGNATURE_METADATA_KEY, attempt_signing_key, sign
from store.objects import finalized_event
from store.ports import Conflict, ObjectStore, RunReads, RunStore
from web.accounts import Accounts
from web.wsgi import app_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Third-party files for real-world tests (its README says what each folder is for): read in place, never copied.
CORPORA = ROOT.parent / "shared" / "corpora"
VALIDIBOT = Path(sys.executable).parent / "validibot"
TEST_PROJECT = "validibot-test"
# The service secret every test stack and fake world signs and verifies outputs with.
TEST_SIGNING_SECRET = "test-signing-secret-not-for-production"
TEST_WEB_SECRET_KEY = "test-web-secret-key-not-for-production"
FMU_SCRIPTS = {
    "RoomHeater": EXAMPLES / "fmu" / "RoomHeater.py",
    "SlowRoom": ROOT / "tests" / "fmus" / "SlowRoom.py",
    "Hostile": ROOT / "tests" / "fmus" / "Hostile.py",
}

VALID = (EXAMPLES / "building-valid.json").read_bytes()
INVALID = (EXAMPLES / "building-invalid.json").read_bytes()
# The four findings of INVALID against the demo json-basic workflow, in order.
INVALID_MESSAGES = [
    "'climate_zone' is a required property",
    "'42' does not match '^B-[0-9]{4}$'",
    "-12 is less than or equal to the minimum of 0",
    "'steam' is not one of ['hvac', 'lighting', 'dhw', 'pv']",
]
NAME_SCHEMA = {"type": "object", "required": ["name"]}

CREATED = Handled(Outcome.CREATED)
LAUNCHED = Handled(Outcome.LAUNCHED)
APPLIED = Handled(Outcome.APPLIED)
DUPLICATE = Handled(Outcome.DUPLICATE)


def genuine_output(run_id: str, attempt: AttemptDoc, status: str = "success") -> OutputEnvelope:
    """An output that passes every check of DESIGN §6 for this attempt, as its validator would write it."""
    return OutputEnvelope(
        run_id=run_id,
        step_key=attempt.step_key,
        attempt_id=attempt_id_for(attempt.step, 1),
        callback_id=attempt.callback_id,
        input_envelope_sha256=attempt.input_sha256,
        validator={"id": "json-schema", "type": "json-schema", "version": "1"},
        status=status,
        timing={"started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"},
    )


def revised(output: OutputEnvelope, **changes: Any) -> OutputEnvelope:
    """`output` with some fields replaced by plain JSON values, validated like a written output.json would be."""
    return OutputEnvelope.model_validate({**output.model_dump(mode="json"), **changes})


def json_step(key: str, schema: dict[str, Any] | None = None) -> StepSpec:
    return StepSpec(key=key, name=key.title(), validator="json-schema", config={"schema": schema or NAME_SCHEMA})


class Driver:
    """Delivers a run's events to `pipeline`, in order or as a test chooses. Subclasses say how objects are
    uploaded and how an object's current version becomes its finalize event."""

    pipeline: Pipeline

    @property
    def store(self) -> RunStore:
        return self.pipeline.context.store

    @property
    def settings(self) -> Settings:
        return self.pipeline.context.settings

    def upload(
        self,
        name: str,
        data: bytes,
        content_type: str = "application/json",
        *,
        bucket: str | None = None,
        signature: str | None = None,
    ) -> ObjectFinalized:
        """Write `name` unconditionally (as a user, or a hostile writer, would), by default into the bucket its
        path belongs in: the inbox bucket for inbox/..., the pipeline bucket for everything else."""
        raise NotImplementedError

    def event_for(self, uri: str) -> ObjectFinalized:
        raise NotImplementedError

    def bucket_for(self, name: str) -> str:
        return self.settings.inbox_bucket if name.startswith("inbox/") else self.settings.bucket

    def attempt_key(self, run_id: str, step: int = 1) -> str:
        """The signing key LAUNCH hands the attempt's job: derived from the service secret and the attempt."""
        attempt = self.store.attempt(run_id, attempt_id_for(step, 1))
        assert attempt is not None
        return attempt_signing_key(
            self.settings.signing_secret_bytes(),
            run_id=run_id,
            attempt_id=attempt_id_for(step, 1),
            callback_id=attempt.doc.callback_id,
        )

    def attempt_signature(self, run_id: str, data: bytes, step: int = 1) -> str:
        """What the attempt's own job would sign `data` with."""
        return sign(self.attempt_key(run_id, step), data)

    def put_output(self, run_id: str, data: bytes, *, signed: bool = True, step: int = 1) -> ObjectFinalized:
        """Write `data` as the attempt's output.json, over whatever is there, signed with its key or unsigned."""
        attempt = self.store.attempt(run_id, attempt_id_for(step, 1))
        assert attempt is not None
        signature = self.attempt_signature(run_id, data, step) if signed else None
        return self.upload(parse_gs_uri(attempt.doc.expected_output_uri)[1], data, signature=signature)

    def rewired(self, **changes: Any) -> Pipeline:
        """This pipeline with some of its context replaced (settings, launchers, clock, ...)."""
        return Pipeline.wired(dataclasses.replace(self.pipeline.context, **changes))

    def submit(self, data: bytes, workflow: str = "json-basic", filename: str | None = None, org: str = "demo"):
        """Upload to the inbox; returns (intake event, run_id)."""
        event = self.upload(inbox_object(org, workflow, filename or f"{uuid.uuid4().hex}.json"), data)
        return event, run_id_for(event.bucket, event.name, event.generation)

    def input_event(self, run_id: str, step: int = 1) -> ObjectFinalized:
        attempt = self.store.attempt(run_id, attempt_id_for(step, 1))
        assert attempt is not None
        return self.event_for(attempt.doc.input_uri)

    def output_event(self, run_id: str, step: int = 1) -> ObjectFinalized:
        attempt = self.store.attempt(run_id, attempt_id_for(step, 1))
        assert attempt is not None
        return self.event_for(attempt.doc.expected_output_uri)

    def run_through(self, data: bytes, workflow: str = "json-basic") -> tuple[str, RunDoc]:
        """Deliver every event of an inline run once, in order, until the run ends."""
        event, run_id = self.submit(data, workflow)
        assert self.pipeline.handle(event) == CREATED
        for step in range(1, 100):
            assert self.pipeline.handle(self.input_event(run_id, step)) == LAUNCHED
            assert self.pipeline.handle(self.output_event(run_id, step)) == APPLIED
            run = self.store.run(run_id)
            assert run is not None
            if run.doc.ended_at is not None:
                return run_id, run.doc
        raise AssertionError("run did not end")

    def add_workflow(self, steps: list[StepSpec], fail_policy: str = "stop", org: str = "demo") -> str:
        slug = f"wf-{uuid.uuid4().hex[:10]}"
        doc = WorkflowDoc(org=org, slug=slug, name=f"Test {slug}", steps=steps, fail_policy=fail_policy)
        self.store.commit([Write(workflow_path(org, slug), doc, "upsert")])
        return slug


@dataclass
class Harness(Driver):
    """The pipeline on the real emulators, with the real adapters bootstrap wires."""

    services: Services
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = self.services.pipeline
        self.gcs = self.services.storage_client
        self.bucket = self.gcs.bucket(self.settings.bucket)

    @property
    def reads(self) -> RunReads:
        return self.services.run_reads

    @property
    def objects_port(self) -> ObjectStore:
        return self.services.objects

    def web(self) -> Flask:
        """The web app over this harness's emulators, in process (its test client is what the tests drive)."""
        return app_for(self.services)

    def signed_in_web(self, org: str = "demo", role: Role = Role.VIEWER) -> FlaskClient:
        """A test client of `web()` signed in through its form as a new member of `org` with `role`."""
        app = self.web()
        email = f"{role.value}-{uuid.uuid4().hex[:8]}@{org}.example"
        password = app.extensions["validibot"].accounts.create_user(org, email, role)
        client = app.test_client()
        token = csrf_token(client.get("/signin").text)
        signed = client.post("/signin", data={"email": email, "password": password, "csrf_token": token})
        assert signed.status_code == 302, signed.text
        return client

    def upload(
        self,
        name: str,
        data: bytes,
        content_type: str = "application/json",
        *,
        bucket: str | None = None,
        signature: str | None = None,
    ) -> ObjectFinalized:
        blob = self.gcs.bucket(bucket or self.bucket_for(name)).blob(name)
        if signature is not None:
            blob.metadata = {SIGNATURE_METADATA_KEY: signature}
        blob.upload_from_string(data, content_type=content_type)
        return finalized_event(blob)

    def event_for(self, uri: str) -> ObjectFinalized:
        _, name = parse_gs_uri(uri)
        blob = self.bucket.get_blob(name)
        assert blob is not None, f"{uri} was not written"
        return finalized_event(blob)

    def wait_for_output(self, run_id: str, step: int = 1, timeout: float = 120) -> ObjectFinalized:
        """The output.json a job writes on its own, as its finalize event (the job's 'callback')."""
        return self._wait_for_output(run_id, step, timeout, lambda blob: True)

    def wait_for_signed_output(self, run_id: str, step: int = 1, timeout: float = 120) -> ObjectFinalized:
        """The output.json the attempt's own validator wrote (inline or as a job), past any forgery in its place."""

        def signed(blob: Any) -> bool:
            signature = (blob.metadata or {}).get(SIGNATURE_METADATA_KEY)
            return signature == self.attempt_signature(run_id, blob.download_as_bytes(), step)

        return self._wait_for_output(run_id, step, timeout, signed)

    def _wait_for_output(
        self, run_id: str, step: int, timeout: float, accepted: Callable[[Any], bool]
    ) -> ObjectFinalized:
        attempt = self.store.attempt(run_id, attempt_id_for(step, 1))
        assert attempt is not None
        _, name = parse_gs_uri(attempt.doc.expected_output_uri)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            blob = self.bucket.get_blob(name)
            if blob is not None and accepted(blob):
                return finalized_event(blob)
            time.sleep(0.1)
        raise AssertionError(f"no accepted output.json for {run_id} after {timeout} s")

    def run_job(self, data: bytes, workflow: str, filename: str) -> tuple[str, RunDoc]:
        """A one-step job workflow, driven like the platform would: intake, launch, the job's output, ingest."""
        event, run_id = self.submit(data, workflow, filename)
        assert self.pipeline.handle(event) == CREATED
        assert self.pipeline.handle(self.input_event(run_id)) == LAUNCHED
        assert self.pipeline.handle(self.wait_for_output(run_id)) == APPLIED
        run = self.store.run(run_id)
        assert run is not None
        return run_id, run.doc


# -- The whole local stack, driven as a user does (e2e) --------------------------------------------------------


def cli(stack: LocalStack, *args: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    """`validibot ARGS...`, as a user runs it against this stack (with other `settings`, if given), in direct mode:
    no login of the developer's own (a saved config or VALIDIBOT_SERVER / VALIDIBOT_API_KEY) can redirect it."""
    own = (settings or stack.settings).as_environment()
    no_login = stack.log_dir / "no-login" / "cli.json"
    env = {**cli_api_env(stack, no_login), **own}
    return subprocess.run([str(VALIDIBOT), *args], env=env, capture_output=True, text=True, timeout=180)


def cli_submit(stack: LocalStack, file: Path, workflow: str = "json-basic") -> subprocess.CompletedProcess[str]:
    """`validibot submit FILE --workflow WORKFLOW --wait`, as a user runs it against this stack."""
    return cli(stack, "submit", str(file), "--workflow", workflow, "--wait", "--timeout", "120")


# -- A real browser: Playwright driving Debian's chromium (no browser download is possible here) ----------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALL = "apt-get install -y chromium"


def chromium() -> Path:
    """Debian's chromium, installed with apt-get when it is missing and we are root; otherwise the exact command
    to run, as an error (a browser test that cannot run must not pass)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        raise RuntimeError(f"the browser tests need Debian's chromium: run `sudo {CHROMIUM_INSTALL}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run([*CHROMIUM_INSTALL.split(), "-q"], check=True, env=env, capture_output=True)
    return CHROMIUM


# -- People and API keys on a stack (DESIGN §14) -----------------------------------------------------------------

# Every key and password the tests made: the full stack's teardown checks that none reached its logs.
ISSUED_SECRETS: list[str] = []
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def stack_accounts(stack: LocalStack) -> Accounts:
    return Accounts(stack.services.account_store, stack.settings)


def ensure_org(stack: LocalStack, org: str) -> None:
    with contextlib.suppress(Conflict):
        stack.services.run_store.commit(
            [Write(org_path(org), OrgDoc(name=org, created_at=datetime.now(UTC)), "create")]
        )


def new_key(stack: LocalStack, org: str, role: Role) -> str:
    """A fresh API key for `org` with `role` (the org is made when missing)."""
    ensure_org(stack, org)
    key = stack_accounts(stack).create_key(org, role, f"test {role.value}", "tests")
    ISSUED_SECRETS.append(key)
    return key


def new_user(stack: LocalStack, org: str, role: Role) -> tuple[str, str]:
    """A fresh user (a unique email) who is a member of `org` with `role`: (email, password)."""
    ensure_org(stack, org)
    email = f"{role.value}-{uuid.uuid4().hex[:8]}@{org}.example"
    password = stack_accounts(stack).create_user(org, email, role)
    ISSUED_SECRETS.append(password)
    return email, password


def csrf_token(html: str) -> str:
    found = _CSRF_FIELD.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def web_session(stack: LocalStack, email: str, password: str) -> requests.Session:
    """A browser-like session signed in through the sign-in form (its CSRF token included)."""
    session = requests.Session()
    form = session.get(f"{stack.web_url}/signin", timeout=10)
    signed = session.post(
        f"{stack.web_url}/signin",
        data={"email": email, "password": password, "csrf_token": csrf_token(form.text)},
        timeout=10,
    )
    assert signed.status_code == 200, signed.text
    return session


def signed_in_as(stack: LocalStack, org: str, role: Role = Role.VIEWER) -> requests.Session:
    return web_session(stack, *new_user(stack, org, role))


@dataclass
class Api:
    """REST API v1 on a stack, as one key: `api.get("/orgs/demo/runs")` and so on (paths under /api/v1)."""

    stack: LocalStack
    key: str | None

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**kwargs.pop("headers", {})}
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        url = f"{self.stack.web_url}/api/v1{path}"
        return requests.request(method, url, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def wait_for_verdict(self, org: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
        """The run once terminal (404 while INTAKE has yet to make it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.get(f"/orgs/{org}/runs/{run_id}")
            if found.status_code == 200 and RunStatus(found.json()["status"]).is_terminal:
                return found.json()
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} reached no verdict in {timeout}s")


def secrets_in_logs(log_dir: Path, secrets: list[str]) -> dict[str, list[str]]:
    """Which of `secrets` appear in which log files under `log_dir` (by file name): what must stay empty."""
    found: dict[str, list[str]] = {}
    for log in sorted(log_dir.rglob("*.log")):
        text = log.read_text(errors="replace")
        leaked = [secret[:8] + "…" for secret in secrets if secret in text]
        if leaked:
            found[log.name] = leaked
    return found


def isolated_harness(settings: Settings, **overrides: object) -> Harness:
    """A pipeline alone in a project of its own on the session's emulators (the Firestore emulator keeps one
    database per project), provisioned and seeded: its maintenance ticks see only its own runs."""
    suffix = uuid.uuid4().hex[:8]
    own = settings.model_copy(
        update={
            "project": f"isolated-{suffix}",
            "bucket": f"isolated-{suffix}",
            "inbox_bucket": f"isolated-{suffix}-inbox",
            **overrides,
        }
    )
    services = Services(own)
    provision(services, None)
    seed_demo(services.run_store, services.workflows)
    return Harness(services)


# -- Bundles: .zip submissions unpacked into a workflow's input roles ------------------------------------------

# The roles of an EnergyPlus workflow that takes its weather from the submission (DESIGN §12).
ENERGYPLUS_ROLES = {"model": ["*.idf", "*.epJSON"], "weather": ["*.epw"]}
# A TMY3 weather file the EnergyPlus package ships, far from the Golden, CO the example models are set in.
SAN_FRANCISCO_EPW = "USA_CA_San.Francisco.Intl.AP.724940_TMY3.epw"


def zip_bytes(members: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive of `members` in order: a name, or a ZipInfo for what a name cannot say (a symlink's mode)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # zipfile warns of a duplicate name; tests write them on purpose.
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for member, data in members:
                archive.writestr(member, data)
    return buffer.getvalue()


def as_input_roles(roles: dict[str, list[str]]) -> list[InputRole]:
    """A workflow's `inputs` as a workflow file writes them (role → patterns), in the form documents keep."""
    return [InputRole(role=role, patterns=patterns) for role, patterns in roles.items()]


# -- The CLI in API mode (after `validibot login`) ---------------------------------------------------------------


def cli_api(
    stack: LocalStack, config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`validibot ARGS...` with its login saved in `config`: API mode once `validibot login` wrote it. The caller's
    own VALIDIBOT_SERVER / VALIDIBOT_API_KEY are dropped, so only `config` and `env` decide the mode."""
    return subprocess.run(
        [str(VALIDIBOT), *args], env=cli_api_env(stack, config, env), capture_output=True, text=True, timeout=180
    )


def cli_api_env(stack: LocalStack, config: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k not in ("VALIDIBOT_SERVER", "VALIDIBOT_API_KEY")}
    own = stack.settings.as_environment()
    return {
        **inherited,
        **stack.env,
        **own,
        "VALIDIBOT_WEB_URL": stack.web_url,
        "VALIDIBOT_CLI_CONFIG": str(config),
        **(env or {}),
    }


# -- REST API v1 on a stack: orgs of a test's own, with the demo workflows applied through the API ----------------

# The XSD resource files of examples/workflows/xml-basic.yaml, by the names the workflow file gives them.
XML_RESOURCES = {name: (EXAMPLES / "workflows" / name).read_bytes() for name in ("xml/building.xsd", "xml/types.xsd")}


def new_org(stack: LocalStack, prefix: str) -> str:
    """A fresh org, so that its listings hold only what the test put there."""
    org = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_org(stack, org)
    return org


def workflow_text(example: str, org: str, slug: str | None = None) -> str:
    """examples/workflows/{example}.yaml as a workflow file of `org`, named `slug` (the example's own by default)."""
    text = (EXAMPLES / "workflows" / f"{example}.yaml").read_text()
    text = re.sub(r"(?m)^org: .*$", f"org: {org}", text)
    return re.sub(r"(?m)^slug: .*$", f"slug: {slug or example}", text)


def slow_fmu_workflow(org: str, slug: str = "slow-fmu") -> str:
    """A workflow whose job runs for minutes on tests/fmus/SlowRoom.py's FMU: a run that is there to be canceled."""
    return f"""org: {org}
slug: {slug}
name: A simulation slow enough to cancel
steps:
- key: simulate
  name: Twenty thousand slow steps
  validator: fmu
  timeout_seconds: 3600
  config:
    start_time: 0
    stop_time: 1200000
    step_size: 60
    output_variables: [room_temperature]
"""


def put_workflow(
    api: Api, org: str, slug: str, text: str, resources: dict[str, bytes] | None = None
) -> requests.Response:
    """PUT a workflow file and its resource files (multipart `workflow` and `resources`, DESIGN §14)."""
    files = [("workflow", (f"{slug}.yaml", text.encode(), "application/yaml"))]
    files += [("resources", (name, data, "application/octet-stream")) for name, data in (resources or {}).items()]
    return api.put(f"/orgs/{org}/workflows/{slug}", files=files)


def api_submit(
    api: Api, org: str, workflow: str, data: bytes, filename: str, idempotency_key: str | None = None
) -> requests.Response:
    """POST a file to a workflow (multipart `file`), with an Idempotency-Key when given."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    return api.post(f"/orgs/{org}/workflows/{workflow}/runs", files={"file": (filename, data)}, headers=headers)


def wait_until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    """The first truthy answer of `check`, polled until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {seconds:.0f} s")


def api_run_running(api: Api, org: str, run_id: str, seconds: float = 60) -> dict[str, Any]:
    """The run once its first step's job is running (what a cancel needs to find)."""

    def running() -> dict[str, Any] | None:
        found = api.get(f"/orgs/{org}/runs/{run_id}")
        body = found.json() if found.status_code == 200 else None
        return body if body and body["steps"] and body["steps"][0]["status"] == "RUNNING" else None

    return wait_until(running, seconds, f"running job of run {run_id}")


def web_with(harness: Harness, clock: Callable[[], datetime] | None = None, **overrides: Any) -> Flask:
    """`harness.web()` with some settings changed (rate limit, lockout, ...) and, when given, the clock its
    accounts and Idempotency-Key records are dated by."""
    return app_for(harness.services, harness.services.settings.model_copy(update=overrides), clock)
