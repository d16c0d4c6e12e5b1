"""The functions-framework entry point: `functions-framework --target handle_event --source functions/main.py`.

Every finalize event of the bucket arrives here (Eventarc direct, or a Pub/Sub notification pushed by a
subscription) and is routed by object path to INTAKE, LAUNCH or INGEST.
"""

from __future__ import annotations

import logging
import threading

import functions_framework
from cloudevents.http import CloudEvent

from events.decode import UndecodableEvent, decode_finalize
from events.publish import LifecyclePublisher
from functions.handlers import Pipeline
from jobs.launchers.base import Launcher
from jobs.launchers.inline import InlineLauncher
from jobs.launchers.local import LocalProcessLauncher
from schemas.settings import Settings
from store.clients import firestore_client, storage_client
from store.objects import ObjectStore
from store.runs import RunStore

log = logging.getLogger("validibot.pipeline")

_lock = threading.Lock()
_pipeline: Pipeline | None = None


def build_launchers(settings: Settings, objects: ObjectStore) -> dict[str, Launcher]:
    """Inline always; job validators go to the one job launcher this deployment is configured for."""
    launchers: dict[str, Launcher] = {"inline": InlineLauncher(objects, settings)}
    if settings.job_launcher == "cloudrun":
        # Imported here so a local deployment never loads the Cloud Run client or looks for credentials.
        from jobs.launchers.cloudrun import CloudRunLauncher, jobs_client

        launchers["cloudrun"] = CloudRunLauncher(settings, jobs_client(settings))
    else:
        launchers["local"] = LocalProcessLauncher(objects, settings)
    return launchers


def build_pipeline(settings: Settings) -> Pipeline:
    objects = ObjectStore(storage_client(settings.project))
    return Pipeline(
        settings=settings,
        store=RunStore(firestore_client(settings.project)),
        objects=objects,
        publisher=LifecyclePublisher(settings.project, settings.run_events_topic),
        launchers=build_launchers(settings, objects),
    )


def get_pipeline() -> Pipeline:
    """One set of clients per process, made on first use (clients must not be created before a fork)."""
    global _pipeline
    with _lock:
        if _pipeline is None:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
            _pipeline = build_pipeline(Settings())
        return _pipeline


@functions_framework.cloud_event
def handle_event(cloud_event: CloudEvent) -> None:
    try:
        finalized = decode_finalize(cloud_event)
    except UndecodableEvent as exc:
        log.warning("acknowledged an undecodable event %s: %s", cloud_event["id"], exc)
        return
    if finalized is not None:
        get_pipeline().handle(finalized)
