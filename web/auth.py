"""Who is calling, and may they: API keys for programs, signed-in sessions (or Identity-Aware Proxy) for people.

Every view names the org it reads from and the least role it needs. A caller who is not a member of that org
(another org's key, a user with no membership) gets the same 404 as a missing resource, so ids never reveal what
exists; a member whose role is too small gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from flask import abort, g, redirect, request, session, url_for

from schemas.access import user_id_for
from schemas.enums import Role
from schemas.paths import is_slug
from web.accounts import KeyCaller
from web.context import web_context
from web.problems import ApiProblem, not_found

SESSION_USER = "user_id"
SESSION_SIGNED_IN_AT = "signed_in_at"


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def presented_key() -> KeyCaller | None:
    """The valid key the request carries, resolved once per request (the rate limit asks first, then the view)."""
    if "key_caller" not in g:
        token = bearer_token()
        g.key_caller = web_context().accounts.key_caller(token) if token else None
    caller: KeyCaller | None = g.key_caller
    return caller


def api_caller() -> KeyCaller:
    """The key the request carries, or a 401 saying how to authenticate (never echoing what was sent)."""
    if bearer_token() is None:
        raise ApiProblem(401, "Send an API key as 'Authorization: Bearer vbk_...'.", {"WWW-Authenticate": "Bearer"})
    caller = presented_key()
    if caller is None:
        raise ApiProblem(
            401, "The API key is not valid: unknown, revoked or malformed.", {"WWW-Authenticate": "Bearer"}
        )
    return caller


def api_access(org: str, needed: Role) -> KeyCaller:
    caller = api_caller()
    if not is_slug(org) or caller.key.org != org:
        raise not_found()
    if not Role(caller.key.role).allows(needed):
        raise ApiProblem(403, f"This key's role ({caller.key.role}) may not do this; it needs {needed.value}.")
    return caller


@dataclass(frozen=True)
class SignedIn:
    user_id: str
    email: str
    orgs: list[str]


def signed_in() -> SignedIn | None:
    """The person behind this request: from Identity-Aware Proxy's signed header when the web sits behind it,
    else from the session cookie (void once the password changes)."""
    ctx = web_context()
    if ctx.iap_email is not None:
        email = ctx.iap_email(request)
        if email is None:
            return None
        found = ctx.accounts.store.user(user_id_for(email))
        return SignedIn(user_id_for(email), found.doc.email, found.doc.orgs) if found else None
    user_id, signed_at = session.get(SESSION_USER), session.get(SESSION_SIGNED_IN_AT)
    if not isinstance(user_id, str) or not isinstance(signed_at, str):
        return None
    user = ctx.accounts.session_user(user_id, datetime.fromisoformat(signed_at))
    return SignedIn(user_id, user.email, user.orgs) if user else None


def start_session(user_id: str) -> None:
    session.clear()
    session.permanent = True
    session[SESSION_USER] = user_id
    # Dated by the clock that dates password resets (sessions_valid_after), so the two always compare.
    session[SESSION_SIGNED_IN_AT] = web_context().accounts.clock().isoformat()


def page_access(org: str, needed: Role = Role.VIEWER) -> SignedIn:
    """The signed-in member of `org` with at least `needed`; otherwise the sign-in page, a 404 or a 403."""
    person = signed_in()
    if person is None:
        abort(redirect(url_for("signin.form", next=quote(request.full_path.rstrip("?")))))
    role = web_context().accounts.role_of(org, person.user_id) if is_slug(org) else None
    if role is None:
        abort(404)
    if not role.allows(needed):
        abort(403)
    return person
