"""People and API keys (DESIGN §14): creating them, signing in, resolving a key, revoking it.

Passwords are hashed with argon2id (argon2-cffi, the reference implementation's binding; its defaults follow RFC
9106's second recommended profile), keys with sha256 (they carry 256 random bits). Neither the password nor the key
is stored, logged or put in an error: callers get each once, as the return value of the call that made it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from schemas.access import is_api_key, key_hash, key_id, new_api_key, new_password, normal_email, user_id_for
from schemas.changes import Versioned, Write, api_key_path, member_path, user_path
from schemas.documents import ApiKeyDoc, MemberDoc, UserDoc
from schemas.enums import Role
from schemas.settings import Settings
from store.ports import AccountStore, Conflict

# A key's last_used_at is refreshed at most this often: one write per key per minute, not one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
COMMIT_TRIES = 4


# argon2id verifications running at once in one process (each holds memory_cost, 64 MiB by default).
_VERIFYING = threading.BoundedSemaphore(4)


class AccountExists(ValueError):
    pass


class _Locked(Exception):
    """The account is locked: the attempt is refused without being counted."""


class SignInRefused(Exception):
    """Wrong email or password, or locked out: the message says which without saying whether the email exists,
    except that a locked account says when to try again."""


@dataclass(frozen=True)
class KeyCaller:
    """The caller behind a valid, unrevoked API key."""

    key_hash: str
    key: ApiKeyDoc

    @property
    def key_id(self) -> str:
        return key_id(self.key_hash)


@dataclass(frozen=True)
class KeyListing:
    key_id: str
    key: ApiKeyDoc


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Accounts:
    store: AccountStore
    settings: Settings
    clock: Callable[[], datetime] = _now
    hasher: PasswordHasher = field(default_factory=PasswordHasher)

    def __post_init__(self) -> None:
        # Verified against when the email is unknown, so a wrong email costs what a wrong password costs.
        self._decoy_hash = self.hasher.hash(new_password())

    # -- people --------------------------------------------------------------------------------------------

    def create_user(self, org: str, email: str, role: Role) -> str:
        """A new user, member of `org` with `role`; returns the generated password (its only copy)."""
        email = normal_email(email)
        user_id, now, password = user_id_for(email), self.clock(), new_password()
        user = UserDoc(
            email=email,
            password_hash=self.hasher.hash(password),
            created_at=now,
            orgs=[org],
            sessions_valid_after=now,
        )
        member = MemberDoc(email=email, role=role, created_at=now)
        try:
            self.store.commit(
                [Write(user_path(user_id), user, "create"), Write(member_path(org, user_id), member, "create")]
            )
        except Conflict as exc:
            raise AccountExists(f"a user with email {email} exists already") from exc
        return password

    def reset_password(self, email: str) -> str:
        """A new generated password for an existing user; every session signed before now is void."""
        user_id = user_id_for(email)
        password = new_password()

        def reset(user: UserDoc) -> UserDoc:
            return user.model_copy(
                update={
                    "password_hash": self.hasher.hash(password),
                    "sessions_valid_after": self.clock(),
                    "failed_signins": 0,
                    "locked_until": None,
                }
            )

        if self._update_user(user_id, reset) is None:
            raise LookupError(f"no user with email {normal_email(email)}")
        return password

    def sign_in(self, email: str, password: str) -> str:
        """The user id, when the password is right and the account not locked; SignInRefused otherwise, with one
        message whatever the reason (an unknown email, a wrong password, a locked account), after one argon2
        verification in every case, so neither the answer nor its time tells which emails have accounts.

        Each attempt is counted before its password is verified, so parallel guesses cannot outrun the lockout:
        signin_max_failures attempts in a row without a right password lock the account for
        signin_lockout_seconds, and the attempts that find it locked are refused whatever they send."""
        try:
            user_id: str | None = user_id_for(email)
        except ValueError:
            user_id = None
        found = self.store.user(user_id) if user_id else None
        if found is None or user_id is None:
            self._verify(self._decoy_hash, password)
            raise SignInRefused(self._refusal)
        try:
            self._update_user(user_id, self._count_attempt)
        except (_Locked, RuntimeError):
            self._verify(self._decoy_hash, password)
            raise SignInRefused(self._refusal) from None
        if not self._verify(found.doc.password_hash, password):
            raise SignInRefused(self._refusal)
        self._update_user(user_id, lambda u: u.model_copy(update={"failed_signins": 0, "locked_until": None}))
        return user_id

    @property
    def _refusal(self) -> str:
        minutes = max(1, round(self.settings.signin_lockout_seconds / 60))
        return (
            f"The email or the password is wrong. After {self.settings.signin_max_failures} wrong passwords in a row, "
            f"sign-in is locked for {minutes} minutes."
        )

    def _count_attempt(self, user: UserDoc) -> UserDoc:
        now = self.clock()
        if user.locked_until is not None and user.locked_until > now:
            raise _Locked
        attempts = user.failed_signins + 1
        if attempts >= self.settings.signin_max_failures:
            locked_until = now + timedelta(seconds=self.settings.signin_lockout_seconds)
            return user.model_copy(update={"failed_signins": 0, "locked_until": locked_until})
        return user.model_copy(update={"failed_signins": attempts, "locked_until": None})

    def _verify(self, password_hash: str, password: str) -> bool:
        # Each verification holds 64 MiB for a moment: a bounded few at once, however many sign-ins arrive.
        with _VERIFYING:
            try:
                return self.hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

    def _update_user(self, user_id: str, change: Callable[[UserDoc], UserDoc]) -> UserDoc | None:
        """Apply `change` on the user as read, again on a fresh read when a concurrent sign-in got there first."""
        for _ in range(COMMIT_TRIES):
            found = self.store.user(user_id)
            if found is None:
                return None
            changed = change(found.doc)
            try:
                self.store.commit([Write(user_path(user_id), changed, "replace", found.update_time)])
            except Conflict:
                continue
            return changed
        raise RuntimeError("the account kept changing; try again")

    def end_sessions(self, user_id: str) -> None:
        """Sign-out: a session is a signed cookie, so a copy kept from before would still be good; voiding every
        session signed until now is what makes it end (the person's other browsers sign in again too)."""
        self._update_user(user_id, lambda user: user.model_copy(update={"sessions_valid_after": self.clock()}))

    def session_user(self, user_id: str, signed_in_at: datetime) -> UserDoc | None:
        """The user a session names, unless the session was signed before its password was last set."""
        found = self.store.user(user_id)
        if found is None:
            return None
        valid_after = found.doc.sessions_valid_after
        return None if valid_after is not None and signed_in_at < valid_after else found.doc

    def role_of(self, org: str, user_id: str) -> Role | None:
        member = self.store.member(org, user_id)
        return Role(member.role) if member else None

    # -- API keys ------------------------------------------------------------------------------------------

    def create_key(self, org: str, role: Role, name: str, created_by: str) -> str:
        """A new key for `org` with `role`; returns the key (its only copy: only its sha256 is stored)."""
        key = new_api_key()
        doc = ApiKeyDoc(org=org, role=role, name=name, created_by=created_by, created_at=self.clock())
        self.store.commit([Write(api_key_path(key_hash(key)), doc, "create")])
        return key

    def keys(self, org: str) -> list[KeyListing]:
        return [KeyListing(key_id(h), doc) for h, doc in self.store.api_keys(org)]

    def revoke_key(self, org: str, wanted_id: str) -> ApiKeyDoc:
        """Revoke the org's key listed as `wanted_id`; LookupError when the org has no such live key."""
        for _ in range(COMMIT_TRIES):
            matching = [(h, doc) for h, doc in self.store.api_keys(org) if key_id(h) == wanted_id]
            found = self.store.api_key(matching[0][0]) if len(matching) == 1 else None
            if found is None or found.doc.revoked_at is not None:
                raise LookupError(f"org {org} has no live key {wanted_id}")
            revoked = found.doc.model_copy(update={"revoked_at": self.clock()})
            try:
                self.store.commit([Write(api_key_path(matching[0][0]), revoked, "replace", found.update_time)])
            except Conflict:
                continue
            return revoked
        raise RuntimeError("the key kept changing; try again")

    def key_caller(self, presented: str) -> KeyCaller | None:
        """The caller a presented key stands for: None when it is malformed, unknown or revoked."""
        if not is_api_key(presented):
            return None
        hashed = key_hash(presented)
        found = self.store.api_key(hashed)
        if found is None or found.doc.revoked_at is not None:
            return None
        self._touch(hashed, found)
        return KeyCaller(hashed, found.doc)

    def _touch(self, hashed: str, found: Versioned[ApiKeyDoc]) -> None:
        now = self.clock()
        last = found.doc.last_used_at
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return
        # Best effort: a concurrent request refreshing it too, or revoking it, wins.
        try:
            touched = found.doc.model_copy(update={"last_used_at": now})
            self.store.commit([Write(api_key_path(hashed), touched, "replace", found.update_time)])
        except Conflict:
            pass
