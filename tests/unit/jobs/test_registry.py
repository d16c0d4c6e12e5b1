"""The registry names validators by import path; each must load and answer to the id it is registered under."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from jobs.registry import REGISTERED, UnknownValidator, get_validator


@pytest.mark.parametrize("validator_id", sorted(REGISTERED))
def test_registered_validator_loads_under_its_own_id(validator_id: str) -> None:
    validator = get_validator(validator_id)
    assert validator.id == validator_id
    assert validator.mode in ("inline", "job")
    assert issubclass(validator.config_model, BaseModel)


def test_unknown_validator_names_the_known_ones() -> None:
    known = ", ".join(sorted(REGISTERED))
    with pytest.raises(UnknownValidator, match=f"unknown validator 'xml' \\(known: {known}\\)"):
        get_validator("xml")
