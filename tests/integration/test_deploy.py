"""`validibot deploy` against a stand-in for Google Cloud: tests/gcloud_stub/gcloud, first on PATH, answers reads from
a JSON state in gcloud's shapes and records every mutating command (issue 15). No emulator and no network: what is
checked is the plan, its idempotency and the flags of every command that changes something."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, VALIDIBOT

pytestmark = pytest.mark.integration

STUB = ROOT / "tests" / "gcloud_stub"
GOLDEN = ROOT / "tests" / "data" / "deploy-plan-empty.txt"
COMMANDS = ROOT / "tests" / "data" / "deploy-commands-empty.txt"
TARGET = ["--project", "acme-prod", "--region", "europe-west1", "--stage", "dev", "--source", "abc123"]


def deploy(state: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{STUB}{os.pathsep}{os.environ['PATH']}", "GCLOUD_STUB_STATE": str(state)}
    done = subprocess.run(
        [str(VALIDIBOT), "deploy", *TARGET, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def calls(state: Path) -> list[list[str]]:
    return json.loads(state.read_text())["calls"]


def flags(call: list[str]) -> dict[str, str]:
    return {a[2:].split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for a in call if a.startswith("--")}


def the(found: list[list[str]], *words: str) -> list[str]:
    """The one recorded call that starts with gcloud WORDS."""
    [call] = [c for c in found if c[: len(words)] == list(words)]
    return call


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A dry run, an apply and a second apply on an empty project; then a change of one job's memory."""
    state = tmp_path_factory.mktemp("cloud") / "state.json"
    dry = deploy(state, "--dry-run")
    dry_calls = calls(state) if state.exists() else []
    first = deploy(state)
    after_first = calls(state)
    second = deploy(state)
    after_second = calls(state)
    changed = deploy(state, "--job-memory", "energyplus=8Gi")
    return {
        "dry": dry,
        "dry_calls": dry_calls,
        "first": first,
        "first_calls": after_first,
        "second": second,
        "second_calls": after_second[len(after_first) :],
        "changed": changed,
        "changed_calls": calls(state)[len(after_second) :],
    }


def test_a_dry_run_on_an_empty_project_prints_the_reviewed_plan_and_changes_nothing(deployed: dict[str, Any]) -> None:
    assert deployed["dry"] == GOLDEN.read_text()
    assert deployed["dry_calls"] == []


def test_the_first_apply_creates_everything_and_the_second_changes_nothing(deployed: dict[str, Any]) -> None:
    planned = [line for line in deployed["first"].splitlines() if line.startswith("create ")]
    assert len(planned) == len([line for line in GOLDEN.read_text().splitlines() if line.startswith("create ")])
    assert deployed["first"].rstrip().endswith("deployed")
    assert deployed["second_calls"] == []
    assert "plan: 0 to create, 0 to update, 89 unchanged" in deployed["second"]
    assert deployed["second"].rstrip().endswith("nothing to change")


def test_changing_one_jobs_memory_updates_exactly_that_job(deployed: dict[str, Any]) -> None:
    changes = [line for line in deployed["changed"].splitlines() if line.startswith(("create ", "update "))]
    assert changes == [f"update    {'job':<20} validibot-validator-energyplus-dev"]
    [call] = deployed["changed_calls"]
    assert call[:5] == ["gcloud", "run", "jobs", "update", "validibot-validator-energyplus-dev"]
    assert flags(call)["memory"] == "8Gi"


def test_every_mutating_command_has_its_flags(deployed: dict[str, Any]) -> None:
    made = deployed["first_calls"]
    project, stage = "acme-prod", "dev"
    functions_sa = f"validibot-functions-{stage}@{project}.iam.gserviceaccount.com"
    functions_url = "https://validibot-functions-dev-123456789012.europe-west1.run.app"

    # Each validator job: 4 GiB, 2 CPU, the step timeout, no retries, labels, the jobs' account.
    job = flags(the(made, "gcloud", "run", "jobs", "create", "validibot-validator-energyplus-dev"))
    assert (job["memory"], job["cpu"], job["task-timeout"], job["max-retries"], job["tasks"]) == (
        "4Gi", "2", "3600s", "0", "1"
    )  # fmt: skip
    assert job["service-account"] == f"validibot-jobs-{stage}@{project}.iam.gserviceaccount.com"
    assert "validator=energyplus" in job["labels"]
    assert "stage=dev" in job["labels"]
    assert "VALIDIBOT_CLOUDRUN_JOB_SUFFIX=-dev" in job["set-env-vars"]
    assert len([c for c in made if c[1:4] == ["run", "jobs", "create"]]) == 7

    # The custom role holds the overrides permission; the functions hold it on each job (not project-wide, so one
    # stage cannot start another's jobs), the web only a role that stops executions.
    role = flags(the(made, "gcloud", "iam", "roles", "create", "validibot_job_runner_dev"))
    assert {"run.jobs.run", "run.jobs.runWithOverrides"} <= set(role["permissions"].split(","))
    canceller = flags(the(made, "gcloud", "iam", "roles", "create", "validibot_job_canceller_dev"))
    assert set(canceller["permissions"].split(",")) == {"run.executions.get", "run.executions.cancel"}
    on_job = [
        flags(c) for c in made if c[1:5] == ["run", "jobs", "add-iam-policy-binding", "validibot-validator-fmu-dev"]
    ]
    assert {(g["member"], g["role"]) for g in on_job} == {
        (f"serviceAccount:{functions_sa}", f"projects/{project}/roles/validibot_job_runner_dev"),
        (f"serviceAccount:validibot-web-{stage}@{project}.iam.gserviceaccount.com",
         f"projects/{project}/roles/validibot_job_canceller_dev"),
    }  # fmt: skip
    assert not [c for c in made if c[1:3] == ["projects", "add-iam-policy-binding"] and "roles/validibot" in c[4]]

    # The push subscription: OIDC as the scheduler account, the functions' URL as audience, a dead letter.
    push = flags(the(made, "gcloud", "pubsub", "subscriptions", "create", "validibot-pipeline-dev"))
    assert push["topic"] == "validibot-gcs-notifications-dev"
    assert push["push-endpoint"] == f"{functions_url}/projects/{project}/topics/validibot-gcs-notifications-dev"
    assert push["push-auth-service-account"] == f"validibot-scheduler-{stage}@{project}.iam.gserviceaccount.com"
    assert push["push-auth-token-audience"] == functions_url
    assert (push["dead-letter-topic"], push["max-delivery-attempts"]) == ("validibot-dead-letter-dev", "30")
    # What could not be delivered is kept: the dead letter topic has a subscription of its own.
    kept = flags(the(made, "gcloud", "pubsub", "subscriptions", "create", "validibot-dead-letter-dev"))
    assert kept["topic"] == "validibot-dead-letter-dev"

    # The tick: every minute, to the maintenance topic, as the functions recognise it.
    tick = flags(the(made, "gcloud", "scheduler", "jobs", "create", "pubsub", "validibot-tick-dev"))
    assert (tick["topic"], tick["schedule"], tick["attributes"]) == (
        "validibot-maintenance-dev", "* * * * *", "validibot-event=maintenance-tick"
    )  # fmt: skip

    # The buckets: uniform access, no public access, versioning, a lifecycle for deleted versions.
    bucket = the(made, "gcloud", "storage", "buckets", "create", "gs://acme-prod-validibot-files-dev")
    assert {"--uniform-bucket-level-access", "--public-access-prevention", "--location=europe-west1"} <= set(bucket)
    update = flags(the(made, "gcloud", "storage", "buckets", "update", "gs://acme-prod-validibot-files-dev"))
    assert "versioning" in update
    assert json.loads(Path(update["lifecycle-file"]).read_text())["rule"][0]["condition"]["isLive"] is False

    # Secrets: the value goes on stdin, so no command line holds it; the functions read theirs from Secret Manager.
    assert flags(the(made, "gcloud", "secrets", "versions", "add", "validibot-signing-secret-dev")) == {
        "data-file": "-",
        "project": project,
        "quiet": "",
    }
    functions = flags(the(made, "gcloud", "run", "deploy", "validibot-functions-dev"))
    assert functions["set-secrets"] == "VALIDIBOT_SIGNING_SECRET=validibot-signing-secret-dev:latest"
    assert (functions["function"], functions["service-account"]) == ("handle_event", functions_sa)
    assert "no-allow-unauthenticated" in functions
    web = flags(the(made, "gcloud", "run", "deploy", "validibot-web-dev"))
    assert web["set-secrets"] == "VALIDIBOT_WEB_SECRET_KEY=validibot-web-secret-key-dev:latest"
    # Every build runs as the builder account, not Cloud Build's default one.
    builder = f"projects/{project}/serviceAccounts/validibot-builder-{stage}@{project}.iam.gserviceaccount.com"
    assert functions["build-service-account"] == web["build-service-account"] == builder
    assert flags(the(made, "gcloud", "builds", "submit"))["service-account"] == builder

    # Notifications of both buckets go to the notifications topic; Firestore in Native mode with every index.
    notified = [c for c in made if c[1:5] == ["storage", "buckets", "notifications", "create"]]
    assert {c[5] for c in notified} == {"gs://acme-prod-validibot-files-dev", "gs://acme-prod-validibot-inbox-dev"}
    assert all(flags(c)["topic"] == "validibot-gcs-notifications-dev" for c in notified)
    database = flags(the(made, "gcloud", "firestore", "databases", "create"))
    assert (database["type"], database["database"]) == ("firestore-native", "validibot-dev")
    indexes = json.loads((ROOT / "deploy" / "firestore.indexes.json").read_text())["indexes"]
    assert len([c for c in made if c[1:5] == ["firestore", "indexes", "composite", "create"]]) == len(indexes)
    ttl = the(made, "gcloud", "firestore", "fields", "ttls", "update", "expire_at")
    assert flags(ttl)["collection-group"] == "receipts"


def test_destroy_deletes_only_after_the_project_id_is_typed(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    deploy(state)
    env = {**os.environ, "PATH": f"{STUB}{os.pathsep}{os.environ['PATH']}", "GCLOUD_STUB_STATE": str(state)}
    target = ["--project", "acme-prod", "--region", "europe-west1", "--stage", "dev"]

    def destroy(typed: str) -> subprocess.CompletedProcess[str]:
        command = [str(VALIDIBOT), "destroy", *target]
        return subprocess.run(command, env=env, input=f"{typed}\n", capture_output=True, text=True, timeout=300)

    before = len(calls(state))
    refused = destroy("acme-staging")
    assert refused.returncode == 2
    assert "nothing was deleted" in refused.stderr
    assert len(calls(state)) == before

    done = destroy("acme-prod")
    assert done.returncode == 0, done.stderr
    deleted = calls(state)[before:]
    assert ["gcloud", "storage", "rm", "--recursive", "gs://acme-prod-validibot-files-dev", "--project=acme-prod"] in (
        deleted
    )
    assert the(deleted, "gcloud", "run", "jobs", "delete", "validibot-validator-fmu-dev")[-1] == "--quiet"
    assert not [c for c in deleted if c[1] == "firestore"]  # the data stays


def test_every_mutating_command_matches_the_reviewed_list(deployed: dict[str, Any]) -> None:
    """Every flag of every command the first apply ran, against a reviewed file (the checkout's path abstracted)."""
    lines = [shlex.join(call).replace(str(ROOT), "{ROOT}") for call in deployed["first_calls"]]

    assert "\n".join(lines) + "\n" == COMMANDS.read_text()
