"""A launch that fails after its claim is retried by the redelivery instead of leaving the run stuck."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping

import pytest
from google.api_core import exceptions as gexc

from bootstrap import Services
from deploy.stack import LocalStack, Supervisor, http_ok, storage_emulator_argv
from jobs.launchers.base import Launcher
from schemas.enums import AttemptState, RunStatus
from schemas.paths import attempt_id_for
from tests.support import APPLIED, LAUNCHED, VALID, Harness

pytestmark = pytest.mark.integration


@pytest.fixture
def launchers_on_empty_storage(
    emulators: LocalStack, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Mapping[str, Launcher]]:
    """Launchers whose object store is a second, real Cloud Storage emulator with no buckets: every write to it
    fails with 404. The client reads the emulator's address when it is made, so it is made while pointed there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    supervisor = Supervisor(emulators.log_dir)
    child = supervisor.start("empty-storage", storage_emulator_argv(port), {})
    try:
        supervisor.wait_ready(child, lambda: http_ok(f"http://127.0.0.1:{port}/storage/v1/b"))
        with monkeypatch.context() as env:
            env.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
            launchers = Services(harness.settings).launchers
        yield launchers
    finally:
        supervisor.stop()


def test_launch_failing_after_its_claim_is_relaunched_by_the_redelivery(
    harness: Harness, launchers_on_empty_storage: Mapping[str, Launcher]
) -> None:
    broken = harness.rewired(launchers=launchers_on_empty_storage)
    event, run_id = harness.submit(VALID)
    harness.pipeline.handle(event)
    input_event = harness.input_event(run_id)

    with pytest.raises(gexc.NotFound):
        broken.handle(input_event)

    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert attempt.state == AttemptState.SCHEDULED
    assert harness.pipeline.handle(input_event) == LAUNCHED
    assert harness.pipeline.handle(harness.output_event(run_id)) == APPLIED
    assert harness.store.run(run_id).doc.status == RunStatus.SUCCEEDED
