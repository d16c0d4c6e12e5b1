"""The Flask app factory: the dashboard's pages and the JSON API as blueprints over the read-side ports."""

from __future__ import annotations

from flask import Flask, redirect, url_for
from werkzeug.wrappers import Response

from schemas.settings import Settings
from store.ports import ObjectStore, RunReads
from web.api import api
from web.context import EXTENSION_KEY, WebContext
from web.filters import register_filters
from web.pages import pages


def create_app(settings: Settings, reads: RunReads, objects: ObjectStore) -> Flask:
    app = Flask(__name__)
    app.extensions[EXTENSION_KEY] = WebContext(settings, reads, objects)
    app.register_blueprint(pages)
    app.register_blueprint(api)
    register_filters(app)

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("pages.runs", org=settings.default_org))

    return app
