"""The `validibot` command: bring up the local stack, submit files and follow runs, manage workflows, people and keys.

Commands about runs and workflows have two backends with one interface (`Backend`): the REST API once `validibot
login` saved a key (or VALIDIBOT_SERVER and VALIDIBOT_API_KEY are set), else the local stack's buckets and Firestore
directly. Admin commands (orgs, users, keys) always work on Firestore: they are for whoever runs the stack.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, Protocol

import click
from pydantic import BaseModel

from bootstrap import Services
from deploy.api_client import (
    KEY_ENV,
    SERVER_ENV,
    ApiClient,
    ApiError,
    ApiTarget,
    config_path,
    read_config,
    resolve_target,
    write_config,
)
from deploy.fmu_build import build_fmu
from deploy.provision import DEMO_ORG, DemoAccess, seed_demo_access
from deploy.stack import (
    LocalStack,
    Ports,
    PrerequisiteMissing,
    emulator_env,
    local_log_format,
    with_local_secrets,
)
from deploy.workflow_files import WorkflowSource, check_file, dump, exported, workflow_paths
from functions.workflows import CheckedWorkflow, WorkflowProblem
from jobs.registry import REGISTERED
from schemas.access import is_api_key, key_hash, key_id
from schemas.api import (
    Accepted,
    Canceled,
    FindingOut,
    RunDetail,
    RunOut,
    RunPage,
    WorkflowApplied,
    WorkflowList,
    finding_out,
    run_href,
    run_out,
    step_out,
    workflow_out,
)
from schemas.changes import Write, org_path
from schemas.documents import OrgDoc, WorkflowDoc
from schemas.enums import Role, RunStatus
from schemas.paths import inbox_object, is_run_id, is_slug, run_id_for
from schemas.settings import Settings
from schemas.workflow_file import WorkflowFile
from store.ports import Conflict
from web.accounts import AccountExists, Accounts

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEMO_FMU_SCRIPT = EXAMPLES / "fmu" / "RoomHeater.py"
LOCAL_PROJECT = "validibot-local"
# Where `validibot up` keeps its signing secret: under the home folder, which engines' sandboxes hide, not in the
# checkout, which they may see.
SECRET_DIR = Path.home() / ".validibot"

# Exit codes (DESIGN §14), the same in both modes: scripts branch on them.
EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_GAVE_UP = 3
EXIT_INTERRUPTED = 130
# What `--help` says of every command that has both backends.
MODES = (
    "Talks to the REST API after `validibot login` (or with VALIDIBOT_SERVER and VALIDIBOT_API_KEY set); "
    "otherwise directly to the local stack's buckets and Firestore."
)
DIRECT_ONLY = "Works directly on the local stack's Firestore (or the project your credentials reach), never the API."
ORG_HELP = "The org [default: the API key's org after `validibot login`, else demo]."
# Findings a human reads under a verdict; --json and `runs show --json` carry all of them.
SHOWN_FINDINGS = 50
# --wait polls quickly at first (inline validations end in well under a second), then every POLL_MAX seconds, so
# a long simulation followed over the API costs few requests against the key's rate limit.
POLL_FIRST, POLL_MAX = 0.2, 1.0


def verdict_exit_code(status: str) -> int:
    """0 passed, 1 failed validation, 2 any other end (canceled, timed out)."""
    return {RunStatus.SUCCEEDED: EXIT_PASSED, RunStatus.FAILED: EXIT_FAILED}.get(RunStatus(status), EXIT_ERROR)


class CommandError(Exception):
    """Bad input, an unknown run, a refusal: printed as `error: ...`, exit 2, by the group around every command."""


class ValidibotGroup(click.Group):
    """Every command's errors, the API's included, end the same way: a line on stderr and the documented exit code.
    Ctrl-C is caught here, before click would turn it into `Aborted!` and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (CommandError, ApiError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)


@click.group(
    cls=ValidibotGroup,
    help=f"validibot-pipeline: event-driven validation on Google Cloud, or locally on its emulators.\n\n{MODES}",
)
def main() -> None:
    pass


def _use_local_emulators_by_default(settings: Settings) -> None:
    """The local project id means the local stack: point clients at its default ports unless told otherwise."""
    if settings.project == LOCAL_PROJECT:
        for name, value in emulator_env(Ports(), settings.project).items():
            os.environ.setdefault(name, value)


@main.command()
@click.option("--pubsub-port", default=Ports.pubsub, show_default=True)
@click.option("--firestore-port", default=Ports.firestore, show_default=True)
@click.option("--storage-port", default=Ports.storage, show_default=True)
@click.option("--functions-port", default=Ports.functions, show_default=True)
@click.option("--web-port", default=Ports.web, show_default=True)
@click.option("--log-dir", default=".validibot/logs", show_default=True, type=click.Path(path_type=Path))
@click.option("--demo/--no-demo", default=True, show_default=True, help="Submit the example files once up.")
def up(
    pubsub_port: int,
    firestore_port: int,
    storage_port: int,
    functions_port: int,
    web_port: int,
    log_dir: Path,
    demo: bool,
) -> None:
    """Start emulators, pipeline functions and web; provision, seed `demo`; stop all on Ctrl-C."""
    settings = with_local_secrets(local_log_format(Settings()), SECRET_DIR)
    ports = Ports(pubsub_port, firestore_port, storage_port, functions_port, web_port)
    stack = LocalStack(ports, settings, log_dir.resolve())

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a process started in the background inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        click.echo(f"Starting emulators, pipeline functions and web (logs in {stack.log_dir}) ...")
        workflows = stack.start()
        access = seed_demo_access(Accounts(stack.services.account_store, settings))
        if demo:
            for file, workflow in _demo_submissions(stack.log_dir.parent):
                _upload(stack.services, file, DEMO_ORG, workflow)
        stack.start_ticker()
        _print_ready(stack, settings, workflows, access)
        while (failed := stack.supervisor.first_failure()) is None:
            time.sleep(0.5)
        click.echo(f"{failed.name} exited ({failed.process.returncode}); see {failed.log_path}. Stopping.", err=True)
        sys.exit(1)
    except PrerequisiteMissing as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except KeyboardInterrupt:
        click.echo("\nStopping ...")
    finally:
        stack.stop()


def _demo_submissions(build_dir: Path) -> list[tuple[Path, str]]:
    demo_fmu = build_fmu(DEMO_FMU_SCRIPT, build_dir / "fmu")
    return [
        (EXAMPLES / "building-valid.json", "json-basic"),
        (EXAMPLES / "building-invalid.json", "json-basic"),
        (EXAMPLES / "small-office.idf", "energyplus-basic"),
        (demo_fmu, "fmu-basic"),
    ]


def _print_ready(stack: LocalStack, settings: Settings, workflows: list[str], access: DemoAccess) -> None:
    exports = " ".join(f"{k}={v}" for k, v in stack.env.items())
    validibot = shlex.quote(str(Path(sys.executable).parent / "validibot"))
    click.echo(
        f"""
validibot is up.
  dashboard   {stack.web_url}/orgs/{DEMO_ORG}/runs
  functions   {stack.functions_url}   (push subscription {settings.pipeline_subscription})
  uploads     gs://{settings.inbox_bucket}/inbox/{DEMO_ORG}/<workflow>/
  storage     Cloud Storage emulator {stack.env["STORAGE_EMULATOR_HOST"]}
  workflows   {", ".join(workflows)}   (org {DEMO_ORG})
  sign in     {access.email}   password {access.password}   (admin; new on every start)
  API key     {access.key}   (executor; REST API v1 at {stack.web_url}/api/v1)

Submit a file through the REST API (in another terminal), as a hosted service's users do:
  VALIDIBOT_API_KEY=<the API key above> {validibot} login --server {stack.web_url}
  {validibot} submit examples/building-invalid.json --workflow json-basic --wait
  {validibot} submit examples/small-office.idf --workflow energyplus-basic --wait

or directly into the local stack's buckets (no login; `validibot logout` first if you logged in):
  export {exports}
  {validibot} submit examples/building-valid.json --workflow json-basic --wait

Ctrl-C stops everything."""
    )


def _upload(services: Services, file: Path, org: str, workflow: str) -> str:
    bucket = services.settings.inbox_bucket
    name = inbox_object(org, workflow, file.name)
    blob = services.storage_client.bucket(bucket).blob(name)
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    blob.upload_from_filename(str(file), content_type=content_type)
    return run_id_for(bucket, name, int(blob.generation))


@main.command("build-fmu")
@click.argument("script", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEMO_FMU_SCRIPT)
@click.option("--out", default=".validibot/fmu", show_default=True, type=click.Path(path_type=Path))
def build_fmu_command(script: Path, out: Path) -> None:
    """Build an FMU from a pythonfmu SCRIPT (default: the demo RoomHeater) and print its path."""
    click.echo(build_fmu(script, out))


# -- Two backends, one interface ---------------------------------------------------------------------------------


class Backend(Protocol):
    """What the run and workflow commands need, answered in the API's own bodies by either backend, so that each
    command has one code path and its --json output is the same document in both modes."""

    org: str
    # Where a run's page is: the web the API belongs to, or the local stack's.
    web_url: str

    def submit(self, file: Path, workflow: str, idempotency_key: str | None) -> Accepted: ...

    def run(self, run_id: str) -> RunDetail | None:
        """The run with its steps; None when there is none (yet: a submission becomes a run within moments)."""
        ...

    def findings(self, run_id: str, limit: int | None) -> list[FindingOut]: ...

    def runs(self, status: RunStatus | None, workflow: str | None, cursor: str | None, limit: int) -> RunPage: ...

    def cancel(self, run_id: str) -> Canceled: ...

    def rerun(self, run_id: str) -> Accepted: ...

    def workflows(self) -> WorkflowList: ...

    def workflow(self, slug: str, version: int | None) -> dict[str, Any]:
        """The workflow as the backend has it: the whole stored version directly, its public summary over the API."""
        ...

    def apply(self, path: Path, checked: CheckedWorkflow) -> WorkflowApplied: ...


@dataclass
class ApiBackend:
    client: ApiClient
    org: str

    @property
    def web_url(self) -> str:
        return self.client.server

    def submit(self, file: Path, workflow: str, idempotency_key: str | None) -> Accepted:
        return self.client.submit(self.org, workflow, file, idempotency_key)

    def run(self, run_id: str) -> RunDetail | None:
        return self.client.run(self.org, run_id)

    def findings(self, run_id: str, limit: int | None) -> list[FindingOut]:
        return self.client.all_findings(self.org, run_id, limit)

    def runs(self, status: RunStatus | None, workflow: str | None, cursor: str | None, limit: int) -> RunPage:
        return self.client.runs(self.org, status, workflow, cursor, limit)

    def cancel(self, run_id: str) -> Canceled:
        return self.client.cancel(self.org, run_id)

    def rerun(self, run_id: str) -> Accepted:
        return self.client.rerun(self.org, run_id)

    def workflows(self) -> WorkflowList:
        return self.client.workflows(self.org)

    def workflow(self, slug: str, version: int | None) -> dict[str, Any]:
        if version is not None:
            raise CommandError("--version reads Firestore directly; the API serves the current version only")
        return self.client.workflow(self.org, slug).model_dump(mode="json", exclude_none=True)

    def apply(self, path: Path, checked: CheckedWorkflow) -> WorkflowApplied:
        file = checked.file
        if file.org != self.org:
            # The API would answer 404, which says nothing about why.
            raise CommandError(f"{path}: the file is a workflow of org {file.org}; this API key is for org {self.org}")
        # The names were found and checked on disk by check_file: relative to the file, inside its folder.
        folder = WorkflowSource(path).folder
        names = sorted({name for step in checked.resources.values() for name in step})
        return self.client.apply_workflow(file.org, file.slug, path, {name: folder / name for name in names})


@dataclass
class DirectBackend:
    services: Services
    org: str

    @property
    def web_url(self) -> str:
        return self.services.settings.web_url

    def submit(self, file: Path, workflow: str, idempotency_key: str | None) -> Accepted:
        # An upload is its own idempotency: its run id comes from the object's generation.
        run_id = _upload(self.services, file, self.org, workflow)
        return Accepted(run_id=run_id, href=run_href(self.org, run_id))

    def run(self, run_id: str) -> RunDetail | None:
        # Not limited to self.org: whoever holds the stack's credentials sees every org (a rerun of another org's run
        # is followed like any other).
        found = self.services.run_reads.run(run_id) if is_run_id(run_id) else None
        if found is None:
            return None
        steps = [step_out(found.org, run_id, step) for step in self.services.run_reads.steps(run_id)]
        return RunDetail(**run_out(run_id, found).model_dump(), steps=steps)

    def findings(self, run_id: str, limit: int | None) -> list[FindingOut]:
        reads = self.services.run_reads
        if limit is not None:
            return [finding_out(finding) for finding in reads.findings(run_id, limit=limit)]
        found: list[FindingOut] = []
        after: str | None = None
        while True:
            page = reads.findings_page(run_id, after=after, limit=1000)
            found.extend(finding_out(finding) for _, finding in page.items)
            if page.next_after is None or not page.items:
                return found
            after = page.next_after

    def runs(self, status: RunStatus | None, workflow: str | None, cursor: str | None, limit: int) -> RunPage:
        # The cursor is the id the next page starts after: opaque to users, as the API's is. Checked first, as the
        # API checks its own: Firestore takes an id with a slash for an error, not for a position.
        if cursor is not None and not is_run_id(cursor):
            raise CommandError(f"{cursor!r} is not a cursor `validibot runs list` printed")
        page = self.services.run_reads.runs_page(self.org, status=status, workflow=workflow, after=cursor, limit=limit)
        return RunPage(items=[run_out(run_id, run) for run_id, run in page.items], next_cursor=page.next_after)

    def cancel(self, run_id: str) -> Canceled:
        from functions.operations import NotCancelable, RunNotFound

        try:
            run = self.services.operations.cancel(run_id)
        except (RunNotFound, NotCancelable) as exc:
            raise CommandError(str(exc)) from exc
        return Canceled(run_id=run_id, status=run.status)

    def rerun(self, run_id: str) -> Accepted:
        from functions.operations import NotRerunnable, RunNotFound

        try:
            new_run_id = self.services.operations.rerun(run_id)
        except (RunNotFound, NotRerunnable) as exc:
            raise CommandError(str(exc)) from exc
        original = self.services.run_reads.run(run_id)
        return Accepted(run_id=new_run_id, href=run_href(original.org if original else self.org, new_run_id))

    def workflows(self) -> WorkflowList:
        return WorkflowList(items=[workflow_out(workflow) for workflow in self.services.run_store.workflows(self.org)])

    def workflow(self, slug: str, version: int | None) -> dict[str, Any]:
        return _stored_version(self.services, self.org, slug, version).model_dump(mode="json", exclude_none=True)

    def apply(self, path: Path, checked: CheckedWorkflow) -> WorkflowApplied:
        try:
            applied = self.services.workflows.apply(checked, WorkflowSource(path).read)
        except LookupError as exc:
            raise CommandError(f"{path}: {exc.args[0]}") from exc
        return WorkflowApplied(slug=applied.slug, version=applied.version, changed=applied.changed)


def _direct_services() -> Services:
    services = Services.from_environment()
    _use_local_emulators_by_default(services.settings)
    return services


def _api_target() -> ApiTarget | None:
    try:
        saved = read_config(config_path(os.environ))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    return resolve_target(os.environ, saved)


def _backend(org: str | None) -> Backend:
    """The API when signed in (the org defaulting to the key's), else the stack directly (defaulting to demo)."""
    target = _api_target()
    if target is not None:
        client = ApiClient(target.server, target.key)
        return ApiBackend(client, org or target.org or client.whoami().org)
    return DirectBackend(_direct_services(), org or DEMO_ORG)


def _print_json(body: BaseModel | dict[str, Any]) -> None:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _with_findings(run: RunDetail, findings: list[FindingOut]) -> dict[str, Any]:
    """A run as --json prints it once it can be judged: the API's RunDetail, and its findings under `findings`."""
    return {**run.model_dump(mode="json"), "findings": [f.model_dump(mode="json") for f in findings]}


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON body (one document).")
org_option = click.option("--org", default=None, help=ORG_HELP)
timeout_option = click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits for a verdict.")


# -- Signing in ----------------------------------------------------------------------------------------------------


@main.command()
@click.option("--server", required=True, envvar=SERVER_ENV, help="The web's base URL, e.g. http://127.0.0.1:8000.")
def login(server: str) -> None:
    """Check an API key and save it for the commands that talk to the REST API. The key is read from
    VALIDIBOT_API_KEY, else asked for without echo; it is saved, with the server and the key's org, in
    $VALIDIBOT_CLI_CONFIG or ~/.validibot/cli.json (readable by you alone), and never printed."""
    key = (os.environ.get(KEY_ENV) or _prompt_key()).strip()
    if not is_api_key(key):
        raise CommandError("that is not an API key (they start with vbk_); `validibot up` prints one")
    client = ApiClient(server, key)
    caller = client.whoami()
    path = config_path(os.environ)
    write_config(path, ApiTarget(client.server, key, caller.org))
    click.echo(f"signed in to {client.server} as org {caller.org} (role {caller.role}, key {caller.key_id})")


def _prompt_key() -> str:
    try:
        return str(click.prompt("API key", hide_input=True))
    except click.Abort:
        # click turns both Ctrl-C and end of input into Abort: without a terminal it can only be the latter.
        if not sys.stdin.isatty():
            raise CommandError(f"no API key: set {KEY_ENV}, or run `validibot login` in a terminal") from None
        raise KeyboardInterrupt from None


@main.command()
def logout() -> None:
    """Forget the saved API key: commands work directly on the local stack again."""
    path = config_path(os.environ)
    if path.exists():
        path.unlink()
        click.echo(f"signed out (removed {path})")
    else:
        click.echo(f"not signed in ({path} does not exist)")
    if os.environ.get(SERVER_ENV) and os.environ.get(KEY_ENV):
        click.echo(f"{SERVER_ENV} and {KEY_ENV} are still set: commands still talk to the API", err=True)


# -- Runs ----------------------------------------------------------------------------------------------------------


@main.command(help=f"Submit FILE to a workflow and print the run id; with --wait, follow it to its verdict.\n\n{MODES}")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workflow", "-w", required=True, help="Workflow slug, e.g. json-basic.")
@org_option
@click.option("--wait", is_flag=True, help="Follow the run; exit 0 SUCCEEDED, 1 FAILED, 2 otherwise, 3 no verdict.")
@timeout_option
@click.option(
    "--idempotency-key",
    help="API mode: submit under this key (default: a new one); a repeat with the same key and file gets the same run.",
)
@json_option
def submit(
    file: Path,
    workflow: str,
    org: str | None,
    wait: bool,
    timeout: float,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    backend = _backend(org)
    accepted = backend.submit(file, workflow, idempotency_key)
    _accepted(backend, accepted, wait, timeout, as_json)


def _accepted(backend: Backend, accepted: Accepted, wait: bool, timeout: float, as_json: bool) -> None:
    """A new run: its id (or the API's body), then, with --wait, its verdict."""
    if not wait:
        if as_json:
            _print_json(accepted)
        else:
            click.echo(accepted.run_id)
        return
    if not as_json:
        click.echo(accepted.run_id)
    _wait_for_verdict(backend, accepted, timeout, as_json)


def _wait_for_verdict(backend: Backend, accepted: Accepted, timeout: float, as_json: bool) -> NoReturn:
    """Follow the run to its verdict; exit 0 SUCCEEDED, 1 FAILED, 2 canceled or timed out, 3 gave up waiting."""
    deadline = time.monotonic() + timeout
    pause = POLL_FIRST
    run = None
    while True:
        try:
            run = backend.run(accepted.run_id) or run
        except ApiError as exc:
            # No answer, or the server's own trouble, is a reason to ask again until the deadline (then exit 3);
            # a refusal (the key revoked, say) will not change by waiting.
            if exc.status and exc.status < 500 and exc.status != 429:
                raise
        if run is not None and RunStatus(run.status).is_terminal:
            findings = backend.findings(run.run_id, None if as_json else SHOWN_FINDINGS)
            if as_json:
                _print_json(_with_findings(run, findings))
            else:
                _print_verdict(run, findings, backend.web_url)
            sys.exit(verdict_exit_code(run.status))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(POLL_MAX, pause * 1.5)
    if as_json:
        # Still one document: what is known of the run, for a script to follow it later.
        _print_json(run if run is not None else accepted)
    state = f"the run is {run.status}" if run is not None else "the run has not started"
    hint = "is the stack up?" if isinstance(backend, DirectBackend) else f"validibot runs show {accepted.run_id}"
    click.echo(f"no verdict after {timeout:g}s: {state} ({hint})", err=True)
    sys.exit(EXIT_GAVE_UP)


def _print_verdict(run: RunDetail, findings: list[FindingOut], web_url: str) -> None:
    click.echo(f"{run.status}  {run.submission_name}  ({run.duration_ms} ms)")
    if run.error:
        click.echo(f"  {run.error_category}: {run.error}")
    _print_findings(findings[:SHOWN_FINDINGS])
    for step in run.steps:
        for metric in step.metrics:
            click.echo(f"  metric  {metric.name} = {metric.value:g}{f' {metric.unit}' if metric.unit else ''}")
        for artifact in step.artifacts:
            click.echo(f"  file    {artifact.name}  ({artifact.size_bytes} bytes)")
    click.echo(f"  details: {web_url}/orgs/{run.org}/runs/{run.run_id}")


def _print_findings(findings: list[FindingOut]) -> None:
    for finding in findings:
        where = finding.location.path if finding.location and finding.location.path is not None else ""
        click.echo(f"  {finding.severity:<7} {where or '/'}  {finding.message}")


@main.command(help=f"Cancel a run: its step is stopped, its job killed, the run ends CANCELED.\n\n{MODES}")
@click.argument("run_id")
@org_option
@json_option
def cancel(run_id: str, org: str | None, as_json: bool) -> None:
    canceled = _backend(org).cancel(run_id)
    if as_json:
        _print_json(canceled)
    else:
        click.echo(f"{canceled.status}  {run_id}")


@main.command(
    help=f"Run a run's stored submission again, as a new run linked to it (rerun_of); print the new run id.\n\n{MODES}"
)
@click.argument("run_id")
@org_option
@click.option("--wait", is_flag=True, help="Follow the new run; exit 0 SUCCEEDED, 1 FAILED, 2 otherwise, 3 no verdict.")
@timeout_option
@json_option
def rerun(run_id: str, org: str | None, wait: bool, timeout: float, as_json: bool) -> None:
    backend = _backend(org)
    _accepted(backend, backend.rerun(run_id), wait, timeout, as_json)


@main.group(help=f"Runs of an org: list them, show one with its steps and findings.\n\n{MODES}")
def runs() -> None:
    pass


@runs.command("list", help=f"The org's runs, newest first, a page at a time.\n\n{MODES}")
@org_option
@click.option("--status", type=click.Choice([s.value for s in RunStatus], case_sensitive=False), help="Only these.")
@click.option("--workflow", "-w", help="Only runs of this workflow slug.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200), help="Runs per page.")
@click.option("--cursor", help="The page after the one that printed this cursor.")
@json_option
def runs_list(
    org: str | None, status: str | None, workflow: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    backend = _backend(org)
    page = backend.runs(RunStatus(status.upper()) if status else None, workflow, cursor, limit)
    if as_json:
        _print_json(page)
        return
    for run in page.items:
        click.echo(_run_line(run))
    if page.next_cursor:
        # On stderr: stdout stays one run per line, for scripts.
        click.echo(f"more: validibot runs list --cursor {page.next_cursor}", err=True)


def _run_line(run: RunOut) -> str:
    created = run.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    counts = f"{run.counts.ERROR}E {run.counts.WARNING}W"
    return f"{run.run_id}  {run.status:<9}  {created}  {run.workflow}  {counts}  {run.submission_name}"


@runs.command("show", help=f"A run with its steps, metrics, files and findings.\n\n{MODES}")
@click.argument("run_id")
@org_option
@json_option
def runs_show(run_id: str, org: str | None, as_json: bool) -> None:
    backend = _backend(org)
    run = backend.run(run_id)
    if run is None:
        raise CommandError(f"no run {run_id} in org {backend.org}")
    findings = backend.findings(run_id, None if as_json else SHOWN_FINDINGS)
    if as_json:
        _print_json(_with_findings(run, findings))
        return
    version = f" v{run.workflow_version}" if run.workflow_version is not None else ""
    click.echo(f"{run.run_id}  {run.status}  {run.workflow}{version}  {run.submission_name}")
    ended = f"  ended {run.ended_at:%Y-%m-%d %H:%M:%S}  ({run.duration_ms} ms)" if run.ended_at else ""
    click.echo(f"  created {run.created_at:%Y-%m-%d %H:%M:%S}{ended}")
    if run.rerun_of:
        click.echo(f"  rerun of {run.rerun_of}")
    if run.error:
        click.echo(f"  {run.error_category}: {run.error}")
    for step in run.steps:
        counts = f"{step.counts.ERROR} errors, {step.counts.WARNING} warnings"
        click.echo(f"  step {step.number}  {step.key} ({step.validator})  {step.status}  {counts}")
        if step.error:
            click.echo(f"    {step.error}")
        for metric in step.metrics:
            click.echo(f"    metric  {metric.name} = {metric.value:g}{f' {metric.unit}' if metric.unit else ''}")
        for artifact in step.artifacts:
            click.echo(f"    file    {artifact.name}  ({artifact.size_bytes} bytes)")
    _print_findings(findings)
    click.echo(f"  details: {backend.web_url}/orgs/{run.org}/runs/{run.run_id}")


@main.command()
@click.option("--once", is_flag=True, required=True, help="Run one tick now, in this process (the stack ticks itself).")
def maintain(once: bool) -> None:
    """Run the maintenance sweeps of one tick and print what each changed."""
    services = Services(with_local_secrets(Settings(), SECRET_DIR))
    _use_local_emulators_by_default(services.settings)
    report = services.pipeline.tick()
    for name, count in sorted(report.items()):
        click.echo(f"{name}: {count}")
    if not report:
        click.echo("nothing to do")


@main.command()
@click.option("--samples", default=60, show_default=True, help="Sequential uploads per latency figure.")
@click.option("--burst", default=1000, show_default=True, help="Uploads in the throughput burst.")
@click.option(
    "--energyplus-samples", default=5, show_default=True, help="EnergyPlus runs, direct and via the pipeline."
)
@click.option("--log-dir", default=".validibot/bench-logs", show_default=True, type=click.Path(path_type=Path))
def bench(samples: int, burst: int, energyplus_samples: int, log_dir: Path) -> None:
    """Measure the pipeline on a fresh local stack; print one JSON line."""
    from deploy.bench import run_benchmark

    click.echo(run_benchmark(samples, burst, energyplus_samples, log_dir.resolve()))


# -- Workflows -----------------------------------------------------------------------------------------------------


@main.group()
def workflows() -> None:
    """Workflows as files (DESIGN §12): apply, list, show, export, validate, and the file format's JSON Schema.
    apply, list and show talk to the REST API after `validibot login`; otherwise, like export, directly to the
    local stack's buckets and Firestore."""


def _report(problems: list[WorkflowProblem]) -> None:
    for problem in problems:
        click.echo(f"error: {problem}", err=True)


@workflows.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def workflows_validate(paths: tuple[Path, ...]) -> None:
    """Check workflow files offline (no stack needed): every problem, with file, step and field; exit 2 if any."""
    failed = False
    for path in workflow_paths(list(paths)):
        checked, problems = check_file(path)
        _report(problems)
        failed = failed or checked is None
        if checked is not None:
            click.echo(f"ok  {path}  ({checked.file.org}/{checked.file.slug}, {len(checked.file.steps)} steps)")
    sys.exit(2 if failed else 0)


@workflows.command(
    "apply",
    help="Apply workflow files (or folders of them) with their resource files: unchanged content is a no-op, "
    f"changed content a new version. Nothing is applied when any file has a problem (exit 2).\n\n{MODES}",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@json_option
def workflows_apply(paths: tuple[Path, ...], as_json: bool) -> None:
    files = workflow_paths(list(paths))
    checked = [(path, *check_file(path)) for path in files]
    problems = [problem for _, _, found in checked for problem in found]
    if problems:
        _report(problems)
        sys.exit(EXIT_ERROR)
    # Each file names its org: directly, that is where it goes; over the API, it must be the key's org.
    backend = _backend(None)
    applied_all: list[WorkflowApplied] = []
    for path, workflow, _ in checked:
        assert workflow is not None
        applied = backend.apply(path, workflow)
        applied_all.append(applied)
        if not as_json:
            state = "applied" if applied.changed else "unchanged"
            click.echo(f"{state}  {workflow.file.org}/{applied.slug}  version {applied.version}")
    if as_json:
        _print_json({"items": [applied.model_dump(mode="json") for applied in applied_all]})


@workflows.command("list", help=f"The org's workflows: slug, current version, name, steps.\n\n{MODES}")
@org_option
@json_option
def workflows_list(org: str | None, as_json: bool) -> None:
    listed = _backend(org).workflows()
    if as_json:
        _print_json(listed)
        return
    for workflow in listed.items:
        steps = ", ".join(f"{step.key} ({step.validator})" for step in workflow.steps)
        click.echo(f"{workflow.slug}  v{workflow.version}  {workflow.name}  [{steps}]")


def _stored_version(services: Services, org: str, slug: str, version: int | None) -> WorkflowDoc:
    store = services.run_store
    found = store.workflow(org, slug) if version is None else store.workflow_version(org, slug, version)
    if found is None:
        raise CommandError(f"no workflow {org}/{slug}" + (f" version {version}" if version else ""))
    return found


@workflows.command(
    "show",
    help="A workflow's current version (or, directly, a past one): directly, as stored, with its steps' pinned "
    f"resource files; over the API, its public summary.\n\n{MODES}",
)
@click.argument("slug")
@org_option
@click.option("--version", "version", type=int, help="A past version (default: the current one); direct mode only.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def workflows_show(slug: str, org: str | None, version: int | None, as_json: bool) -> None:
    click.echo(dump(_backend(org).workflow(slug, version), as_json), nl=False)


@workflows.command("export")
@click.argument("slug")
@click.option("--org", default=DEMO_ORG, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def workflows_export(slug: str, org: str, as_json: bool) -> None:
    """The current version as a workflow file (resource files are named, not included). Reads Firestore directly,
    also after `validibot login`: the API does not serve whole versions."""
    click.echo(dump(exported(_stored_version(_direct_services(), org, slug, None)), as_json), nl=False)


@workflows.command("schema")
def workflows_schema() -> None:
    """The JSON Schema of the workflow file format."""
    click.echo(json.dumps(WorkflowFile.model_json_schema(), indent=2))


# -- Orgs, people and API keys (admin, directly on Firestore) ------------------------------------------------------

role_option = click.option(
    "--role", required=True, type=click.Choice([r.value for r in Role], case_sensitive=False), help="Their role."
)


def _accounts(org: str) -> Accounts:
    """Accounts on the stack's Firestore, for an org that exists (a key or member of none would be unusable)."""
    if not is_slug(org):
        raise CommandError(f"{org!r} is not an org id (lowercase letters, digits and dashes, 1-63)")
    services = _direct_services()
    if services.run_store.org(org) is None:
        raise CommandError(f"there is no org {org!r}; `validibot orgs create {org} --name NAME` makes it")
    return Accounts(services.account_store, services.settings)


@main.group(help=f"Organizations (DESIGN §14): every run, workflow and resource file belongs to one.\n\n{DIRECT_ONLY}")
def orgs() -> None:
    pass


@orgs.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="The organization's name, as people read it.")
def orgs_create(slug: str, name: str) -> None:
    """Create the organization SLUG (lowercase letters, digits, dashes); exit 2 if it exists or SLUG is not one."""
    if not is_slug(slug):
        click.echo(f"error: {slug!r} is not an org id (lowercase letters, digits and dashes, 1-63)", err=True)
        sys.exit(2)
    services = Services.from_environment()
    _use_local_emulators_by_default(services.settings)
    try:
        services.run_store.commit([Write(org_path(slug), OrgDoc(name=name, created_at=datetime.now(UTC)), "create")])
    except Conflict:
        click.echo(f"error: org {slug!r} exists already", err=True)
        sys.exit(2)
    click.echo(f"created  org {slug}")


@main.group(help=f"People, who sign in to the web with email and password.\n\n{DIRECT_ONLY}")
def users() -> None:
    pass


@users.command("create")
@click.option("--org", required=True, help="The org they are a member of.")
@click.option("--email", required=True, help="Their email, which they sign in with.")
@role_option
def users_create(org: str, email: str, role: str) -> None:
    """Create a user, member of ORG with ROLE, and print their generated password as the last line (shown once:
    only its hash is stored). Exit 2 if the org does not exist or the user does."""
    accounts = _accounts(org)
    try:
        password = accounts.create_user(org, email, Role(role.lower()))
    except (AccountExists, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    click.echo(f"created  user {email.strip().lower()}  ({role.lower()} in org {org}); their password, shown once:")
    click.echo(password)


@main.group(help=f"API keys, which programs and `validibot login` use (one org and role each).\n\n{DIRECT_ONLY}")
def keys() -> None:
    pass


@keys.command("create")
@click.option("--org", required=True, help="The org the key acts in.")
@role_option
@click.option("--name", default="created with validibot keys create", show_default=True, help="What it is for.")
def keys_create(org: str, role: str, name: str) -> None:
    """Create an API key for ORG with ROLE and print it as the last line (shown once: only its sha256 is stored)."""
    key = _accounts(org).create_key(org, Role(role.lower()), name, "validibot keys create")
    click.echo(f"created  key {key_id(key_hash(key))}  ({role.lower()} in org {org}, {name!r}); the key, shown once:")
    click.echo(key)


@keys.command("list")
@click.option("--org", required=True)
@json_option
def keys_list(org: str, as_json: bool) -> None:
    """The org's keys, revoked ones included: id, name, role, when made and last used. Never the keys themselves."""
    listed = [
        {
            "key_id": listing.key_id,
            "name": listing.key.name,
            "role": Role(listing.key.role).value,
            "created_at": listing.key.created_at.isoformat(),
            "last_used_at": listing.key.last_used_at.isoformat() if listing.key.last_used_at else None,
            "revoked": listing.key.revoked_at is not None,
            "revoked_at": listing.key.revoked_at.isoformat() if listing.key.revoked_at else None,
        }
        for listing in _accounts(org).keys(org)
    ]
    if as_json:
        _print_json({"items": listed})
        return
    for key in listed:
        state = f"revoked {key['revoked_at']}" if key["revoked"] else f"last used {key['last_used_at'] or 'never'}"
        click.echo(f"{key['key_id']}  {key['role']:<8}  created {key['created_at']}  {state}  {key['name']}")


@keys.command("revoke")
@click.argument("key_id_", metavar="KEY_ID")
@click.option("--org", required=True)
def keys_revoke(key_id_: str, org: str) -> None:
    """Revoke the org's key KEY_ID (as `keys list` shows it): requests with it are refused (401) at once."""
    try:
        _accounts(org).revoke_key(org, key_id_)
    except LookupError as exc:
        raise CommandError(str(exc.args[0])) from exc
    click.echo(f"revoked  key {key_id_}  (org {org})")


@main.command()
@click.option("--project", required=True, help="The Google Cloud project to deploy into.")
@click.option("--region", required=True, help="Where every regional resource goes, e.g. europe-west1.")
@click.option("--stage", required=True, help="dev, prod, ...: in every resource's name, so stages can share a project.")
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (create / update / unchanged per resource); change nothing."
)
@click.option("--job-memory", multiple=True, metavar="TYPE=SIZE", help="A validator job's memory, e.g. energyplus=8Gi.")
@click.option("--source", help="The build's identity (default: the git commit): image tag and service label.")
def deploy(
    project: str, region: str, stage: str, dry_run: bool, job_memory: tuple[str, ...], source: str | None
) -> None:
    """Plan every resource of DESIGN §15 in PROJECT and apply the plan: each is read, then created or updated, or
    left alone when it matches; a second deploy changes nothing. Needs gcloud, signed in with rights to the project."""
    from deploy.gcp import DeployConfig, Gcloud, GcloudFailed, Planner, apply, plan, project_number, write_lifecycles

    memory = dict(item.split("=", 1) for item in job_memory if "=" in item)
    if len(memory) != len(job_memory) or not set(memory) <= set(REGISTERED):
        raise CommandError(f"--job-memory takes TYPE=SIZE with TYPE one of {', '.join(sorted(REGISTERED))}")
    if shutil.which("gcloud") is None:
        raise CommandError("gcloud is not on PATH: install the Google Cloud CLI (README: the two commands)")
    gcloud = Gcloud()
    try:
        config = DeployConfig(project, region, stage, source or _source_identity(), job_memory=memory)
        actions = list(plan(Planner(config, project_number(gcloud, project)).resources(), gcloud))
        for action in actions:
            click.echo(action.line())
        counts = {verb: sum(a.verb == verb for a in actions) for verb in ("create", "update", "unchanged")}
        click.echo(f"plan: {counts['create']} to create, {counts['update']} to update, {counts['unchanged']} unchanged")
        if dry_run:
            return
        write_lifecycles()
        for action in actions:
            if action.verb != "unchanged":
                click.echo(f"applying: {action.line()}")
                apply(action, gcloud, secret=lambda: secrets.token_urlsafe(48))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    except GcloudFailed as exc:
        raise CommandError(f"gcloud refused: {exc}") from exc
    click.echo("deployed" if any(a.verb != "unchanged" for a in actions) else "nothing to change")


def _source_identity() -> str:
    """The commit; with uncommitted changes, also a digest of them, so the build differs when the source does."""
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0 or not head.stdout.strip():
        return "unversioned"
    changes = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True).stdout
    dirty = f"-dirty-{hashlib.sha256(changes).hexdigest()[:8]}" if changes else ""
    return head.stdout.strip() + dirty


# What `validibot destroy` removes, newest first; bindings go with their resources, Firestore and the enabled APIs
# stay (deleting a database is a decision of its own, in the console).
DESTROYED = ("scheduler-job", "subscription", "service", "job", "repository", "secret", "topic", "bucket")


@main.command()
@click.option("--project", required=True)
@click.option("--region", required=True)
@click.option("--stage", required=True)
def destroy(project: str, region: str, stage: str) -> None:
    """Delete STAGE's scheduler job, subscriptions, services, jobs, image repository, secrets, topics and buckets
    (with their files) in PROJECT, after you type the project id to confirm. Firestore's data, the service accounts,
    the custom roles, the bindings and the enabled APIs stay."""
    from deploy.gcp import DeployConfig, Gcloud, GcloudFailed, Planner, project_number

    typed = click.prompt(f"This deletes stage {stage} of project {project}, its buckets' files included. Project id")
    if typed != project:
        raise CommandError("the project id did not match; nothing was deleted")
    gcloud = Gcloud()
    try:
        resources = Planner(
            DeployConfig(project, region, stage, "destroy"), project_number(gcloud, project)
        ).resources()
    except (ValueError, GcloudFailed) as exc:
        raise CommandError(str(exc)) from exc
    for resource in reversed(resources):
        if resource.kind not in DESTROYED or gcloud.read(resource.read) is None:
            continue
        if resource.kind == "bucket":
            argv = ["gcloud", "storage", "rm", "--recursive", f"gs://{resource.name}", f"--project={project}"]
        else:
            verb = resource.read.index("describe")
            argv = [*resource.read[:verb], "delete", *[a for a in resource.read[verb + 1 :] if a != "--format=json"]]
            argv.append("--quiet")
        click.echo(f"deleting  {resource.kind:<20} {resource.name}")
        try:
            gcloud.run(argv)
        except GcloudFailed as exc:
            raise CommandError(f"gcloud refused: {exc}") from exc
    click.echo("destroyed")
