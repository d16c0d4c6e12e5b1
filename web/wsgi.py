"""The web's entry point for a WSGI server: `gunicorn 'web.wsgi:create()'`.

Gunicorn calls `create` in each worker after it forks (no --preload), so every worker makes its own clients.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask_openapi3 import OpenAPI

from bootstrap import Services
from bootstrap.logs import configure_logging
from schemas.settings import Settings
from web.accounts import Accounts
from web.app import create_app
from web.context import WebContext


def app_for(
    services: Services, settings: Settings | None = None, clock: Callable[[], datetime] | None = None
) -> OpenAPI:
    """The web over the services the wiring place made: the deployment's, or a test's own (whose `settings` and
    accounts' `clock` may differ from the services')."""
    settings = settings or services.settings
    accounts = (
        Accounts(services.account_store, settings, clock) if clock else Accounts(services.account_store, settings)
    )
    return create_app(
        WebContext(
            settings=settings,
            reads=services.run_reads,
            objects=services.objects,
            store=services.run_store,
            accounts=accounts,
            operations=services.operations,
            workflows=services.workflows,
            watch=services.run_watch,
            iap_email=services.iap_email if settings.iap_audience else None,
        )
    )


def create() -> OpenAPI:
    services = Services.from_environment()
    configure_logging(services.settings, "web")
    return app_for(services)
