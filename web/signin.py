"""Signing in and out with email and password (forms protected by Flask-WTF's CSRF tokens)."""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from web.accounts import SignInRefused
from web.auth import signed_in, start_session
from web.context import web_context

log = logging.getLogger("validibot.web.signin")
signin = Blueprint("signin", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute or protocol-relative URL (no open redirect)."""
    if target:
        path = unquote(target)
        parts = urlsplit(path)
        if path.startswith("/") and not path.startswith("//") and not parts.scheme and not parts.netloc:
            return path
    return url_for("pages.index")


@signin.get("/signin")
def form() -> str | Response:
    if signed_in() is not None:
        return redirect(_safe_next(request.args.get("next")))
    return render_template("signin.html", next=request.args.get("next", ""), error=None, email="")


@signin.post("/signin")
def submit() -> tuple[str, int] | Response:
    email, password = request.form.get("email", ""), request.form.get("password", "")
    try:
        user_id = web_context().accounts.sign_in(email, password)
    except SignInRefused as exc:
        # The email may be logged (it names an account); the password never is.
        log.info("sign-in refused for %r: %s", email[:100], exc)
        page = render_template("signin.html", next=request.form.get("next", ""), error=str(exc), email=email)
        return page, 401
    start_session(user_id)
    return redirect(_safe_next(request.form.get("next")))


@signin.post("/signout")
def signout() -> Response:
    person = signed_in()
    if person is not None:
        web_context().accounts.end_sessions(person.user_id)
    session.clear()
    return redirect(url_for("signin.form"))
