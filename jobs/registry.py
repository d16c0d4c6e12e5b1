"""Which validators exist and how each runs. A workflow step names a validator by id."""

from __future__ import annotations

from jobs.validators.base import Validator
from jobs.validators.energyplus import EnergyPlusValidator
from jobs.validators.fmu import FmuValidator
from jobs.validators.json_schema import JsonSchemaValidator

VALIDATORS: dict[str, Validator] = {v.id: v for v in (JsonSchemaValidator(), EnergyPlusValidator(), FmuValidator())}


class UnknownValidator(KeyError):
    pass


def get_validator(validator_id: str) -> Validator:
    try:
        return VALIDATORS[validator_id]
    except KeyError:
        known = ", ".join(sorted(VALIDATORS))
        raise UnknownValidator(f"unknown validator {validator_id!r} (known: {known})") from None
