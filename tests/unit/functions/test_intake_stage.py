"""INTAKE's handler on the in-memory ports: new, duplicate, replayed after a crash, lost race, refused."""

from __future__ import annotations

import pytest

from functions.stage import Handled, Outcome
from schemas.enums import AttemptState, ErrorCategory, LifecycleType, RunStatus
from schemas.envelopes import sha256_hex
from schemas.paths import attempt_id_for, inbox_object, run_id_for
from tests.fakes import Crash, FakeWorld
from tests.support import CREATED, DUPLICATE, LAUNCHED, VALID

REPLAYED = Handled(Outcome.EFFECTS_REPLAYED)


def test_a_new_upload_becomes_a_run_with_its_submission_pinned_and_its_first_input() -> None:
    world = FakeWorld()
    event, run_id = world.submit(VALID, filename="building.json")

    assert world.pipeline.handle(event) == CREATED

    run = world.store.run(run_id).doc
    assert (run.status, run.current_step, run.submission_name) == (RunStatus.PENDING, 1, "building.json")
    assert run.submission.sha256 == sha256_hex(VALID)
    assert world.objects.read_bytes(run.submission.uri, run.submission.generation, 10_000) == VALID
    attempt = world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert (attempt.state, attempt.launcher) == (AttemptState.SCHEDULED, "inline")
    assert sha256_hex(world.objects.read_bytes(attempt.input_uri, None, 100_000)) == attempt.input_sha256
    assert world.publisher.types(run_id) == [LifecycleType.RUN_CREATED]


def test_a_redelivery_after_launch_is_a_duplicate_and_changes_nothing() -> None:
    world = FakeWorld()
    event, run_id = world.submit(VALID)
    world.pipeline.handle(event)
    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED
    commits = world.fake_store.commits

    assert world.pipeline.handle(event) == DUPLICATE

    assert world.fake_store.commits == commits
    assert world.publisher.types(run_id).count(LifecycleType.RUN_CREATED) == 1


def test_a_crash_after_the_commit_is_repaired_by_the_redelivery() -> None:
    world = FakeWorld()
    event, run_id = world.submit(VALID)
    world.publisher.crash_next_publish()

    with pytest.raises(Crash):
        world.pipeline.handle(event)
    attempt = world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert world.objects.stat(attempt.input_uri) is None  # committed, but input.json was never written

    assert world.pipeline.handle(event) == REPLAYED
    assert world.objects.stat(attempt.input_uri) is not None
    assert world.publisher.types(run_id) == [LifecycleType.RUN_CREATED]
    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED


def test_a_lost_race_to_create_the_run_replays_the_winners_effects() -> None:
    world = FakeWorld()
    event, run_id = world.submit(VALID)
    winner: list[Handled] = []
    world.fake_store.before_next_commit(lambda: winner.append(world.pipeline.handle(event)))

    assert world.pipeline.handle(event) == REPLAYED

    assert winner == [CREATED]
    assert list(world.fake_store.collection("runs")) == [run_id]
    assert world.objects.generations_written(world.store.attempt(run_id, "01-1").doc.input_uri) == 1


@pytest.mark.parametrize(
    ("org", "workflow", "filename", "error"),
    [
        ("nobody", "json-basic", "a.json", "unknown organization 'nobody'"),
        ("demo", "nope", "a.json", "organization 'demo' has no workflow 'nope'; upload to inbox/demo/<workflow>/"),
        (
            "demo",
            "json-basic",
            "invoice\u202egpj.exe",
            "unsafe file name: the file name 'invoice\\u202egpj.exe' contains a path separator, a control character or "
            "a bidirectional override; use a plain file name",
        ),
        (
            "demo",
            "json-basic",
            "\U0001f600" * 51,
            "unsafe file name: the file name is 204 bytes long in UTF-8; the limit is 200 bytes",
        ),
        ("demo", None, "a.json", "the file is not in a workflow's folder; upload to inbox/demo/<workflow>/a.json"),
        (
            "demo",
            "json-basic",
            "sub/a.json",
            "unsafe file name: the file name 'sub/a.json' contains a path separator, a control character or a "
            "bidirectional override; use a plain file name",
        ),
    ],
    ids=["unknown-org", "unknown-workflow", "bidi-override", "too-many-bytes", "no-workflow-folder", "nested"],
)
def test_a_refused_upload_is_one_failed_run_saying_why(
    org: str, workflow: str | None, filename: str, error: str
) -> None:
    world = FakeWorld()
    name = inbox_object(org, workflow, filename) if workflow else f"inbox/{org}/{filename}"
    event = world.upload(name, VALID)
    run_id = run_id_for(event.bucket, event.name, event.generation)

    assert world.pipeline.handle(event) == Handled(Outcome.REFUSED)

    run = world.store.run(run_id).doc
    assert (run.status, run.error_category, run.error) == (RunStatus.FAILED, ErrorCategory.VALIDATION_FAILED, error)
    assert run.submission is None
    assert world.reads.steps(run_id) == []
    assert world.publisher.types(run_id) == [LifecycleType.RUN_CREATED, LifecycleType.RUN_COMPLETED]
    # Nothing after intake shows a refused run's events went out, so a redelivery sends them again (same ce-ids).
    assert world.pipeline.handle(event) == REPLAYED
    assert len(world.fake_store.collection("runs")) == 1


def test_an_upload_over_the_size_limit_is_refused_before_it_is_read() -> None:
    world = FakeWorld(max_submission_bytes=100)
    event, run_id = world.submit(b" " * 101)

    assert world.pipeline.handle(event) == Handled(Outcome.REFUSED)

    run = world.store.run(run_id).doc
    assert run.error == "the file is 101 bytes; the limit is 100 bytes (VALIDIBOT_MAX_SUBMISSION_BYTES)"
