"""The Flask app factory: sign-in, the dashboard's pages and REST API v1, over the ports and services it is given."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, g, jsonify, request
from flask_limiter import Limiter
from flask_openapi3 import Info, OpenAPI
from flask_wtf.csrf import CSRFProtect
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from schemas.log_labels import pop_labels, push_labels
from schemas.paths import is_run_id, is_slug
from web.api import api
from web.auth import presented_key
from web.context import EXTENSION_KEY, WebContext
from web.filters import register_filters
from web.live import live
from web.pages import pages
from web.problems import PROBLEM_JSON, ApiProblem, problem_response
from web.signin import signin
from web.uploads import uploads

API_PREFIX = "/api/v1"
# Every response: scripts, styles, images and connections from this origin only and nothing inline (charts are
# SVG drawn with presentation attributes), no framing, no MIME sniffing, no referrer beyond this site.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
OPENAPI_SCHEMAS = "#/components/schemas/"


def _rate_key() -> str:
    """Requests are counted per valid API key (by its hash: the key itself is never kept), else per client
    address: made-up keys share their address's budget instead of each getting one of its own."""
    caller = presented_key()
    return f"key:{caller.key_hash}" if caller else f"addr:{request.remote_addr}"


def _validation_problem(error: ValidationError) -> Response:
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return problem_response(422, "The request does not match this operation's parameters.", errors=errors)


def _problems_documented_as_sent(doc: dict[str, Any]) -> dict[str, Any]:
    """Errors go out as application/problem+json (RFC 9457), but the library documents every response model as
    application/json: relabel the Problem responses so that the document says what clients will receive."""
    problem = f"{OPENAPI_SCHEMAS}Problem"
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values() if isinstance(operation, dict) else ():
                content = response.get("content", {})
                if content.get("application/json", {}).get("schema", {}).get("$ref") == problem:
                    content[PROBLEM_JSON] = content.pop("application/json")
    return doc


def create_app(context: WebContext) -> OpenAPI:
    settings = context.settings
    secret = settings.web_secret_key.get_secret_value()
    if not secret:
        raise RuntimeError("VALIDIBOT_WEB_SECRET_KEY is not set: sessions cannot be signed")
    app = OpenAPI(
        __name__,
        info=Info(title="validibot-pipeline API", version="1"),
        security_schemes={"api_key": {"type": "http", "scheme": "bearer", "description": "vbk_... API key"}},
        # Served below as a plain rule: the library's own page would add a UI and an unauthenticated index.
        doc_ui=False,
        validation_error_status=422,
        validation_error_callback=_validation_problem,
    )
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        # A submission, plus room for the multipart envelope around it; larger bodies are cut off unread.
        MAX_CONTENT_LENGTH=settings.max_submission_bytes + 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.extensions[EXTENSION_KEY] = context
    csrf = CSRFProtect(app)
    # The API authenticates each request by its bearer key, never by a cookie: no CSRF to guard against there.
    csrf.exempt(api)
    limiter = Limiter(_rate_key, app=app, storage_uri="memory://", headers_enabled=True)
    # One budget per key across every operation: a plain limit on a blueprint counts each route separately.
    limiter.shared_limit(settings.api_rate_limit, scope="api_v1")(api)
    app.register_api(api)
    app.register_blueprint(pages)
    app.register_blueprint(live)
    app.register_blueprint(uploads)
    # Password guessing across many accounts (each under its own lockout) is bounded per address.
    limiter.limit(settings.signin_rate_limit, key_func=lambda: f"signin:{request.remote_addr}", methods=["POST"])(
        signin
    )
    app.register_blueprint(signin)
    register_filters(app)

    # Plain Flask rules: neither is an operation of the API, so neither is in its document.
    app.add_url_rule("/healthz", "healthz", lambda: "ok")
    app.add_url_rule(
        f"{API_PREFIX}/openapi.json", "openapi", lambda: jsonify(_problems_documented_as_sent(app.api_doc))
    )

    @app.before_request
    def label_logs() -> None:
        # Every log line of a request about an org or a run says which (DESIGN §15).
        # Only ids of the right form: a caller cannot put arbitrary text into the labels operators filter on.
        arguments = request.view_args or {}
        org, run_id = str(arguments.get("org", "")), str(arguments.get("run_id", ""))
        g.log_labels = push_labels(org=org if is_slug(org) else None, run_id=run_id if is_run_id(run_id) else None)

    @app.teardown_request
    def unlabel_logs(_: BaseException | None) -> None:
        if "log_labels" in g:
            pop_labels(g.log_labels)

    @app.after_request
    def headers(response: Response) -> Response:
        # Flask-Limiter puts Retry-After on every response; it means "wait" only on a 429 (or a 503).
        if response.status_code not in (429, 503):
            response.headers.pop("Retry-After", None)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.errorhandler(ApiProblem)
    def api_problem(problem: ApiProblem) -> Response:
        return problem_response(
            problem.status,
            problem.detail,
            errors=problem.errors,
            headers=problem.headers,
            problem_type=problem.problem_type,
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if request.path.startswith(API_PREFIX):
            # The error's own headers (a 405's Allow, which HTTP requires) go with the problem; its body does not.
            headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
            if getattr(error, "retry_after", None):
                headers["Retry-After"] = error.retry_after
            return problem_response(error.code or 500, error.description, headers=headers)
        return error

    return app
