"""The web's entry point for a WSGI server: `gunicorn 'web.wsgi:create()'`.

Gunicorn calls `create` in each worker after it forks (no --preload), so every worker makes its own clients.
"""

from __future__ import annotations

from flask_openapi3 import OpenAPI

from bootstrap import Services
from web.accounts import Accounts
from web.app import create_app
from web.context import WebContext


def app_for(services: Services) -> OpenAPI:
    """The web over the services the wiring place made: the deployment's, or a test's own."""
    return create_app(
        WebContext(
            settings=services.settings,
            reads=services.run_reads,
            objects=services.objects,
            store=services.run_store,
            accounts=Accounts(services.account_store, services.settings),
            operations=services.operations,
            workflows=services.workflows,
            iap_email=services.iap_email if services.settings.iap_audience else None,
        )
    )


def create() -> OpenAPI:
    return app_for(Services.from_environment())
