"""The whole local stack, as a user meets it: `validibot submit`, a plain client upload, the dashboard."""

from __future__ import annotations

import re
import time

import pytest

from deploy.stack import LocalStack
from schemas.enums import RunStatus
from schemas.paths import inbox_object, run_id_for
from tests.support import EXAMPLES, cli_submit, signed_in_as

pytestmark = pytest.mark.e2e


def test_valid_and_invalid_documents_reach_their_verdicts_and_the_dashboard(full_stack: LocalStack) -> None:
    valid = cli_submit(full_stack, EXAMPLES / "building-valid.json")
    invalid = cli_submit(full_stack, EXAMPLES / "building-invalid.json")

    assert valid.returncode == 0, valid.stderr
    assert invalid.returncode == 1, invalid.stderr
    valid_id = valid.stdout.splitlines()[0]
    invalid_id = invalid.stdout.splitlines()[0]
    assert re.fullmatch(r"[0-9a-f]{24}", valid_id)
    assert "SUCCEEDED  building-valid.json" in valid.stdout
    assert "VALIDATION_FAILED: step 1 'Building summary schema' failed validation with 4 errors" in invalid.stdout
    assert len([line for line in invalid.stdout.splitlines() if line.strip().startswith("ERROR")]) == 4
    assert "ERROR   /building_id  '42' does not match '^B-[0-9]{4}$'" in invalid.stdout

    browser = signed_in_as(full_stack, "demo")
    dashboard = browser.get(f"{full_stack.web_url}/orgs/demo/runs").text
    assert f'href="/orgs/demo/runs/{valid_id}"><span class="status SUCCEEDED">SUCCEEDED' in dashboard
    assert f'href="/orgs/demo/runs/{invalid_id}"><span class="status FAILED">FAILED' in dashboard

    detail = browser.get(f"{full_stack.web_url}/orgs/demo/runs/{invalid_id}").text
    assert "VALIDATION_FAILED" in detail
    assert "<code>/systems/1/kind</code>" in detail
    assert "&#39;steam&#39; is not one of" in detail


def test_plain_client_upload_into_the_inbox_works_the_same(full_stack: LocalStack) -> None:
    settings = full_stack.settings
    name = inbox_object("demo", "json-basic", "uploaded-with-the-client.json")
    blob = full_stack.services.storage_client.bucket(settings.inbox_bucket).blob(name)
    blob.upload_from_filename(str(EXAMPLES / "building-invalid.json"), content_type="application/json")
    run_id = run_id_for(settings.inbox_bucket, name, int(blob.generation))

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = full_stack.services.run_reads.run(run_id)
        if found and RunStatus(found.status).is_terminal:
            break
        time.sleep(0.2)
    assert found is not None
    assert found.status == RunStatus.FAILED
    assert found.counts.ERROR == 4
    browser = signed_in_as(full_stack, "demo")
    assert "uploaded-with-the-client.json" in browser.get(f"{full_stack.web_url}/orgs/demo/runs").text


def test_another_org_cannot_see_a_demo_run(full_stack: LocalStack) -> None:
    result = cli_submit(full_stack, EXAMPLES / "building-valid.json")
    run_id = result.stdout.splitlines()[0]

    member, outsider = signed_in_as(full_stack, "demo"), signed_in_as(full_stack, "other")
    assert member.get(f"{full_stack.web_url}/orgs/demo/runs/{run_id}").status_code == 200
    assert outsider.get(f"{full_stack.web_url}/orgs/demo/runs/{run_id}").status_code == 404
    assert outsider.get(f"{full_stack.web_url}/orgs/other/runs/{run_id}").status_code == 404
    assert run_id not in outsider.get(f"{full_stack.web_url}/orgs/other/runs").text
