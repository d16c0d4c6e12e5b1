"""The `validibot` command: bring up the local stack, submit files, benchmark."""

from __future__ import annotations

import json
import mimetypes
import os
import shlex
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click

from bootstrap import Services
from deploy.fmu_build import build_fmu
from deploy.provision import DEMO_ORG, DemoAccess, seed_demo_access
from deploy.stack import LocalStack, Ports, PrerequisiteMissing, emulator_env, with_local_secrets
from deploy.workflow_files import WorkflowSource, check_file, dump, exported, workflow_paths
from functions.workflows import WorkflowProblem
from schemas.changes import Write, org_path
from schemas.documents import OrgDoc, RunDoc, WorkflowDoc
from schemas.enums import RunStatus
from schemas.paths import inbox_object, is_slug, run_id_for
from schemas.settings import Settings
from schemas.workflow_file import WorkflowFile
from store.ports import Conflict, RunReads
from web.accounts import Accounts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_FMU_SCRIPT = EXAMPLES / "fmu" / "RoomHeater.py"
LOCAL_PROJECT = "validibot-local"
# Where `validibot up` keeps its signing secret: under the home folder, which engines' sandboxes hide, not in the
# checkout, which they may see.
SECRET_DIR = Path.home() / ".validibot"


@click.group()
def main() -> None:
    """validibot-pipeline: event-driven validation on Google Cloud, or locally on its emulators."""


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
    settings = with_local_secrets(Settings(), SECRET_DIR)
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

Submit a file (in another terminal):
  export {exports}
  {validibot} submit examples/building-invalid.json --workflow json-basic --wait
  {validibot} submit examples/small-office.idf --workflow energyplus-basic --wait

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


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workflow", "-w", required=True, help="Workflow slug, e.g. json-basic.")
@click.option("--org", default=DEMO_ORG, show_default=True)
@click.option("--wait", is_flag=True, help="Follow the run; exit 0 SUCCEEDED, 1 FAILED, 2 otherwise, 3 no verdict.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits for a verdict.")
def submit(file: Path, workflow: str, org: str, wait: bool, timeout: float) -> None:
    """Upload FILE to inbox/ORG/WORKFLOW/ and print the run id."""
    services = Services.from_environment()
    _use_local_emulators_by_default(services.settings)
    run_id = _upload(services, file, org, workflow)
    click.echo(run_id)
    if wait:
        _wait_for_verdict(services, run_id, timeout)


def _wait_for_verdict(services: Services, run_id: str, timeout: float) -> None:
    """Follow the run to its verdict; exit 0 SUCCEEDED, 1 FAILED, 2 canceled or timed out, 3 gave up waiting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = services.run_reads.run(run_id)
        if found is not None and RunStatus(found.status).is_terminal:
            _print_verdict(services.run_reads, run_id, found, services.settings.web_url)
            sys.exit({RunStatus.SUCCEEDED: 0, RunStatus.FAILED: 1}.get(RunStatus(found.status), 2))
        time.sleep(0.2)
    click.echo(f"no verdict after {timeout:.0f}s (is the stack up?)", err=True)
    sys.exit(3)


@main.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel a run: its step is stopped, its job killed, the run ends CANCELED (exit 0; 2 if it cannot be)."""
    from functions.operations import NotCancelable, RunNotFound

    services = Services.from_environment()
    _use_local_emulators_by_default(services.settings)
    try:
        run = services.operations.cancel(run_id)
    except (RunNotFound, NotCancelable) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{run.status}  {run_id}")


@main.command()
@click.argument("run_id")
@click.option("--wait", is_flag=True, help="Follow the new run; exit 0 SUCCEEDED, 1 FAILED, 2 otherwise, 3 no verdict.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits for a verdict.")
def rerun(run_id: str, wait: bool, timeout: float) -> None:
    """Run a run's pinned submission again, as a new run linked to it (rerun_of); print the new run id."""
    from functions.operations import NotRerunnable, RunNotFound

    services = Services.from_environment()
    _use_local_emulators_by_default(services.settings)
    try:
        new_run_id = services.operations.rerun(run_id)
    except (RunNotFound, NotRerunnable) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(new_run_id)
    if wait:
        _wait_for_verdict(services, new_run_id, timeout)


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


def _print_verdict(reads: RunReads, run_id: str, run: RunDoc, web_url: str) -> None:
    click.echo(f"{run.status}  {run.submission_name}  ({run.duration_ms} ms)")
    if run.error:
        click.echo(f"  {run.error_category}: {run.error}")
    for finding in reads.findings(run_id, limit=50):
        where = finding.location.path if finding.location and finding.location.path is not None else ""
        click.echo(f"  {finding.severity:<7} {where or '/'}  {finding.message}")
    for step in reads.steps(run_id):
        for metric in step.metrics:
            click.echo(f"  metric  {metric.name} = {metric.value:g}{f' {metric.unit}' if metric.unit else ''}")
        for artifact in step.artifacts:
            click.echo(f"  file    {artifact.name}  ({artifact.size_bytes} bytes)")
    click.echo(f"  details: {web_url}/orgs/{run.org}/runs/{run_id}")


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


@main.group()
def workflows() -> None:
    """Workflows as files (DESIGN §12): apply, list, show, export, validate, and the file format's JSON Schema."""


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


@workflows.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def workflows_apply(paths: tuple[Path, ...]) -> None:
    """Apply workflow files (or folders of them): unchanged content is a no-op, changed content a new version.
    Nothing is applied when any file has a problem (exit 2)."""
    files = workflow_paths(list(paths))
    checked = [(path, *check_file(path)) for path in files]
    problems = [problem for _, _, found in checked for problem in found]
    if problems:
        _report(problems)
        sys.exit(2)
    services = Services.from_environment()
    _use_local_emulators_by_default(services.settings)
    for path, workflow, _ in checked:
        assert workflow is not None
        try:
            applied = services.workflows.apply(workflow, WorkflowSource(path).read)
        except LookupError as exc:
            click.echo(f"error: {path}: {exc.args[0]}", err=True)
            sys.exit(2)
        state = "applied" if applied.changed else "unchanged"
        click.echo(f"{state}  {workflow.file.org}/{applied.slug}  version {applied.version}")


@workflows.command("list")
@click.option("--org", default=DEMO_ORG, show_default=True)
def workflows_list(org: str) -> None:
    """The org's workflows: slug, current version, steps, name."""
    services = Services.from_environment()
    _use_local_emulators_by_default(services.settings)
    for workflow in services.run_store.workflows(org):
        steps = ", ".join(f"{step.key} ({step.validator})" for step in workflow.steps)
        click.echo(f"{workflow.slug}  v{workflow.version}  {workflow.name}  [{steps}]")


def _version(org: str, slug: str, version: int | None) -> WorkflowDoc:
    services = Services.from_environment()
    _use_local_emulators_by_default(services.settings)
    store = services.run_store
    found = store.workflow(org, slug) if version is None else store.workflow_version(org, slug, version)
    if found is None:
        click.echo(f"error: no workflow {org}/{slug}" + (f" version {version}" if version else ""), err=True)
        sys.exit(2)
    return found


@workflows.command("show")
@click.argument("slug")
@click.option("--org", default=DEMO_ORG, show_default=True)
@click.option("--version", "version", type=int, help="A past version (default: the current one).")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def workflows_show(slug: str, org: str, version: int | None, as_json: bool) -> None:
    """A version as stored: its number, when it was applied, its steps with their pinned resource files."""
    click.echo(dump(_version(org, slug, version).model_dump(mode="json", exclude_none=True), as_json), nl=False)


@workflows.command("export")
@click.argument("slug")
@click.option("--org", default=DEMO_ORG, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def workflows_export(slug: str, org: str, as_json: bool) -> None:
    """The current version as a workflow file (resource files are named, not included)."""
    click.echo(dump(exported(_version(org, slug, None)), as_json), nl=False)


@workflows.command("schema")
def workflows_schema() -> None:
    """The JSON Schema of the workflow file format."""
    click.echo(json.dumps(WorkflowFile.model_json_schema(), indent=2))


@main.group()
def orgs() -> None:
    """Organizations (DESIGN §14): every run, workflow and resource file belongs to one."""


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
