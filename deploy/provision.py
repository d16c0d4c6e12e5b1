"""Create the bucket, topics and subscriptions of DESIGN §10, and seed the demo organization. Idempotent."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2

from bootstrap import Services
from deploy.workflow_files import WorkflowSource, check_file, workflow_paths
from functions.workflows import Workflows
from schemas.changes import Write, org_path
from schemas.documents import OrgDoc
from schemas.enums import Role
from schemas.settings import Settings
from store.ports import RunStore
from web.accounts import AccountExists, Accounts

log = logging.getLogger("validibot.provision")

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


CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
# Demo workflows whose resource files come from the corpora: (workflow file, {folder in it: corpus folder}).
CORPUS_WORKFLOWS = [
    (
        DEMO_WORKFLOWS.parent / "corpus-workflows" / "ubl-invoice.yaml",
        {"ubl": CORPORA / "xml" / "ubl-2.1-xsd" / "xsd", "en16931": CORPORA / "xml" / "en16931-ubl" / "ubl" / "xslt"},
    )
]


def _apply_file(path: Path, workflows: Workflows) -> str:
    checked, problems = check_file(path)
    if checked is None:
        raise ValueError("; ".join(str(problem) for problem in problems))
    return workflows.apply(checked, WorkflowSource(path).read).slug


def _apply_corpus_workflows(workflows: Workflows) -> list[str]:
    """Each corpus workflow applied from a temporary folder holding its file and its corpus folders: applying
    stores and pins the resource files, so nothing of the corpora is kept in the project."""
    slugs = []
    for path, folders in CORPUS_WORKFLOWS:
        if not all(source.is_dir() for source in folders.values()):
            log.info("%s left out: its corpus is not in %s", path.name, CORPORA)
            continue
        with tempfile.TemporaryDirectory(prefix="validibot-corpus-workflow-") as scratch:
            for name, source in folders.items():
                shutil.copytree(source, Path(scratch) / name)
            shutil.copy(path, Path(scratch) / path.name)
            slugs.append(_apply_file(Path(scratch) / path.name, workflows))
    return slugs


def seed_demo(store: RunStore, workflows: Workflows) -> list[str]:
    """The demo org, and its workflow files in examples/workflows/ applied with their resource files: a new version
    only where a file changed since the last start. Returns their slugs."""
    store.commit([Write(org_path(DEMO_ORG), OrgDoc(name="Demo organization", created_at=datetime.now(UTC)), "upsert")])
    slugs = [_apply_file(path, workflows) for path in workflow_paths([DEMO_WORKFLOWS])]
    return slugs + _apply_corpus_workflows(workflows)


DEMO_ADMIN_EMAIL = "admin@demo.example"
DEMO_KEY_NAME = "demo executor (validibot up)"


@dataclass(frozen=True)
class DemoAccess:
    email: str
    password: str
    key: str


def seed_demo_access(accounts: Accounts) -> DemoAccess:
    """The demo org's admin (a new password on every start, so it can be printed) and a new executor key (the one
    the previous start made is revoked): what `validibot up` prints for people and programs to use."""
    try:
        password = accounts.create_user(DEMO_ORG, DEMO_ADMIN_EMAIL, Role.ADMIN)
    except AccountExists:
        password = accounts.reset_password(DEMO_ADMIN_EMAIL)
    for listing in accounts.keys(DEMO_ORG):
        if listing.key.name == DEMO_KEY_NAME and listing.key.revoked_at is None:
            accounts.revoke_key(DEMO_ORG, listing.key_id)
    key = accounts.create_key(DEMO_ORG, Role.EXECUTOR, DEMO_KEY_NAME, "validibot up")
    return DemoAccess(DEMO_ADMIN_EMAIL, password, key)
