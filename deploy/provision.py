"""Create the bucket, topics and subscriptions of DESIGN §10, and seed the demo organization. Idempotent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2

from bootstrap import Services
from deploy.workflow_files import check_file, workflow_paths
from functions.workflows import plan_apply, version_writes, workflow_doc
from schemas.changes import Write, org_path
from schemas.documents import OrgDoc, WorkflowDoc
from schemas.settings import Settings
from store.ports import RunStore

DEMO_ORG = "demo"
# Redelivery is the retry for transient faults (an emulator or API briefly away): a handler that raised is tried
# again after a backoff, then dead-lettered. A full launcher does not raise: its attempt waits queued for the tick.
MAX_DELIVERY_ATTEMPTS = 30
ACK_DEADLINE_SECONDS = 60
# A tick that failed is soon followed by the next one: a few tries, then the dead letter keeps it for operators.
TICK_DELIVERY_ATTEMPTS = 5


def push_endpoint(functions_url: str, settings: Settings, topic: str | None = None) -> str:
    # functions-framework reads the topic from the path when it turns a raw push into a CloudEvent.
    return f"{functions_url}/projects/{settings.project}/topics/{topic or settings.notifications_topic}"


def provision(services: Services, functions_url: str | None) -> None:
    """Topics, buckets and, given the functions' URL, the push subscriptions that feed them."""
    settings = services.settings
    publisher = services.publisher_client
    subscriber = services.subscriber_client
    topics = {
        name: publisher.topic_path(settings.project, name)
        for name in (
            settings.notifications_topic,
            settings.run_events_topic,
            settings.dead_letter_topic,
            settings.maintenance_topic,
        )
    }
    for topic in topics.values():
        _ignore_exists(lambda topic=topic: publisher.create_topic(name=topic))
    dead_letter = topics[settings.dead_letter_topic]
    _ignore_exists(
        lambda: subscriber.create_subscription(
            name=subscriber.subscription_path(settings.project, settings.dead_letter_topic), topic=dead_letter
        )
    )
    if functions_url is not None:
        # The functions get the maintenance tick like any other event (Cloud Scheduler → Pub/Sub in production).
        for subscription, topic, attempts in (
            (settings.pipeline_subscription, settings.notifications_topic, MAX_DELIVERY_ATTEMPTS),
            (settings.maintenance_subscription, settings.maintenance_topic, TICK_DELIVERY_ATTEMPTS),
        ):
            request = {
                "name": subscriber.subscription_path(settings.project, subscription),
                "topic": topics[topic],
                "push_config": {"push_endpoint": push_endpoint(functions_url, settings, topic)},
                "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
                "dead_letter_policy": {"dead_letter_topic": dead_letter, "max_delivery_attempts": attempts},
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(seconds=1),
                    "maximum_backoff": duration_pb2.Duration(seconds=30),
                },
            }
            _ignore_exists(lambda request=request: subscriber.create_subscription(request=request))
    for bucket in (settings.bucket, settings.inbox_bucket):
        _ignore_exists(lambda bucket=bucket: services.storage_client.create_bucket(bucket))


def _ignore_exists(create: Callable[[], object]) -> None:
    try:
        create()
    except gexc.AlreadyExists:
        pass
    except gexc.Conflict:  # Cloud Storage says 409 Conflict for an existing bucket
        pass


DEMO_WORKFLOWS = Path(__file__).resolve().parent.parent / "examples" / "workflows"


def demo_workflows() -> list[WorkflowDoc]:
    """The demo org's workflows, from their files in examples/workflows/ (they have no resource files)."""
    workflows = []
    for path in workflow_paths([DEMO_WORKFLOWS]):
        checked, problems = check_file(path)
        if checked is None:
            raise ValueError("; ".join(str(problem) for problem in problems))
        workflows.append(workflow_doc(checked, {}, version=1))
    return workflows


def seed_demo(store: RunStore) -> list[WorkflowDoc]:
    """The demo org, and its workflows applied: a new version only where a file changed since the last start."""
    store.commit([Write(org_path(DEMO_ORG), OrgDoc(name="Demo organization", created_at=datetime.now(UTC)), "upsert")])
    workflows = demo_workflows()
    for workflow in workflows:
        current = store.workflow_head(workflow.org, workflow.slug)
        version = plan_apply(current, workflow, datetime.now(UTC))
        if version is not None:
            store.commit(version_writes(current, version))
    return workflows
