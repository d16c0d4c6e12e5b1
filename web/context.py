"""What the web's views share: the ports the app was built with, and reaching a run only through its own org."""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, current_app

from schemas.documents import RunDoc
from schemas.paths import is_run_id, is_slug
from schemas.settings import Settings
from store.ports import ObjectStore, RunReads

EXTENSION_KEY = "validibot"


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    reads: RunReads
    objects: ObjectStore


def web_context() -> WebContext:
    context: WebContext = current_app.extensions[EXTENSION_KEY]
    return context


def org_run(org: str, run_id: str) -> RunDoc:
    """A run only through the organization that owns it: another org's run id is simply not found."""
    # Ids are checked for form before they reach Firestore: a malformed one is simply not found.
    found = web_context().reads.run(run_id) if is_slug(org) and is_run_id(run_id) else None
    if found is None or found.org != org:
        abort(404)
    return found
