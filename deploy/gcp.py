"""`validibot deploy`: every Google Cloud resource of DESIGN §15, planned and applied idempotently with gcloud.

Each resource is read first (a gcloud describe or list), then created, updated or left alone. Whether a resource
that exists matches is decided from what gcloud reads back: for those that carry labels (buckets, topics,
subscriptions, Cloud Run jobs and services, secrets) a `validibot-config` label holds the sha256 of the settings this
code gives them, so any change of a setting is seen without comparing each API's own representation; service
accounts, the custom role and the scheduler job keep it in their description; bindings, enabled APIs, bucket
notifications, Firestore indexes and TTL policies are compared by what they are. gcloud (already a prerequisite of
the local stack) rather than the client libraries: the plan is a list of commands a reviewer can read and run.

Events reach the functions through Pub/Sub push subscriptions (OIDC, dead letter), not Eventarc: the same path the
local stack tests, with its retry and dead-letter settings stated here rather than implied by a trigger.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.registry import REGISTERED

ROOT = Path(__file__).resolve().parent.parent
INDEXES = Path(__file__).resolve().parent / "firestore.indexes.json"
CONFIG_LABEL = "validibot-config"
APIS = (
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudscheduler.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
)
# Granted on each validator job (not project-wide, so one stage cannot start another's jobs): the functions start
# a job with its envelope's location and read and stop its executions; the web, which cancels runs, only stops.
CUSTOM_ROLES = {
    "job_runner": (
        "run validator jobs with overrides, read and stop their executions",
        ("run.executions.cancel", "run.executions.get", "run.jobs.run", "run.jobs.runWithOverrides"),
    ),
    "job_canceller": ("read and stop validator jobs' executions", ("run.executions.cancel", "run.executions.get")),
}


@dataclass(frozen=True)
class DeployConfig:
    project: str
    region: str
    stage: str
    # The build's identity: images are tagged with it, services are labelled with it.
    source: str
    job_memory: dict[str, str] = field(default_factory=dict)
    default_job_memory: str = "4Gi"
    job_cpu: str = "2"
    job_timeout_seconds: int = 3600
    tick_schedule: str = "* * * * *"
    max_delivery_attempts: int = 30

    def __post_init__(self) -> None:
        # Service account ids are at most 30 characters: "validibot-functions-" leaves 10 for the stage.
        if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", self.stage):
            raise ValueError(f"--stage {self.stage!r}: 1-10 lowercase letters and digits, starting with a letter")
        if not re.fullmatch(r"[a-z0-9_-]{1,63}", self.source):
            raise ValueError(f"--source {self.source!r}: lowercase letters, digits, - and _ (it is a label value)")

    def name(self, what: str) -> str:
        return f"validibot-{what}-{self.stage}"

    @property
    def database(self) -> str:
        """A Firestore database per stage: stages sharing a project share no run, user or key."""
        return f"validibot-{self.stage}"

    @property
    def files_bucket(self) -> str:
        return f"{self.project}-validibot-files-{self.stage}"

    @property
    def inbox_bucket(self) -> str:
        return f"{self.project}-validibot-inbox-{self.stage}"

    def account(self, role: str) -> str:
        return f"{self.name(role)}@{self.project}.iam.gserviceaccount.com"

    def role_id(self, kind: str) -> str:
        return f"validibot_{kind}_{self.stage}"

    @property
    def image(self) -> str:
        return f"{self.region}-docker.pkg.dev/{self.project}/validibot-{self.stage}/validator-job:{self.source}"


@dataclass(frozen=True)
class Resource:
    """One resource: how to read it, and the commands that make it or bring it in line."""

    kind: str
    name: str
    read: list[str]
    # What the read says: "missing", "same" or "different".
    judge: Callable[[Any], str]
    create: list[list[str]]
    update: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Action:
    verb: Literal["create", "update", "unchanged"]
    resource: Resource

    def line(self) -> str:
        return f"{self.verb:<9} {self.resource.kind:<20} {self.resource.name}"


def fingerprint(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def labels(config: DeployConfig, fingerprinted: Any, **more: str) -> str:
    own = {"app": "validibot", "stage": config.stage, CONFIG_LABEL: fingerprint(fingerprinted), **more}
    return ",".join(f"{k}={v}" for k, v in own.items())


def _by_label(expected: str, where: Callable[[Any], dict[str, str] | None]) -> Callable[[Any], str]:
    def judge(found: Any) -> str:
        if found is None:
            return "missing"
        return "same" if (where(found) or {}).get(CONFIG_LABEL) == expected else "different"

    return judge


def _own_labels(found: Any) -> dict[str, str] | None:
    return found.get("labels")


def _metadata_labels(found: Any) -> dict[str, str] | None:
    return found.get("metadata", {}).get("labels")


def _by_description(expected: str) -> Callable[[Any], str]:
    def judge(found: Any) -> str:
        if found is None:
            return "missing"
        return "same" if expected in (found.get("description") or "") else "different"

    return judge


def _present(found: Any) -> str:
    return "missing" if found is None else "same"


def _has_binding(member: str, role: str) -> Callable[[Any], str]:
    def judge(policy: Any) -> str:
        bindings = (policy or {}).get("bindings", [])
        held = any(b.get("role") == role and member in b.get("members", []) for b in bindings)
        return "same" if held else "missing"

    return judge


def _gcloud(*argv: str, project: str) -> list[str]:
    # --quiet: never a prompt, whatever gcloud thinks of the terminal (it takes the default, or fails).
    return ["gcloud", *argv, f"--project={project}", "--quiet"]


class Planner:
    """The desired resources of one stage in one region (pure: reads nothing)."""

    def __init__(self, config: DeployConfig, project_number: str) -> None:
        self.c = config
        self.project_number = project_number
        self.storage_agent = f"service-{project_number}@gs-project-accounts.iam.gserviceaccount.com"
        self.pubsub_agent = f"serviceAccount:service-{project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

    @property
    def builder(self) -> str:
        return f"projects/{self.c.project}/serviceAccounts/{self.c.account('builder')}"

    def g(self, *argv: str) -> list[str]:
        return _gcloud(*argv, project=self.c.project)

    def resources(self) -> list[Resource]:
        return [
            self.apis(),
            *self.accounts(),
            *self.custom_roles(),
            *self.project_roles(),
            *self.buckets(),
            *self.topics(),
            *self.notifications(),
            *self.secrets(),
            self.firestore(),
            *self.indexes(),
            *self.ttls(),
            self.repository(),
            self.job_image(),
            *self.jobs(),
            self.functions(),
            self.web(),
            *self.subscriptions(),
            self.tick(),
        ]

    # -- the project ----------------------------------------------------------------------------------------

    def apis(self) -> Resource:
        def judge(enabled: Any) -> str:
            names = {entry.get("config", {}).get("name") for entry in enabled or []}
            return "same" if set(APIS) <= names else "missing"

        return Resource(
            "apis",
            ",".join(a.split(".")[0] for a in APIS),
            self.g("services", "list", "--enabled", "--format=json"),
            judge,
            [self.g("services", "enable", *APIS)],
        )

    ACCOUNTS = {
        "functions": "the pipeline functions: run state, both buckets, lifecycle events, starting validator jobs",
        "jobs": "validator jobs: the pipeline bucket (inputs, artifacts, output.json), nothing else",
        "web": "the dashboard and REST API: reads, accounts, uploads to the inbox, cancels",
        "scheduler": "the identity Pub/Sub pushes events and the tick with: invokes the functions, nothing else",
        "builder": "Cloud Build: builds the job image and the services from source, pushes images, writes logs",
    }

    def accounts(self) -> list[Resource]:
        made = []
        for role, purpose in self.ACCOUNTS.items():
            description = f"validibot {self.c.stage}: {purpose}"
            made.append(
                Resource(
                    "service-account",
                    self.c.account(role),
                    self.g("iam", "service-accounts", "describe", self.c.account(role), "--format=json"),
                    _by_description(description),
                    [
                        self.g(
                            "iam",
                            "service-accounts",
                            "create",
                            self.c.name(role),
                            f"--display-name=validibot {role} ({self.c.stage})",
                            f"--description={description}",
                        )
                    ],
                    [self.g("iam", "service-accounts", "update", self.c.account(role), f"--description={description}")],
                )
            )
        # The functions start jobs that run as the jobs' account; Pub/Sub mints the push's OIDC tokens as the
        # scheduler account (needed on projects whose Pub/Sub predates April 2021).
        made += [
            self.binding(
                "account-binding",
                ("iam", "service-accounts"),
                self.c.account("jobs"),
                f"serviceAccount:{self.c.account('functions')}",
                "roles/iam.serviceAccountUser",
            ),
            self.binding(
                "account-binding",
                ("iam", "service-accounts"),
                self.c.account("scheduler"),
                self.pubsub_agent,
                "roles/iam.serviceAccountTokenCreator",
            ),
        ]
        return made

    def custom_roles(self) -> list[Resource]:
        made = []
        for kind, (title, permissions) in CUSTOM_ROLES.items():
            joined = ",".join(permissions)
            description = f"validibot {self.c.stage}: {title}; config {fingerprint({'permissions': joined})}"
            role = self.c.role_id(kind)
            flags = [f"--title=validibot {kind.replace('_', ' ')} ({self.c.stage})", f"--description={description}"]
            made.append(
                Resource(
                    "custom-role",
                    role,
                    self.g("iam", "roles", "describe", role, "--format=json"),
                    _by_description(description),
                    [self.g("iam", "roles", "create", role, *flags, f"--permissions={joined}", "--stage=GA")],
                    [self.g("iam", "roles", "update", role, *flags, f"--permissions={joined}")],
                )
            )
        return made

    # Project-wide grants, each for a reason the README lists.
    PROJECT_ROLES = (
        ("functions", "roles/datastore.user"),
        ("functions", "roles/logging.logWriter"),
        ("jobs", "roles/logging.logWriter"),
        ("web", "roles/datastore.user"),
        ("web", "roles/logging.logWriter"),
        # Builds run as an account of their own: where an org policy withholds grants from Cloud Build's default
        # account, deploying still works, and the builds hold nothing the services hold.
        ("builder", "roles/artifactregistry.writer"),
        ("builder", "roles/logging.logWriter"),
        ("builder", "roles/storage.objectViewer"),
    )

    def project_roles(self) -> list[Resource]:
        return [
            self.binding(
                "project-binding", ("projects",), self.c.project, f"serviceAccount:{self.c.account(who)}", role
            )
            for who, role in self.PROJECT_ROLES
        ]

    def binding(self, kind: str, group: tuple[str, ...], target: str, member: str, role: str) -> Resource:
        where = [f"--region={self.c.region}"] if group in (("run", "jobs"), ("run", "services")) else []
        # A project policy may hold conditional bindings; this grant is unconditional, which gcloud must be told.
        unconditional = ["--condition=None"] if group == ("projects",) else []
        read = self.g(*group, "get-iam-policy", target, *where, "--format=json")
        add = self.g(
            *group, "add-iam-policy-binding", target, *where, f"--member={member}", f"--role={role}", *unconditional
        )
        return Resource(kind, f"{target} {role} {member.split(':', 1)[1]}", read, _has_binding(member, role), [add])

    # -- storage and events ---------------------------------------------------------------------------------

    def buckets(self) -> list[Resource]:
        made = []
        for bucket, keep_deleted_days in ((self.c.files_bucket, 30), (self.c.inbox_bucket, 7)):
            lifecycle = ROOT / ".validibot" / "deploy" / f"lifecycle-{keep_deleted_days}.json"
            url = f"gs://{bucket}"
            # Set on create and kept by every update: both are in the fingerprint, with the lifecycle's rules.
            access = ["--uniform-bucket-level-access", "--public-access-prevention"]
            settings = [*access, "--versioning", LIFECYCLES[keep_deleted_days]]
            configure = self.g(
                "storage",
                "buckets",
                "update",
                url,
                *access,
                "--versioning",
                f"--lifecycle-file={lifecycle}",
                f"--update-labels={labels(self.c, settings)}",
            )
            made.append(
                Resource(
                    "bucket",
                    bucket,
                    self.g("storage", "buckets", "describe", url, "--format=json"),
                    self._bucket_judge(fingerprint(settings)),
                    [self.g("storage", "buckets", "create", url, f"--location={self.c.region}", *access), configure],
                    [configure],
                )
            )
        made += [
            self.binding("bucket-binding", ("storage", "buckets"), f"gs://{bucket}", member, role)
            for bucket, member, role in (
                (self.c.files_bucket, f"serviceAccount:{self.c.account('functions')}", "roles/storage.objectUser"),
                # Read each upload, and delete it when retention purges its run.
                (self.c.inbox_bucket, f"serviceAccount:{self.c.account('functions')}", "roles/storage.objectUser"),
                (self.c.files_bucket, f"serviceAccount:{self.c.account('jobs')}", "roles/storage.objectUser"),
                (self.c.files_bucket, f"serviceAccount:{self.c.account('web')}", "roles/storage.objectViewer"),
                (self.c.inbox_bucket, f"serviceAccount:{self.c.account('web')}", "roles/storage.objectCreator"),
            )
        ]
        return made

    def _bucket_judge(self, expected: str) -> Callable[[Any], str]:
        by_label = _by_label(expected, _own_labels)

        def judge(found: Any) -> str:
            location = str((found or {}).get("location", self.c.region))
            if location.lower() != self.c.region.lower():
                # A bucket cannot move: the same stage in a second region needs a stage name of its own.
                raise PlanRefused(f"bucket {(found or {}).get('name')} is in {location}, not {self.c.region}")
            return by_label(found)

        return judge

    def topic_names(self) -> dict[str, str]:
        return {
            "notifications": self.c.name("gcs-notifications"),
            "events": self.c.name("run-events"),
            "maintenance": self.c.name("maintenance"),
            "dead-letter": self.c.name("dead-letter"),
        }

    def topics(self) -> list[Resource]:
        made = []
        for topic in self.topic_names().values():
            made.append(
                Resource(
                    "topic",
                    topic,
                    self.g("pubsub", "topics", "describe", topic, "--format=json"),
                    _by_label(fingerprint([]), _own_labels),
                    [self.g("pubsub", "topics", "create", topic, f"--labels={labels(self.c, [])}")],
                    [self.g("pubsub", "topics", "update", topic, f"--update-labels={labels(self.c, [])}")],
                )
            )
        topics = self.topic_names()
        pubsub_agent = self.pubsub_agent
        grants = [
            # Dead lettering: Pub/Sub's own agent publishes what could not be delivered.
            (topics["dead-letter"], pubsub_agent, "roles/pubsub.publisher"),
            # Cloud Storage's agent publishes the buckets' finalize notifications.
            (topics["notifications"], f"serviceAccount:{self.storage_agent}", "roles/pubsub.publisher"),
            (topics["events"], f"serviceAccount:{self.c.account('functions')}", "roles/pubsub.publisher"),
            # A cancel (by the web) publishes the run's ending.
            (topics["events"], f"serviceAccount:{self.c.account('web')}", "roles/pubsub.publisher"),
        ]
        made += [self.binding("topic-binding", ("pubsub", "topics"), t, m, r) for t, m, r in grants]
        return made

    def notifications(self) -> list[Resource]:
        topic = self.topic_names()["notifications"]
        made = []
        for bucket in (self.c.inbox_bucket, self.c.files_bucket):

            def judge(found: Any, topic: str = topic) -> str:
                # gcloud lists each as {"Bucket URL": ..., "Notification Configuration": {"topic": ...}}.
                configs = [(n.get("Notification Configuration") or n) for n in found or []]
                ours = any(str(c.get("topic", "")).endswith(f"/topics/{topic}") for c in configs)
                return "same" if ours else "missing"

            made.append(
                Resource(
                    "notification",
                    f"gs://{bucket} -> {topic}",
                    self.g("storage", "buckets", "notifications", "list", f"gs://{bucket}", "--format=json"),
                    judge,
                    [
                        self.g(
                            "storage",
                            "buckets",
                            "notifications",
                            "create",
                            f"gs://{bucket}",
                            f"--topic={topic}",
                            "--event-types=OBJECT_FINALIZE",
                            "--payload-format=json",
                        )
                    ],
                )
            )
        return made

    def secrets(self) -> list[Resource]:
        made = []
        for secret, reader in (("signing-secret", "functions"), ("web-secret-key", "web")):
            name = self.c.name(secret)

            def has_version(found: Any) -> str:
                return "same" if found else "missing"

            made += [
                Resource(
                    "secret",
                    name,
                    self.g("secrets", "describe", name, "--format=json"),
                    _by_label(fingerprint([]), _own_labels),
                    [
                        self.g(
                            "secrets",
                            "create",
                            name,
                            "--replication-policy=automatic",
                            f"--labels={labels(self.c, [])}",
                        )
                    ],
                    [self.g("secrets", "update", name, f"--update-labels={labels(self.c, [])}")],
                ),
                # Its value: generated when the secret has no enabled version, sent on stdin (never on a command
                # line, so never in a plan or a log); rotation adds a version.
                Resource(
                    "secret-version",
                    name,
                    self.g("secrets", "versions", "list", name, "--filter=state:enabled", "--limit=1", "--format=json"),
                    has_version,
                    [self.g("secrets", "versions", "add", name, "--data-file=-")],
                ),
                self.binding(
                    "secret-binding",
                    ("secrets",),
                    name,
                    f"serviceAccount:{self.c.account(reader)}",
                    "roles/secretmanager.secretAccessor",
                ),
            ]
        return made

    # -- Firestore ------------------------------------------------------------------------------------------

    def firestore(self) -> Resource:
        def judge(found: Any) -> str:
            if found is None:
                return "missing"
            return "same" if found.get("type") == "FIRESTORE_NATIVE" else "different"

        database = f"--database={self.c.database}"
        return Resource(
            "firestore",
            self.c.database,
            self.g("firestore", "databases", "describe", database, "--format=json"),
            judge,
            [
                self.g(
                    "firestore",
                    "databases",
                    "create",
                    database,
                    f"--location={self.c.region}",
                    "--type=firestore-native",
                )
            ],
        )

    def indexes(self) -> list[Resource]:
        made = []
        for index in json.loads(INDEXES.read_text())["indexes"]:
            group, scope = index["collectionGroup"], index["queryScope"]
            fields = [(f["fieldPath"], f["order"]) for f in index["fields"]]

            def judge(
                found: Any, group: str = group, scope: str = scope, fields: list[tuple[str, str]] = fields
            ) -> str:
                for existing in found or []:
                    same_group = f"/collectionGroups/{group}/" in existing.get("name", "")
                    existing_fields = [(f.get("fieldPath"), f.get("order")) for f in existing.get("fields", [])]
                    if same_group and existing.get("queryScope") == scope and existing_fields[: len(fields)] == fields:
                        return "same"
                return "missing"

            configs = [f"--field-config=field-path={path},order={order.lower()}" for path, order in fields]
            made.append(
                Resource(
                    "firestore-index",
                    f"{group} ({', '.join(f'{p} {o.lower()}' for p, o in fields)})",
                    self.g(
                        "firestore", "indexes", "composite", "list", f"--database={self.c.database}", "--format=json"
                    ),
                    judge,
                    [
                        self.g(
                            "firestore",
                            "indexes",
                            "composite",
                            "create",
                            f"--database={self.c.database}",
                            f"--collection-group={group}",
                            # gcloud's spelling of the index file's COLLECTION / COLLECTION_GROUP.
                            f"--query-scope={scope.lower().replace('_', '-')}",
                            *configs,
                            "--async",
                        )
                    ],
                )
            )
        return made

    def ttls(self) -> list[Resource]:
        """Firestore deletes receipts and Idempotency-Key records past their expiry field (the fieldOverrides of
        deploy/firestore.indexes.json that say ttl)."""
        made = []
        for override in json.loads(INDEXES.read_text()).get("fieldOverrides", []):
            if not override.get("ttl"):
                continue
            group, field_path = override["collectionGroup"], override["fieldPath"]

            def judge(found: Any, suffix: str = f"/collectionGroups/{group}/fields/{field_path}") -> str:
                return "same" if any(entry.get("name", "").endswith(suffix) for entry in found or []) else "missing"

            made.append(
                Resource(
                    "firestore-ttl",
                    f"{group}.{field_path}",
                    self.g("firestore", "fields", "ttls", "list", f"--database={self.c.database}", "--format=json"),
                    judge,
                    [
                        self.g(
                            "firestore",
                            "fields",
                            "ttls",
                            "update",
                            field_path,
                            f"--database={self.c.database}",
                            f"--collection-group={group}",
                            "--enable-ttl",
                            "--async",
                        )
                    ],
                )
            )
        return made

    # -- the code: the job image, the jobs, the functions, the web -----------------------------------------

    def repository(self) -> Resource:
        name = f"validibot-{self.c.stage}"
        return Resource(
            "repository",
            name,
            self.g("artifacts", "repositories", "describe", name, f"--location={self.c.region}", "--format=json"),
            _present,
            [
                self.g(
                    "artifacts",
                    "repositories",
                    "create",
                    name,
                    f"--location={self.c.region}",
                    "--repository-format=docker",
                )
            ],
        )

    def job_image(self) -> Resource:
        return Resource(
            "image",
            self.c.image,
            self.g("artifacts", "docker", "images", "describe", self.c.image, "--format=json"),
            _present,
            [
                self.g(
                    "builds",
                    "submit",
                    str(ROOT),
                    f"--config={ROOT / 'deploy' / 'cloudbuild-jobs.yaml'}",
                    f"--substitutions=_IMAGE={self.c.image}",
                    f"--region={self.c.region}",
                    f"--service-account={self.builder}",
                )
            ],
        )

    def environment(self, **more: str) -> str:
        env = {
            "VALIDIBOT_PROJECT": self.c.project,
            "VALIDIBOT_STAGE": self.c.stage,
            "VALIDIBOT_BUCKET": self.c.files_bucket,
            "VALIDIBOT_INBOX_BUCKET": self.c.inbox_bucket,
            "VALIDIBOT_RUN_EVENTS_TOPIC": self.topic_names()["events"],
            "VALIDIBOT_JOB_LAUNCHER": "cloudrun",
            "VALIDIBOT_CLOUDRUN_REGION": self.c.region,
            "VALIDIBOT_CLOUDRUN_JOB_SUFFIX": f"-{self.c.stage}",
            "VALIDIBOT_LOG_FORMAT": "json",
            "VALIDIBOT_FIRESTORE_DATABASE": self.c.database,
            **more,
        }
        # Commas separate variables for gcloud; a value with one uses gcloud's ^@^ escape.
        return "^@^" + "@".join(f"{k}={v}" for k, v in env.items())

    def job_names(self) -> dict[str, str]:
        return {validator: f"validibot-validator-{validator}-{self.c.stage}" for validator in sorted(REGISTERED)}

    def jobs(self) -> list[Resource]:
        made = []
        for validator, job in self.job_names().items():
            memory = self.c.job_memory.get(validator, self.c.default_job_memory)
            flags = [
                f"--region={self.c.region}",
                f"--image={self.c.image}",
                "--tasks=1",
                "--max-retries=0",
                f"--task-timeout={self.c.job_timeout_seconds}s",
                f"--cpu={self.c.job_cpu}",
                f"--memory={memory}",
                f"--service-account={self.c.account('jobs')}",
                f"--set-env-vars={self.environment()}",
            ]
            # Every flag is in the fingerprint: any change of a setting here is an update there.
            labelled = [*flags, f"--labels={labels(self.c, flags, validator=validator, version=self.c.source)}"]
            made.append(
                Resource(
                    "job",
                    job,
                    self.g("run", "jobs", "describe", job, f"--region={self.c.region}", "--format=json"),
                    _by_label(fingerprint(flags), _metadata_labels),
                    [self.g("run", "jobs", "create", job, *labelled)],
                    [self.g("run", "jobs", "update", job, *labelled)],
                )
            )
            made += [
                self.binding(
                    "job-binding",
                    ("run", "jobs"),
                    job,
                    f"serviceAccount:{self.c.account(who)}",
                    f"projects/{self.c.project}/roles/{self.c.role_id(kind)}",
                )
                for who, kind in (("functions", "job_runner"), ("web", "job_canceller"))
            ]
        return made

    def service_url(self, service: str) -> str:
        # Cloud Run's deterministic URL: known before the service exists, so the subscriptions can be planned.
        return f"https://{service}-{self.project_number}.{self.c.region}.run.app"

    def service(self, what: str, flags: list[str]) -> Resource:
        """A Cloud Run service built from this checkout; the source's identity and every flag are fingerprinted."""
        name = self.c.name(what)
        flags = [*flags, f"--build-service-account={self.builder}"]
        settings = [self.c.source, *flags]
        deploy = self.g(
            "run",
            "deploy",
            name,
            f"--source={ROOT}",
            f"--region={self.c.region}",
            *flags,
            f"--labels={labels(self.c, settings, version=self.c.source)}",
        )
        return Resource(
            "service",
            name,
            self.g("run", "services", "describe", name, f"--region={self.c.region}", "--format=json"),
            _by_label(fingerprint(settings), _metadata_labels),
            [deploy],
            [deploy],
        )

    def functions(self) -> Resource:
        env = self.environment(VALIDIBOT_WEB_URL=self.service_url(self.c.name("web")))
        return self.service(
            "functions",
            [
                "--function=handle_event",
                "--base-image=python311",
                "--set-build-env-vars=GOOGLE_FUNCTION_SOURCE=functions/main.py",
                f"--service-account={self.c.account('functions')}",
                "--no-allow-unauthenticated",
                "--concurrency=8",
                "--timeout=600",
                f"--set-env-vars={env}",
                f"--set-secrets=VALIDIBOT_SIGNING_SECRET={self.c.name('signing-secret')}:latest",
            ],
        )

    def web(self) -> Resource:
        env = self.environment(VALIDIBOT_WEB_URL=self.service_url(self.c.name("web")))
        entrypoint = "gunicorn --bind :$PORT --threads 64 'web.wsgi:create()'"
        return self.service(
            "web",
            [
                f"--set-build-env-vars=GOOGLE_ENTRYPOINT={entrypoint}",
                f"--service-account={self.c.account('web')}",
                "--allow-unauthenticated",
                "--concurrency=64",
                "--timeout=3600",
                f"--set-env-vars={env}",
                f"--set-secrets=VALIDIBOT_WEB_SECRET_KEY={self.c.name('web-secret-key')}:latest",
            ],
        )

    # -- delivery -------------------------------------------------------------------------------------------

    def subscriptions(self) -> list[Resource]:
        topics = self.topic_names()
        functions = self.c.name("functions")
        url = self.service_url(functions)
        made = [
            self.binding(
                "service-binding",
                ("run", "services"),
                functions,
                f"serviceAccount:{self.c.account('scheduler')}",
                "roles/run.invoker",
            )
        ]
        pubsub_agent = self.pubsub_agent
        for what, topic, attempts in (
            ("pipeline", topics["notifications"], self.c.max_delivery_attempts),
            ("maintenance", topics["maintenance"], 5),
        ):
            name = self.c.name(what)
            # functions-framework reads the topic from the push path (as the local stack's subscriptions do).
            flags = [
                f"--push-endpoint={url}/projects/{self.c.project}/topics/{topic}",
                f"--push-auth-service-account={self.c.account('scheduler')}",
                f"--push-auth-token-audience={url}",
                f"--dead-letter-topic={topics['dead-letter']}",
                f"--max-delivery-attempts={attempts}",
                "--min-retry-delay=1s",
                "--max-retry-delay=30s",
                "--ack-deadline=600",
            ]
            made += [
                self.subscription(name, topic, flags),
                # Dead lettering: Pub/Sub's agent acknowledges the message it moved to the dead letter topic.
                self.binding(
                    "subscription-binding", ("pubsub", "subscriptions"), name, pubsub_agent, "roles/pubsub.subscriber"
                ),
            ]
        # What could not be delivered is kept for operators to read (a topic without a subscription keeps nothing).
        made.append(
            self.subscription(self.c.name("dead-letter"), topics["dead-letter"], ["--message-retention-duration=7d"])
        )
        return made

    def subscription(self, name: str, topic: str, flags: list[str]) -> Resource:
        """A subscription whose every flag is in its fingerprint."""
        return Resource(
            "subscription",
            name,
            self.g("pubsub", "subscriptions", "describe", name, "--format=json"),
            _by_label(fingerprint([topic, *flags]), _own_labels),
            [
                self.g(
                    "pubsub",
                    "subscriptions",
                    "create",
                    name,
                    f"--topic={topic}",
                    *flags,
                    f"--labels={labels(self.c, [topic, *flags])}",
                )
            ],
            [
                self.g(
                    "pubsub",
                    "subscriptions",
                    "update",
                    name,
                    *flags,
                    f"--update-labels={labels(self.c, [topic, *flags])}",
                )
            ],
        )

    def tick(self) -> Resource:
        name = self.c.name("tick")
        topic = self.topic_names()["maintenance"]
        settings = {"schedule": self.c.tick_schedule, "topic": topic}
        description = f"validibot {self.c.stage} maintenance tick; config {fingerprint(settings)}"
        flags = [
            f"--location={self.c.region}",
            f"--schedule={self.c.tick_schedule}",
            f"--topic={topic}",
            "--message-body=tick",
            "--update-attributes=validibot-event=maintenance-tick",
            f"--description={description}",
        ]
        create_flags = [f.replace("--update-attributes", "--attributes") for f in flags]
        return Resource(
            "scheduler-job",
            name,
            self.g("scheduler", "jobs", "describe", name, f"--location={self.c.region}", "--format=json"),
            _by_description(description),
            [self.g("scheduler", "jobs", "create", "pubsub", name, *create_flags)],
            [self.g("scheduler", "jobs", "update", "pubsub", name, *flags)],
        )


# -- running it ---------------------------------------------------------------------------------------------


class GcloudFailed(RuntimeError):
    pass


class PlanRefused(GcloudFailed):
    """What exists cannot be brought in line by an update (a bucket in another region)."""


NOT_FOUND = ("not_found", "not found", "does not exist", "404")
API_DISABLED = ("service_disabled", "has not been used in project", "it is disabled")


@dataclass
class Gcloud:
    """gcloud as a subprocess: reads give parsed JSON (None when the resource does not exist), writes run."""

    runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run

    def read(self, argv: list[str]) -> Any:
        done = self.runner(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            message = done.stderr.lower()
            # An API not enabled yet (a new project) holds no resource: it is planned as missing, and the plan's
            # first action enables it.
            if any(s in message for s in (*NOT_FOUND, *API_DISABLED)):
                return None
            raise GcloudFailed(f"{' '.join(argv[:4])}: {done.stderr.strip()[:500]}")
        return json.loads(done.stdout) if done.stdout.strip() else None

    def run(self, argv: list[str], stdin: str | None = None) -> None:
        closed = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
        done = self.runner(argv, capture_output=True, text=True, **closed)
        if done.returncode != 0:
            raise GcloudFailed(f"{' '.join(argv[:5])}: {done.stderr.strip()[:500]}")


def project_number(gcloud: Gcloud, project: str) -> str:
    """The project's number: in the service agents' names and in Cloud Run's URLs."""
    described = gcloud.read(_gcloud("projects", "describe", project, "--format=json", project=project)) or {}
    number = str(described.get("projectNumber", ""))
    if not number.isdigit():
        raise GcloudFailed(f"project {project} was not found, or you may not read it (gcloud projects describe)")
    return number


def plan(resources: list[Resource], gcloud: Gcloud) -> Iterator[Action]:
    """Each resource read and judged: what applying would do to it."""
    reads: dict[tuple[str, ...], Any] = {}
    for resource in resources:
        key = tuple(resource.read)
        if key not in reads:  # lists and policies are read once for every resource they answer
            reads[key] = gcloud.read(resource.read)
        state = resource.judge(reads[key])
        if state == "same":
            yield Action("unchanged", resource)
        elif state == "missing" or not resource.update:
            yield Action("create", resource)
        else:
            yield Action("update", resource)


def apply(action: Action, gcloud: Gcloud, secret: Callable[[], str]) -> None:
    commands = action.resource.create if action.verb == "create" else action.resource.update
    for argv in commands:
        gcloud.run(argv, stdin=secret() if "--data-file=-" in argv else None)


LIFECYCLES = {
    # Deleted and replaced versions are kept a while (recovery, and the runs' pinned reads), then removed.
    days: {"rule": [{"action": {"type": "Delete"}, "condition": {"isLive": False, "daysSinceNoncurrentTime": days}}]}
    for days in (7, 30)
}


def write_lifecycles() -> None:
    folder = ROOT / ".validibot" / "deploy"
    folder.mkdir(parents=True, exist_ok=True)
    for days, rules in LIFECYCLES.items():
        (folder / f"lifecycle-{days}.json").write_text(json.dumps(rules, indent=2))
