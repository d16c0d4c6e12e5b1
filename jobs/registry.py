"""Which validators exist and how each runs. A workflow step names a validator by id.

Each validator's module is imported the first time it is asked for: a job runs one validator and pays for
importing only that one (its engine's libraries included), which is part of every job's start-up time.
"""

from __future__ import annotations

import functools
import importlib

from jobs.validators.base import Validator

REGISTERED = {
    "json-schema": "jobs.validators.json_schema:JsonSchemaValidator",
    "energyplus": "jobs.validators.energyplus:EnergyPlusValidator",
    "fmu": "jobs.validators.fmu:FmuValidator",
    "xml-schema": "jobs.validators.xml_schema:XmlSchemaValidator",
    "schematron": "jobs.validators.schematron:SchematronValidator",
    "tabular": "jobs.validators.tabular:TabularValidator",
    "shacl": "jobs.validators.shacl:ShaclValidator",
}


class UnknownValidator(KeyError):
    pass


@functools.cache
def get_validator(validator_id: str) -> Validator:
    target = REGISTERED.get(validator_id)
    if target is None:
        known = ", ".join(sorted(REGISTERED))
        raise UnknownValidator(f"unknown validator {validator_id!r} (known: {known})")
    module, name = target.split(":")
    validator: Validator = getattr(importlib.import_module(module), name)()
    return validator


# Config keys whose string value names one of the step's resource files (read relative to the workflow file when it
# is applied). Every validator's `resources` key, a list of names or globs, is one too.
RESOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "json-schema": ("schema",),
    "xml-schema": ("schema",),
    "schematron": ("rules",),
    "tabular": ("schema",),
    "shacl": ("shapes",),
}

# What a validator reports as `o.<name>` (metrics and outputs), where that is known before it runs: an assertion
# naming anything else is an apply-time error. Validators not listed are not checked.
KNOWN_RESULTS: dict[str, frozenset[str]] = {
    "json-schema": frozenset({"schema_violations"}),
    "tabular": frozenset({"rows", "columns", "errors"}),
    "xml-schema": frozenset({"schema_errors", "elements"}),
    "shacl": frozenset({"conforms", "violations", "warnings", "infos", "triples"}),
    "schematron": frozenset({"failed_asserts", "successful_reports", "fired_rules"}),
    "energyplus": frozenset(
        {
            "site_electricity",
            "site_natural_gas",
            "site_eui",
            "unmet_heating_hours",
            "unmet_cooling_hours",
            "conditioned_area",
            "simulated",
            "returncode",
        }
    ),
}
