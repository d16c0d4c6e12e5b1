"""A launch that fails after its claim is retried by the redelivery instead of leaving the run stuck."""

from __future__ import annotations

import dataclasses
import socket

import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from deploy.stack import LocalStack, Supervisor, http_ok, storage_emulator_argv
from jobs.launchers.inline import InlineLauncher
from schemas.enums import AttemptState, RunStatus
from schemas.paths import attempt_id_for
from store.objects import ObjectStore
from tests.integration.conftest import Harness
from tests.integration.test_redelivery import VALID

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_storage(emulators: LocalStack):
    """A second, real Cloud Storage emulator with no buckets: every write to it fails with 404."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    supervisor = Supervisor(emulators.log_dir)
    child = supervisor.start(
        "empty-storage",
        storage_emulator_argv(port),
        {},
    )
    try:
        supervisor.wait_ready(child, lambda: http_ok(f"http://127.0.0.1:{port}/storage/v1/b"))
        yield storage.Client(
            project="elsewhere",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": f"http://127.0.0.1:{port}"},
        )
    finally:
        supervisor.stop()


def test_launch_failing_after_its_claim_is_relaunched_by_the_redelivery(
    harness: Harness, empty_storage: storage.Client
) -> None:
    broken = dataclasses.replace(
        harness.pipeline, launchers={"inline": InlineLauncher(ObjectStore(empty_storage), harness.pipeline.settings)}
    )
    event, run_id = harness.submit(VALID)
    harness.pipeline.handle(event)
    input_event = harness.input_event(run_id)

    with pytest.raises(gexc.NotFound):
        broken.handle(input_event)

    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert attempt.state == AttemptState.SCHEDULED
    assert harness.pipeline.handle(input_event) == "launched"
    assert harness.pipeline.handle(harness.output_event(run_id)) == "applied"
    assert harness.store.run(run_id).doc.status == RunStatus.SUCCEEDED
