"""The one wiring place: settings, Google Cloud clients, the ports' adapters, the launchers and the pipeline.

Every process builds what it needs here and nowhere else: the functions entry point (`functions/main.py`), the web
(`web/wsgi.py`), the CLI and the local stack (`deploy/`), and the validator job (`jobs/run.py`). Clients find the
emulators through the standard variables (STORAGE_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST).

Each part is made on first use and kept: a process pays only for the clients it touches (a validator job uses
Cloud Storage alone, and every 100 ms of its start-up is paid on every run), which is also why the adapter modules
are imported where they are first needed rather than at the top.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from events.ports import Publisher
from schemas.settings import Settings
from store.ports import AccountStore, ObjectStore, RunReads, RunStore, RunWatch

if TYPE_CHECKING:
    from google.cloud import firestore, pubsub_v1, run_v2, storage

    from functions.operations import Operations
    from functions.pipeline import Pipeline
    from functions.stage import StageContext
    from functions.workflows import Workflows
    from jobs.launchers.base import Launcher


# Where Identity-Aware Proxy publishes the keys its signed headers are made with (PEM, by key id), who it says
# it is, and how long its keys are kept here.
IAP_CERTS_URL = "https://www.gstatic.com/iap/verify/public_key"
IAP_ISSUER = "https://cloud.google.com/iap"
IAP_KEYS_SECONDS = 3600


@dataclass
class Services:
    settings: Settings
    _iap_cache: tuple[float, dict[str, str]] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_environment(cls) -> Services:
        return cls(Settings())

    # -- Google Cloud clients ------------------------------------------------------------------------------

    @cached_property
    def storage_client(self) -> storage.Client:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        if os.environ.get("STORAGE_EMULATOR_HOST"):
            return storage.Client(project=self.settings.project, credentials=AnonymousCredentials())
        return storage.Client(project=self.settings.project)

    @cached_property
    def firestore_client(self) -> firestore.Client:
        from google.cloud import firestore

        # FIRESTORE_EMULATOR_HOST, when set, is honoured by the client itself.
        return firestore.Client(project=self.settings.project, database=self.settings.firestore_database)

    @cached_property
    def publisher_client(self) -> pubsub_v1.PublisherClient:
        """For administering topics (provisioning); lifecycle events use `publisher`, whose client is tuned."""
        from google.cloud import pubsub_v1

        return pubsub_v1.PublisherClient()

    @cached_property
    def lifecycle_publisher_client(self) -> pubsub_v1.PublisherClient:
        """Lifecycle events are ordered per run, and each is one small message: sent at once, not batched."""
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions

        return pubsub_v1.PublisherClient(
            batch_settings=BatchSettings(max_latency=0.001),
            publisher_options=PublisherOptions(enable_message_ordering=True),
        )

    @cached_property
    def subscriber_client(self) -> pubsub_v1.SubscriberClient:
        from google.cloud import pubsub_v1

        return pubsub_v1.SubscriberClient()

    def _cloudrun_client_arguments(self) -> dict[str, Any]:
        """The Cloud Run Admin API as production reaches it, or a local stand-in for it (tests): plain HTTP, REST
        transport, no credentials to find."""
        if not self.settings.cloudrun_api_endpoint:
            return {}
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return {
            "transport": "rest",
            "client_options": ClientOptions(api_endpoint=self.settings.cloudrun_api_endpoint),
            "credentials": AnonymousCredentials(),
        }

    @cached_property
    def run_jobs_client(self) -> run_v2.JobsClient:
        from google.cloud import run_v2

        return run_v2.JobsClient(**self._cloudrun_client_arguments())

    @cached_property
    def run_executions_client(self) -> run_v2.ExecutionsClient:
        """Reads and cancels the executions the jobs client started (the maintenance sweeps)."""
        from google.cloud import run_v2

        return run_v2.ExecutionsClient(**self._cloudrun_client_arguments())

    # -- The ports' adapters -------------------------------------------------------------------------------

    @cached_property
    def run_store(self) -> RunStore:
        from store.runs import FirestoreRunStore

        return FirestoreRunStore(self.firestore_client)

    @cached_property
    def account_store(self) -> AccountStore:
        from store.accounts import FirestoreAccountStore

        return FirestoreAccountStore(self.firestore_client)

    @cached_property
    def run_watch(self) -> RunWatch:
        from store.watch import FirestoreRunWatch

        return FirestoreRunWatch(self.firestore_client)

    @cached_property
    def run_reads(self) -> RunReads:
        from store.reads import FirestoreRunReads

        return FirestoreRunReads(self.firestore_client)

    @cached_property
    def objects(self) -> ObjectStore:
        from store.objects import GcsObjectStore

        return GcsObjectStore(self.storage_client)

    @cached_property
    def publisher(self) -> Publisher:
        from events.publish import PubSubPublisher

        return PubSubPublisher(self.lifecycle_publisher_client, self.settings.project, self.settings.run_events_topic)

    @cached_property
    def launchers(self) -> dict[str, Launcher]:
        """Inline always; job validators go to the one job launcher this deployment is configured for."""
        from jobs.launchers.inline import InlineLauncher

        launchers: dict[str, Launcher] = {"inline": InlineLauncher(self.objects, self.settings)}
        if self.settings.job_launcher == "cloudrun":
            from jobs.launchers.cloudrun import CloudRunLauncher

            launchers["cloudrun"] = CloudRunLauncher(self.settings, self.run_jobs_client, self.run_executions_client)
        else:
            from jobs.launchers.local import LocalProcessLauncher

            launchers["local"] = LocalProcessLauncher(self.objects, self.settings)
        return launchers

    # -- The pipeline --------------------------------------------------------------------------------------

    @cached_property
    def stage_context(self) -> StageContext:
        from functions.stage import StageContext

        return StageContext(
            settings=self.settings,
            store=self.run_store,
            objects=self.objects,
            publisher=self.publisher,
            launchers=self.launchers,
        )

    @cached_property
    def pipeline(self) -> Pipeline:
        from functions.pipeline import Pipeline

        return Pipeline.wired(self.stage_context)

    @cached_property
    def workflows(self) -> Workflows:
        """Applying workflow files: their resource files stored, their versions committed."""
        from functions.workflows import Workflows

        return Workflows(self.stage_context)

    @cached_property
    def operations(self) -> Operations:
        """Cancel and re-run, on the same ports (and the same launchers, which stop jobs) as the pipeline."""
        from functions.operations import Operations

        return Operations(self.stage_context)

    # -- People ----------------------------------------------------------------------------------------------

    def iap_email(self, request: Any) -> str | None:
        """The email Identity-Aware Proxy vouches for in the request's signed header (ES256, verified against IAP's
        published keys, its issuer and VALIDIBOT_IAP_AUDIENCE); None when the header is absent or does not verify."""
        from google.auth import jwt
        from google.auth.exceptions import GoogleAuthError

        assertion = request.headers.get("x-goog-iap-jwt-assertion")
        if not assertion:
            return None
        try:
            claims = jwt.decode(assertion, certs=self._iap_keys(), audience=self.settings.iap_audience)
        except (GoogleAuthError, ValueError):
            return None
        email = claims.get("email")
        return email if claims.get("iss") == IAP_ISSUER and isinstance(email, str) else None

    def _iap_keys(self) -> dict[str, str]:
        """IAP's public keys (PEM, by key id), fetched at most once an hour: they rotate rarely, requests are many."""
        import requests

        now = time.monotonic()
        if self._iap_cache is None or now - self._iap_cache[0] > IAP_KEYS_SECONDS:
            response = requests.get(IAP_CERTS_URL, timeout=10)
            response.raise_for_status()
            self._iap_cache = (now, dict(response.json()))
        return self._iap_cache[1]
