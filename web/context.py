"""What the web's views share: the ports and services the app was built with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Request, current_app
from werkzeug.exceptions import NotFound

from functions.operations import Operations
from functions.workflows import Workflows
from schemas.documents import RunDoc
from schemas.paths import is_run_id, is_slug
from schemas.settings import Settings
from store.ports import ObjectStore, RunReads, RunStore, RunWatch
from web.accounts import Accounts

EXTENSION_KEY = "validibot"


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    reads: RunReads
    objects: ObjectStore
    store: RunStore
    accounts: Accounts
    operations: Operations
    workflows: Workflows
    # Live run pages; without it (unit tests) pages poll.
    watch: RunWatch | None = None
    # Behind Identity-Aware Proxy: the verified email of the request's signed header (None when absent or invalid).
    iap_email: Callable[[Request], str | None] | None = None


def web_context() -> WebContext:
    context: WebContext = current_app.extensions[EXTENSION_KEY]
    return context


def org_run(org: str, run_id: str, missing: Callable[[], Exception] = NotFound) -> RunDoc:
    """A run only through the organization that owns it: another org's run id is simply not found (`missing`
    is raised: a page's 404, or the API's problem)."""
    # Ids are checked for form before they reach Firestore: a malformed one is simply not found.
    found = web_context().reads.run(run_id) if is_slug(org) and is_run_id(run_id) else None
    if found is None or found.org != org:
        raise missing()
    return found
