"""`validibot workflows` against the emulators: apply (twice: a no-op), a changed resource file making version 2
while a run started on version 1 keeps it, list, show, export, validate; and bad files refused, every problem named."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from deploy.stack import LocalStack
from schemas.enums import RunStatus
from tests.support import CREATED, Harness, cli

pytestmark = pytest.mark.integration

WORKFLOW = """\
org: demo
slug: {slug}
name: Site survey
steps:
  - key: survey
    name: Survey document
    validator: json-schema
    config:
      schema: schemas/survey.json
      resources: ["schemas/defs/*.json"]
"""
SURVEY = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.org/survey.json",
    "type": "object",
    "required": ["site"],
    "properties": {"site": {"$ref": "defs/site.json"}},
}


def site_schema(max_floors: int) -> dict:
    return {
        "$id": "https://example.org/defs/site.json",
        "type": "object",
        "properties": {"floors": {"type": "integer", "maximum": max_floors}},
    }


def write_workflow(folder: Path, slug: str, max_floors: int) -> Path:
    (folder / "schemas" / "defs").mkdir(parents=True, exist_ok=True)
    (folder / "schemas" / "survey.json").write_text(json.dumps(SURVEY))
    (folder / "schemas" / "defs" / "site.json").write_text(json.dumps(site_schema(max_floors)))
    path = folder / f"{slug}.yaml"
    path.write_text(WORKFLOW.format(slug=slug))
    return path


def test_apply_versions_and_a_run_keeps_the_version_it_started_with(
    emulators: LocalStack, harness: Harness, tmp_path: Path
) -> None:
    slug = "site-survey"
    path = write_workflow(tmp_path, slug, max_floors=10)

    first = cli(emulators, "workflows", "apply", str(tmp_path))
    again = cli(emulators, "workflows", "apply", str(path))
    assert first.stdout.strip() == f"applied  demo/{slug}  version 1", first.stderr
    assert again.stdout.strip() == f"unchanged  demo/{slug}  version 1", again.stderr

    event, run_id = harness.submit(b'{"site": {"floors": 12}}', slug)
    assert harness.pipeline.handle(event) == CREATED

    (tmp_path / "schemas" / "defs" / "site.json").write_text(json.dumps(site_schema(max_floors=20)))
    second = cli(emulators, "workflows", "apply", str(path))
    assert second.stdout.strip() == f"applied  demo/{slug}  version 2", second.stderr

    # The run started on version 1 validates against version 1's pinned files (12 floors > 10) ...
    harness.pipeline.handle(harness.input_event(run_id))
    harness.pipeline.handle(harness.output_event(run_id))
    run = harness.store.run(run_id).doc
    assert (run.workflow.version, run.status, run.counts.ERROR) == (1, RunStatus.FAILED, 1)
    # ... and a new run uses version 2 (12 floors <= 20).
    _, later = harness.run_through(b'{"site": {"floors": 12}}', slug)
    assert (later.workflow.version, later.status) == (2, RunStatus.SUCCEEDED)

    listed = cli(emulators, "workflows", "list")
    assert any(
        line.startswith(f"{slug}  v2  Site survey  [survey (json-schema)]") for line in listed.stdout.splitlines()
    )
    shown = yaml.safe_load(cli(emulators, "workflows", "show", slug, "--version", "1").stdout)
    names = [ref["name"] for ref in shown["steps"][0]["resource_files"]]
    assert (shown["version"], names) == (1, ["schemas/survey.json", "schemas/defs/site.json"])
    exported = tmp_path / "exported.yaml"
    exported.write_text(cli(emulators, "workflows", "export", slug).stdout)
    assert yaml.safe_load(exported.read_text())["steps"][0]["config"]["schema"] == "schemas/survey.json"
    valid = cli(emulators, "workflows", "validate", str(exported))
    assert valid.returncode == 0, valid.stderr


def test_bad_workflow_files_are_refused_naming_file_step_and_field(emulators: LocalStack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """\
org: demo
slug: bad-one
name: Bad
steps:
  - key: survey
    name: Survey
    validator: json-schema
    config: {schema: schemas/missing.json, colour: red}
  - key: survey
    name: Again
    validator: no-such-validator
  - key: sim
    name: Simulation
    validator: energyplus
    assertions:
      - {id: eui, expr: "o.site_eui <="}
      - {id: gas, expr: "o.site_gas < 10.0"}
"""
    )
    slug = tmp_path / "slug.yaml"
    slug.write_text("org: demo\nslug: Not_A_Slug\nname: x\nsteps: [{key: a, name: a, validator: json-schema}]\n")

    refused = cli(emulators, "workflows", "apply", str(bad), str(slug))

    assert refused.returncode == 2
    errors = refused.stderr.splitlines()
    assert (
        f"error: {bad}: step 'survey': config.schema: no resource file 'schemas/missing.json' next to the workflow file"
        in errors
    )
    assert f"error: {bad}: step 'survey': config.colour: Extra inputs are not permitted" in errors
    assert f"error: {bad}: step 'survey': key: the key is used by an earlier step; keys must be unique" in errors
    assert any(
        e.startswith(f"error: {bad}: step 'survey': validator: unknown validator 'no-such-validator'") for e in errors
    )
    assert any(
        e.startswith(f"error: {bad}: step 'sim': assertions[0].expr: assertion 'eui': 'o.site_eui <=' is not valid CEL")
        for e in errors
    )
    assert any(
        e.startswith(f"error: {bad}: step 'sim': assertions[1].expr: energyplus reports no site_gas") for e in errors
    )
    assert any(e.startswith(f"error: {slug}: slug: String should match pattern") for e in errors)
    assert refused.stdout == ""  # nothing applied


def test_a_new_org_is_created_once_and_then_takes_workflows(emulators: LocalStack, tmp_path: Path) -> None:
    org = f"team-{uuid.uuid4().hex[:8]}"
    workflow = tmp_path / "check.yaml"
    workflow.write_text(
        f"org: {org}\nslug: check\nname: Check\n"
        "steps: [{key: a, name: A, validator: json-schema, config: {schema: true}}]\n"
    )

    before = cli(emulators, "workflows", "apply", str(workflow))
    created = cli(emulators, "orgs", "create", org, "--name", "A team")
    again = cli(emulators, "orgs", "create", org, "--name", "Another")
    applied = cli(emulators, "workflows", "apply", str(workflow))

    assert (before.returncode, before.stderr.strip()) == (2, f"error: {workflow}: no org '{org}'; create it first")
    assert (created.returncode, created.stdout.strip()) == (0, f"created  org {org}")
    assert (again.returncode, again.stderr.strip()) == (2, f"error: org '{org}' exists already")
    assert applied.stdout.strip() == f"applied  {org}/check  version 1"
    assert cli(emulators, "orgs", "create", "Not_A_Slug", "--name", "x").returncode == 2
