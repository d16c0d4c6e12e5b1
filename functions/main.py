"""The functions-framework entry point: `functions-framework --target handle_event --source functions/main.py`.

Every finalize event of the buckets arrives here (Eventarc direct, or a Pub/Sub notification pushed by a
subscription) and goes to the pipeline, which routes it by object path (functions/pipeline.py); so does the
maintenance tick (a message on the maintenance topic), which runs the MAINTAIN sweeps.
"""

from __future__ import annotations

import logging
import threading

import functions_framework
from cloudevents.http import CloudEvent

from bootstrap import Services
from bootstrap.logs import configure_logging
from events.decode import UndecodableEvent, decode_finalize, is_maintenance_tick
from functions.pipeline import Pipeline

log = logging.getLogger("validibot.pipeline")

_lock = threading.Lock()
_pipeline: Pipeline | None = None


def get_pipeline() -> Pipeline:
    """One set of clients per process, made on first use (clients must not be created before a fork)."""
    global _pipeline
    with _lock:
        if _pipeline is None:
            services = Services.from_environment()
            configure_logging(services.settings, "functions")
            # Without the secret no output can be verified: fail every delivery loudly rather than reject them all.
            services.settings.signing_secret_bytes()
            _pipeline = services.pipeline
        return _pipeline


@functions_framework.cloud_event
def handle_event(cloud_event: CloudEvent) -> None:
    if is_maintenance_tick(cloud_event):
        get_pipeline().tick()
        return
    try:
        finalized = decode_finalize(cloud_event)
    except UndecodableEvent as exc:
        log.warning("acknowledged an undecodable event %s: %s", cloud_event["id"], exc)
        return
    if finalized is not None:
        get_pipeline().handle(finalized)
