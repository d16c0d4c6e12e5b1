"""Logs an operator can search (DESIGN §15): on the whole stack with VALIDIBOT_LOG_FORMAT=json (the session's stack
logs so), every line about a run, from the functions, its job and the web, is one JSON object in Cloud Logging's
structured format, labelled with the run, and a request's lines carry its trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.stack import LocalStack
from schemas.enums import Role
from tests.support import EXAMPLES, Api, new_key

pytestmark = pytest.mark.e2e

SEVERITIES = {"DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"}
TRACE = "105445aa7843bc8bf206b12000100000"


def lines_about(log: Path, run_id: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if run_id in line]


def entries_about(stack: LocalStack, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each log file's lines that mention the run, parsed: a line that is not JSON fails the test here."""
    return {
        log.name: [json.loads(line) for line in lines_about(log, run_id)]
        for log in (stack.log_dir / "functions.log", stack.log_dir / "web.log")
    }


def test_every_line_of_a_run_is_structured_json_labelled_with_the_run(
    full_stack: LocalStack, fmus: dict[str, Path]
) -> None:
    api = Api(full_stack, new_key(full_stack, "demo", Role.EXECUTOR))
    trace_header = {"X-Cloud-Trace-Context": f"{TRACE}/1;o=1"}
    inline = api.post(
        "/orgs/demo/workflows/json-basic/runs",
        files={"file": ("logged.json", (EXAMPLES / "building-invalid.json").read_bytes())},
        headers=trace_header,
    ).json()["run_id"]
    job = api.post(
        "/orgs/demo/workflows/fmu-basic/runs", files={"file": ("logged.fmu", fmus["RoomHeater"].read_bytes())}
    ).json()["run_id"]
    for run_id in (inline, job):
        api.wait_for_verdict("demo", run_id)

    for run_id in (inline, job):
        found = entries_about(full_stack, run_id)
        entries = found["functions.log"] + found["web.log"]
        assert found["functions.log"], f"no functions line mentions run {run_id}"
        for entry in entries:
            assert entry["severity"] in SEVERITIES
            assert entry["message"]
            labels = entry["logging.googleapis.com/labels"]
            assert labels["run_id"] == run_id, entry
            assert labels["stage"] == full_stack.settings.stage
            assert labels["component"] in ("functions", "job", "web")
    # The job's own lines are there, labelled as the job's.
    job_lines = entries_about(full_stack, job)["functions.log"]
    assert any(e["logging.googleapis.com/labels"]["component"] == "job" for e in job_lines)
    assert any(e["logging.googleapis.com/labels"].get("org") == "demo" for e in job_lines)
    # The web's line of the submission carries the request's trace.
    [submitted] = [e for e in entries_about(full_stack, inline)["web.log"] if "submission" in e["message"]]
    assert submitted["logging.googleapis.com/trace"] == f"projects/{full_stack.settings.project}/traces/{TRACE}"
