"""A Pipeline wired to the real emulators, and helpers that deliver finalize events the way the platform does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from google.cloud import pubsub_v1, storage

from deploy.stack import LocalStack
from functions.handlers import Pipeline
from functions.main import build_pipeline
from schemas.changes import Write, workflow_path
from schemas.documents import RunDoc, StepSpec, WorkflowDoc
from schemas.objects import ObjectFinalized
from schemas.paths import attempt_id_for, inbox_object, parse_gs_uri, run_id_for
from store.clients import storage_client

pytestmark = pytest.mark.integration


def finalized(blob: storage.Blob) -> ObjectFinalized:
    """The event the platform delivers for this object version (fields as the notification carries them)."""
    return ObjectFinalized(
        bucket=blob.bucket.name,
        name=blob.name,
        generation=int(blob.generation),
        size=int(blob.size),
        content_type=blob.content_type,
        md5_hash=blob.md5_hash,
        crc32c=blob.crc32c,
    )


@dataclass
class Harness:
    pipeline: Pipeline
    gcs: storage.Client
    bucket: storage.Bucket
    events: list[str] = field(default_factory=list)

    @property
    def store(self):
        return self.pipeline.store

    def upload(self, name: str, data: bytes, content_type: str = "application/json") -> ObjectFinalized:
        blob = self.bucket.blob(name)
        blob.upload_from_string(data, content_type=content_type)
        return finalized(blob)

    def event_for(self, uri: str) -> ObjectFinalized:
        _, name = parse_gs_uri(uri)
        blob = self.bucket.get_blob(name)
        assert blob is not None, f"{uri} was not written"
        return finalized(blob)

    def submit(self, data: bytes, workflow: str = "json-basic", filename: str | None = None, org: str = "demo"):
        """Upload to the inbox; returns (intake event, run_id)."""
        name = inbox_object(org, workflow, filename or f"{uuid.uuid4().hex}.json")
        event = self.upload(name, data)
        return event, run_id_for(event.bucket, event.name, event.generation)

    def input_event(self, run_id: str, step: int = 1) -> ObjectFinalized:
        attempt = self.store.attempt(run_id, attempt_id_for(step, 1))
        assert attempt is not None
        return self.event_for(attempt.doc.input_uri)

    def output_event(self, run_id: str, step: int = 1) -> ObjectFinalized:
        attempt = self.store.attempt(run_id, attempt_id_for(step, 1))
        assert attempt is not None
        return self.event_for(attempt.doc.expected_output_uri)

    def wait_for_output(self, run_id: str, step: int = 1, timeout: float = 120) -> ObjectFinalized:
        """The output.json a job writes on its own, as its finalize event (the job's 'callback')."""
        attempt = self.store.attempt(run_id, attempt_id_for(step, 1))
        assert attempt is not None
        _, name = parse_gs_uri(attempt.doc.expected_output_uri)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            blob = self.bucket.get_blob(name)
            if blob is not None:
                return finalized(blob)
            time.sleep(0.1)
        raise AssertionError(f"no output.json for {run_id} after {timeout} s")

    def run_job(self, data: bytes, workflow: str, filename: str) -> tuple[str, RunDoc]:
        """A one-step job workflow, driven like the platform would: intake, launch, the job's output, ingest."""
        event, run_id = self.submit(data, workflow, filename)
        assert self.pipeline.handle(event) == "created"
        assert self.pipeline.handle(self.input_event(run_id)) == "launched"
        assert self.pipeline.handle(self.wait_for_output(run_id)) == "applied"
        run = self.store.run(run_id)
        assert run is not None
        return run_id, run.doc

    def run_through(self, data: bytes, workflow: str = "json-basic") -> tuple[str, RunDoc]:
        """Deliver every event of a run once, in order, until the run ends."""
        event, run_id = self.submit(data, workflow)
        assert self.pipeline.handle(event) == "created"
        for step in range(1, 100):
            assert self.pipeline.handle(self.input_event(run_id, step)) == "launched"
            assert self.pipeline.handle(self.output_event(run_id, step)) == "applied"
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


@pytest.fixture(scope="session")
def harness(emulators: LocalStack) -> Harness:
    pipeline = build_pipeline(emulators.settings)
    gcs = storage_client(emulators.settings.project)
    return Harness(pipeline=pipeline, gcs=gcs, bucket=gcs.bucket(emulators.settings.bucket))


@pytest.fixture
def run_events(emulators: LocalStack) -> Iterator[tuple[pubsub_v1.SubscriberClient, str]]:
    """A fresh pull subscription on the lifecycle topic, as a downstream subscriber would make."""
    settings = emulators.settings
    subscriber = pubsub_v1.SubscriberClient()
    name = subscriber.subscription_path(settings.project, f"test-{uuid.uuid4().hex[:12]}")
    subscriber.create_subscription(
        request={
            "name": name,
            "topic": f"projects/{settings.project}/topics/{settings.run_events_topic}",
            "enable_message_ordering": True,
        }
    )
    yield subscriber, name
    subscriber.delete_subscription(subscription=name)
