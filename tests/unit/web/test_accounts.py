"""People and API keys (DESIGN §14) on the in-memory account store: what is stored, sign-in and its lockout,
password resets voiding sessions, and keys from creation to revocation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask.testing import FlaskClient

from schemas.access import is_api_key, new_api_key, user_id_for
from schemas.enums import Role
from schemas.settings import Settings
from tests.fakes import FakeAccountStore, FakeWorld, ManualClock, web_app
from tests.support import csrf_token
from web.accounts import AccountExists, Accounts, SignInRefused


def refused_message(max_failures: int = 5, lockout_minutes: int = 15) -> str:
    """The one answer to every refused sign-in (unknown email, wrong password, locked account)."""
    return (
        f"The email or the password is wrong. After {max_failures} wrong passwords in a row, sign-in is locked for "
        f"{lockout_minutes} minutes."
    )


WRONG = refused_message()
# Still argon2id, at its cheapest: these tests are about what is stored and when, not about what guessing costs.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass(frozen=True)
class AccountsWorld:
    """Accounts over an in-memory account store and a manual clock (no pipeline: none is needed here)."""

    accounts: Accounts
    fake_store: FakeAccountStore
    clock: ManualClock


def accounts_world(hasher: PasswordHasher = CHEAP_HASHER, **settings: Any) -> AccountsWorld:
    store, clock = FakeAccountStore(), ManualClock()
    return AccountsWorld(Accounts(store, Settings(**settings), clock, hasher), store, clock)


def stored_text(store: FakeAccountStore) -> str:
    """Every account document as stored: what a leaked password or key would show up in."""
    parts = [store.collection(*path) for path in (("users",), ("orgs", "demo", "members"), ("api_keys",))]
    return repr(parts)


def refusal(accounts: Accounts, email: str, password: str) -> str:
    with pytest.raises(SignInRefused) as refused:
        accounts.sign_in(email, password)
    return str(refused.value)


# -- people ------------------------------------------------------------------------------------------------------


def test_a_new_users_password_is_stored_only_as_an_argon2id_hash() -> None:
    world = accounts_world(PasswordHasher())  # the parameters the web uses
    accounts = world.accounts

    password = accounts.create_user("demo", " Ada@Example.ORG", Role.AUTHOR)

    user_id = user_id_for("ada@example.org")
    [(stored_id, user)] = world.fake_store.collection("users").items()
    assert stored_id == user_id
    assert (user["email"], user["orgs"], user["failed_signins"]) == ("ada@example.org", ["demo"], 0)
    assert user["password_hash"].startswith("$argon2id$")
    assert PasswordHasher().verify(user["password_hash"], password)
    assert password not in stored_text(world.fake_store)
    assert accounts.role_of("demo", user_id) == Role.AUTHOR
    assert accounts.role_of("other", user_id) is None
    assert accounts.sign_in("ADA@example.org ", password) == user_id


def test_a_second_user_with_the_same_email_is_refused() -> None:
    accounts = accounts_world().accounts
    accounts.create_user("demo", "ada@example.org", Role.VIEWER)

    with pytest.raises(AccountExists):
        accounts.create_user("other", "ADA@example.org", Role.ADMIN)


def test_a_wrong_password_an_unknown_email_and_a_malformed_one_are_refused_alike() -> None:
    accounts = accounts_world().accounts
    accounts.create_user("demo", "ada@example.org", Role.VIEWER)

    assert refusal(accounts, "ada@example.org", "not-the-password") == WRONG
    assert refusal(accounts, "nobody@example.org", "not-the-password") == WRONG
    assert refusal(accounts, "not an email", "not-the-password") == WRONG


def test_wrong_passwords_in_a_row_lock_the_account_until_the_lockout_ends() -> None:
    world = accounts_world(signin_max_failures=3, signin_lockout_seconds=600)
    accounts = world.accounts
    password = accounts.create_user("demo", "ada@example.org", Role.VIEWER)

    refused = refused_message(3, 10)
    assert [refusal(accounts, "ada@example.org", f"wrong-{n}") for n in range(3)] == [refused] * 3

    # Locked: the right password is refused too, with the same answer as a wrong one.
    assert refusal(accounts, "ada@example.org", password) == refused
    world.clock.advance(599)
    assert refusal(accounts, "ada@example.org", password) == refused
    world.clock.advance(1)
    assert accounts.sign_in("ada@example.org", password) == user_id_for("ada@example.org")


def test_wrong_passwords_while_locked_neither_count_nor_extend_the_lock() -> None:
    world = accounts_world(signin_max_failures=2, signin_lockout_seconds=60)
    accounts = world.accounts
    password = accounts.create_user("demo", "ada@example.org", Role.VIEWER)
    for n in range(2):
        refusal(accounts, "ada@example.org", f"wrong-{n}")
    locked_until = world.fake_store.user(user_id_for("ada@example.org")).doc.locked_until

    world.clock.advance(30)
    assert refusal(accounts, "ada@example.org", "wrong-again") == refused_message(2, 1)

    assert world.fake_store.user(user_id_for("ada@example.org")).doc.locked_until == locked_until
    world.clock.advance(30)
    assert accounts.sign_in("ada@example.org", password) == user_id_for("ada@example.org")


def test_a_right_password_resets_the_count_of_wrong_ones() -> None:
    world = accounts_world(signin_max_failures=3)
    accounts = world.accounts
    password = accounts.create_user("demo", "ada@example.org", Role.VIEWER)

    for _ in range(3):
        refusal(accounts, "ada@example.org", "wrong-1")
        refusal(accounts, "ada@example.org", "wrong-2")
        assert accounts.sign_in("ada@example.org", password) == user_id_for("ada@example.org")

    assert world.fake_store.user(user_id_for("ada@example.org")).doc.failed_signins == 0


def test_reset_password_voids_older_sessions_and_the_old_password_and_lifts_a_lock() -> None:
    world = accounts_world(signin_max_failures=2)
    accounts = world.accounts
    old = accounts.create_user("demo", "ada@example.org", Role.VIEWER)
    user_id = accounts.sign_in("ada@example.org", old)
    signed_at = world.clock()
    assert accounts.session_user(user_id, signed_at) is not None
    world.clock.advance(60)
    refusal(accounts, "ada@example.org", "wrong-1")
    refusal(accounts, "ada@example.org", "wrong-2")
    assert refusal(accounts, "ada@example.org", old) == refused_message(2)  # locked: even the right one

    new = accounts.reset_password("ADA@example.org")

    assert new != old
    assert new not in stored_text(world.fake_store)
    assert accounts.session_user(user_id, signed_at) is None
    assert accounts.session_user(user_id, world.clock()) is not None
    assert refusal(accounts, "ada@example.org", old) == refused_message(2)
    assert accounts.sign_in("ada@example.org", new) == user_id


def test_reset_password_of_an_unknown_user_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match=r"nobody@example\.org"):
        accounts_world().accounts.reset_password("nobody@example.org")


def signed_in_client(world: FakeWorld, email: str, password: str) -> FlaskClient:
    client = web_app(world).test_client()
    token = csrf_token(client.get("/signin").text)
    signed = client.post("/signin", data={"email": email, "password": password, "csrf_token": token})
    assert signed.status_code == 302, signed.text
    return client


def test_a_password_reset_signs_out_the_web_sessions_signed_in_before_it() -> None:
    world = FakeWorld()
    accounts = Accounts(world.fake_store, world.settings, world.clock, CHEAP_HASHER)
    password = accounts.create_user("demo", "ada@example.org", Role.VIEWER)
    before = signed_in_client(world, "ada@example.org", password)
    assert before.get("/orgs/demo/runs").status_code == 200

    # Days later by the accounts' clock, which is the one sessions are dated by.
    world.clock.advance(timedelta(days=30).total_seconds())
    new = accounts.reset_password("ada@example.org")

    voided = before.get("/orgs/demo/runs")
    assert (voided.status_code, voided.headers["Location"]) == (302, "/signin?next=/orgs/demo/runs")
    assert signed_in_client(world, "ada@example.org", new).get("/orgs/demo/runs").status_code == 200


# -- API keys ----------------------------------------------------------------------------------------------------


def test_a_key_is_returned_once_and_stored_only_as_its_sha256() -> None:
    world = accounts_world()
    accounts = world.accounts

    key = accounts.create_key("demo", Role.EXECUTOR, "ci", "ada@example.org")

    assert is_api_key(key)
    hashed = hashlib.sha256(key.encode()).hexdigest()
    assert list(world.fake_store.collection("api_keys")) == [hashed]
    assert key not in stored_text(world.fake_store)
    [listed] = accounts.keys("demo")
    assert (listed.key_id, listed.key.name, listed.key.role, listed.key.created_by) == (
        hashed[:12],
        "ci",
        Role.EXECUTOR,
        "ada@example.org",
    )
    assert accounts.keys("other") == []
    caller = accounts.key_caller(key)
    assert caller is not None
    assert (caller.key_hash, caller.key_id, caller.key.org, caller.key.role) == (
        hashed,
        hashed[:12],
        "demo",
        Role.EXECUTOR,
    )


@pytest.mark.parametrize(
    "presented",
    ["", "vbk_", "vbk_short", "Bearer vbk_" + "a" * 43, "vbk_" + "a" * 42 + "!", "xyz_" + "a" * 43],
    ids=["empty", "prefix-only", "short", "with-scheme", "bad-character", "other-prefix"],
)
def test_a_malformed_key_resolves_to_nobody(presented: str) -> None:
    accounts = accounts_world().accounts
    accounts.create_key("demo", Role.ADMIN, "ci", "tests")

    assert accounts.key_caller(presented) is None


def test_an_unknown_key_resolves_to_nobody() -> None:
    accounts = accounts_world().accounts
    accounts.create_key("demo", Role.ADMIN, "ci", "tests")

    assert accounts.key_caller(new_api_key()) is None


def test_a_revoked_key_resolves_to_nobody_and_cannot_be_revoked_again() -> None:
    world = accounts_world()
    accounts = world.accounts
    key = accounts.create_key("demo", Role.EXECUTOR, "ci", "tests")
    kept = accounts.create_key("demo", Role.EXECUTOR, "kept", "tests")
    key_id = accounts.key_caller(key).key_id
    world.clock.advance(5)

    revoked = accounts.revoke_key("demo", key_id)

    assert revoked.revoked_at == world.clock()
    assert accounts.key_caller(key) is None
    assert accounts.key_caller(kept) is not None
    with pytest.raises(LookupError):
        accounts.revoke_key("demo", key_id)


def test_another_orgs_key_cannot_be_revoked_through_this_org() -> None:
    accounts = accounts_world().accounts
    theirs = accounts.create_key("other", Role.ADMIN, "theirs", "tests")

    with pytest.raises(LookupError):
        accounts.revoke_key("demo", accounts.key_caller(theirs).key_id)

    assert accounts.key_caller(theirs) is not None


def test_last_used_at_is_written_at_most_once_a_minute() -> None:
    world = accounts_world()
    accounts = world.accounts
    key = accounts.create_key("demo", Role.VIEWER, "ci", "tests")
    hashed = hashlib.sha256(key.encode()).hexdigest()
    first_use = world.clock()

    accounts.key_caller(key)
    writes = world.fake_store.writes
    for _ in range(5):
        world.clock.advance(10)
        assert accounts.key_caller(key) is not None

    assert world.fake_store.api_key(hashed).doc.last_used_at == first_use
    assert world.fake_store.writes == writes
    world.clock.advance(10)
    accounts.key_caller(key)
    assert world.fake_store.api_key(hashed).doc.last_used_at == first_use + timedelta(seconds=60)
    assert world.fake_store.writes == writes + 1


def test_each_attempt_is_counted_before_its_password_is_checked() -> None:
    """What stops a burst of parallel guesses: the count is committed first, so attempts past the limit find the
    account locked and are refused, the right password among them."""
    world = accounts_world(signin_max_failures=3)
    accounts = world.accounts
    password = accounts.create_user("demo", "ada@example.org", Role.VIEWER)
    user_id = user_id_for("ada@example.org")
    seen: list[int] = []
    world.fake_store.before_next_commit(lambda: seen.append(world.fake_store.user(user_id).doc.failed_signins))

    refusal(accounts, "ada@example.org", "wrong")
    assert seen == [0]
    assert world.fake_store.user(user_id).doc.failed_signins == 1
    refusal(accounts, "ada@example.org", "wrong")
    refusal(accounts, "ada@example.org", "wrong")  # the third: the account locks
    assert refusal(accounts, "ada@example.org", password) == refused_message(3)
