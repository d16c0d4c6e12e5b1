"""The local stack's secrets (signing secret, web session key): made once, owner-only, kept across restarts, never
over one given."""

from __future__ import annotations

import stat
from pathlib import Path

from deploy.stack import with_local_secrets
from schemas.settings import Settings


def test_a_secret_is_generated_once_owner_only_and_kept(tmp_path: Path) -> None:
    first = with_local_secrets(Settings(), tmp_path / "state")
    again = with_local_secrets(Settings(), tmp_path / "state")

    secret, web_key = first.signing_secret.get_secret_value(), first.web_secret_key.get_secret_value()
    assert len(secret) >= 48
    assert len(web_key) >= 48
    assert secret != web_key
    assert again.signing_secret.get_secret_value() == secret
    assert again.web_secret_key.get_secret_value() == web_key
    kept = list((tmp_path / "state").iterdir())
    assert len(kept) == 2
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in kept)
    environment = str(first.as_environment())
    assert "signing_secret" not in environment.lower()
    assert "web_secret_key" not in environment.lower()
    assert secret not in environment
    assert web_key not in environment


def test_a_secret_from_the_environment_wins_and_nothing_is_written(tmp_path: Path) -> None:
    given = with_local_secrets(
        Settings(signing_secret="from-secret-manager", web_secret_key="also-from-secret-manager"), tmp_path
    )

    assert given.signing_secret.get_secret_value() == "from-secret-manager"
    assert given.web_secret_key.get_secret_value() == "also-from-secret-manager"
    assert list(tmp_path.iterdir()) == []
