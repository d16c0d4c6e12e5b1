"""FMU step configuration and bounds, without simulating."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.validators.fmu import FmuConfig, bound_findings

SERIES = {"t_room": {"final": 22.0, "min": 14.5, "min_time": 0.0, "max": 27.25, "max_time": 3600.0}}


def config(**bounds: dict) -> FmuConfig:
    return FmuConfig(stop_time=3600, step_size=60, output_variables=["t_room"], bounds=bounds)


def test_each_bound_left_is_one_finding_naming_variable_value_and_time() -> None:
    findings = bound_findings(SERIES, config(t_room={"min": 15, "max": 26}))

    assert [(f.code, f.location.path, f.text) for f in findings] == [
        ("fmu.below_min", "t_room", "t_room fell to 14.5 at t=0 s, below its minimum 15"),
        ("fmu.above_max", "t_room", "t_room rose to 27.25 at t=3600 s, above its maximum 26"),
    ]


def test_bounds_kept_are_no_finding() -> None:
    assert bound_findings(SERIES, config(t_room={"min": 10, "max": 30})) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stop_time": 0}, "stop_time must be after start_time"),
        ({"bounds": {"other": {"max": 1}}}, "bounds name variables that are not output_variables: other"),
        ({"step_size": 0}, "greater than 0"),
        ({"output_variables": []}, "at least 1 item"),
    ],
)
def test_inconsistent_configuration_is_refused(fields: dict, message: str) -> None:
    base = {"stop_time": 10, "step_size": 1, "output_variables": ["t_room"]}
    with pytest.raises(ValidationError, match=message):
        FmuConfig.model_validate(base | fields)
