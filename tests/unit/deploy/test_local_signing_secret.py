"""The local stack's signing secret: made once, owner-only, kept across restarts, never over one given."""

from __future__ import annotations

import stat
from pathlib import Path

from deploy.stack import with_local_signing_secret
from schemas.settings import Settings


def test_a_secret_is_generated_once_owner_only_and_kept(tmp_path: Path) -> None:
    first = with_local_signing_secret(Settings(), tmp_path / "state")
    again = with_local_signing_secret(Settings(), tmp_path / "state")

    secret = first.signing_secret.get_secret_value()
    assert len(secret) >= 48
    assert again.signing_secret.get_secret_value() == secret
    [kept] = (tmp_path / "state").iterdir()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert "signing_secret" not in str(first.as_environment()).lower()
    assert secret not in str(first.as_environment())


def test_a_secret_from_the_environment_wins_and_nothing_is_written(tmp_path: Path) -> None:
    given = with_local_signing_secret(Settings(signing_secret="from-secret-manager"), tmp_path)

    assert given.signing_secret.get_secret_value() == "from-secret-manager"
    assert list(tmp_path.iterdir()) == []
