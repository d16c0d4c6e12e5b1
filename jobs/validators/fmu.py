"""FMU validation and simulation (extra `fmu`: fmpy). FMI 2.0 and 3.0, co-simulation or model exchange.

The archive is checked before anything in it is trusted (a zip, safe member names, a bounded unpacked size, a
modelDescription.xml without DTD); the model description is validated and the step's variables must be declared
by it. The simulation runs in a child process with a hard timeout, without network (see sandbox.py). Each output's
final value becomes a metric; per-output bounds become ERROR findings when the output leaves them.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.validators.base import (
    ArtifactFile,
    ConfigError,
    ValidationContext,
    ValidationResult,
    parse_config,
)
from jobs.validators.fmu_simulate import OUTCOME_NAME, RESULTS_NAME
from jobs.validators.sandbox import run_isolated
from schemas.enums import Severity
from schemas.envelopes import Location, Message, Metric

MODEL_DESCRIPTION = "modelDescription.xml"
SETTABLE_CAUSALITIES = {"input", "parameter"}


class Bounds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float | None = None
    max: float | None = None


class FmuConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_time: float = 0.0
    stop_time: float
    step_size: float = Field(gt=0)
    input_values: dict[str, float | int | bool | str] = {}
    output_variables: list[str] = Field(min_length=1)
    bounds: dict[str, Bounds] = {}
    # The FMU's archive, unpacked, may not exceed this (zip bombs).
    max_unpacked_bytes: int = Field(default=256 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> FmuConfig:
        if self.stop_time <= self.start_time:
            raise ValueError("stop_time must be after start_time")
        unknown = sorted(set(self.bounds) - set(self.output_variables))
        if unknown:
            raise ValueError(f"bounds name variables that are not output_variables: {', '.join(unknown)}")
        return self


def _finding(code: str, text: str, path: str | None = None) -> Message:
    return Message(severity=Severity.ERROR, code=code, text=text, location=Location(file_role="primary", path=path))


def unpack(fmu: Path, dest: Path, max_bytes: int) -> Message | None:
    """Extract the archive after checking it; a finding says why it is not a usable FMU."""
    if not zipfile.is_zipfile(fmu):
        return _finding("fmu.not_zip", "the file is not an FMU: an FMU is a zip archive, and this file is not one")
    try:
        with zipfile.ZipFile(fmu) as archive:
            members = archive.infolist()
            names = {m.filename for m in members}
            if MODEL_DESCRIPTION not in names:
                return _finding(
                    "fmu.no_model_description", f"the FMU has no {MODEL_DESCRIPTION} at the root of its archive"
                )
            unsafe = [n for n in names if PurePosixPath(n).is_absolute() or ".." in PurePosixPath(n).parts]
            if unsafe:
                return _finding("fmu.unsafe_archive", f"the archive has unsafe member names: {', '.join(unsafe[:5])}")
            total = sum(m.file_size for m in members)
            if total > max_bytes:
                return _finding(
                    "fmu.too_large", f"the FMU unpacks to {total} bytes, over the step's limit of {max_bytes}"
                )
            archive.extractall(dest)
    except (zipfile.BadZipFile, OSError) as exc:
        return _finding("fmu.bad_zip", f"the FMU archive is damaged: {exc}")
    return None


def check_xml(path: Path) -> Message | None:
    """Well-formed, and no DTD: entity tricks (XXE, billion laughs) never reach fmpy's parser."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        tree = etree.parse(str(path), parser)
    except etree.XMLSyntaxError as exc:
        return _finding("fmu.bad_model_description", f"{MODEL_DESCRIPTION} is not well-formed XML: {exc}")
    if tree.docinfo.doctype:
        return _finding("fmu.unsafe_model_description", f"{MODEL_DESCRIPTION} declares a DTD, which is not allowed")
    return None


def check_variables(model: Any, config: FmuConfig) -> list[Message]:
    declared = {v.name: v for v in model.modelVariables}
    found = []
    for name in config.input_values:
        variable = declared.get(name)
        if variable is None:
            found.append(
                _finding("fmu.unknown_variable", f"input value for {name!r}: the model declares no such variable", name)
            )
        elif variable.causality not in SETTABLE_CAUSALITIES:
            found.append(_finding("fmu.not_settable", f"{name!r} is an {variable.causality} and cannot be set", name))
    for name in config.output_variables:
        if name not in declared:
            found.append(
                _finding("fmu.unknown_variable", f"output {name!r}: the model declares no such variable", name)
            )
    return found  # fmt: skip


def bound_findings(outputs: dict[str, dict[str, float]], config: FmuConfig) -> list[Message]:
    found = []
    for name, bounds in config.bounds.items():
        series = outputs[name]
        if bounds.min is not None and series["min"] < bounds.min:
            found.append(
                _finding(
                    "fmu.below_min",
                    f"{name} fell to {series['min']:g} at t={series['min_time']:g} s, below its minimum {bounds.min:g}",
                    name,
                )
            )
        if bounds.max is not None and series["max"] > bounds.max:
            found.append(
                _finding(
                    "fmu.above_max",
                    f"{name} rose to {series['max']:g} at t={series['max_time']:g} s, above its maximum {bounds.max:g}",
                    name,
                )
            )
    return found


def read_model(unzipdir: Path) -> tuple[Any | None, Message | None]:
    try:
        import fmpy
    except ImportError as exc:
        raise ConfigError("fmpy is not installed in this job image (install the 'fmu' extra)") from exc
    try:
        model = fmpy.read_model_description(str(unzipdir), validate=True)
    except Exception as exc:
        return None, _finding("fmu.invalid_model_description", f"{MODEL_DESCRIPTION} is not valid: {exc}")
    if model.coSimulation is None and model.modelExchange is None:
        return None, _finding("fmu.no_interface", "the FMU implements neither co-simulation nor model exchange")
    identifier = (model.coSimulation or model.modelExchange).modelIdentifier
    if not any((unzipdir / "binaries").glob(f"*/{identifier}.*")):
        return None, _finding("fmu.no_binary", f"the FMU carries no binary for {identifier}")
    return model, None


def open_fmu(fmu: Path, unzipdir: Path, max_bytes: int) -> tuple[Any | None, Message | None]:
    """The archive checked, unpacked and its model description read: (model, None), or (None, why not)."""
    problem = unpack(fmu, unzipdir, max_bytes) or check_xml(unzipdir / MODEL_DESCRIPTION)
    if problem is not None:
        return None, problem
    return read_model(unzipdir)


class FmuValidator:
    id: ClassVar[str] = "fmu"
    type: ClassVar[str] = "fmu"
    version: ClassVar[str] = "1"
    mode: ClassVar[Literal["inline", "job"]] = "job"
    config_model: ClassVar[type[BaseModel]] = FmuConfig

    def validate(self, context: ValidationContext) -> ValidationResult:
        config = parse_config(self, context.inputs)
        assert isinstance(config, FmuConfig)
        unzipdir = context.workdir / "fmu"
        model, problem = open_fmu(context.primary().path, unzipdir, config.max_unpacked_bytes)
        if problem is not None:
            return ValidationResult(messages=[problem], outputs={"simulated": False})
        declared = check_variables(model, config)
        if declared:
            return ValidationResult(messages=declared, outputs={"simulated": False, "fmi_version": model.fmiVersion})
        return self._simulate(context, config, unzipdir, model)

    def _simulate(self, context: ValidationContext, config: FmuConfig, unzipdir: Path, model: Any) -> ValidationResult:
        request = context.workdir / "request.json"
        request.write_text(
            json.dumps(
                {
                    "unzipdir": str(unzipdir),
                    "workdir": str(context.workdir),
                    "start_time": config.start_time,
                    "stop_time": config.stop_time,
                    "step_size": config.step_size,
                    "input_values": config.input_values,
                    "output_variables": config.output_variables,
                }
            )
        )
        argv = [sys.executable, "-m", "jobs.validators.fmu_simulate", str(request)]
        completed = run_isolated(argv, context.workdir, context.seconds_left(), context.workdir / "simulation.log")
        outputs: dict[str, Any] = {"simulated": True, "fmi_version": model.fmiVersion}
        if completed.timed_out:
            return ValidationResult(
                outputs=outputs,
                runtime_error=f"the FMU simulation did not finish within the step's {context.timeout_seconds} s "
                "timeout and was stopped",
                timed_out=True,
            )
        if completed.killed_by:
            return ValidationResult(
                outputs=outputs,
                runtime_error=f"the FMU simulation was killed by {completed.killed_by} before it finished",
            )
        outcome_path = context.workdir / OUTCOME_NAME
        outcome = json.loads(outcome_path.read_text()) if outcome_path.is_file() else {}
        if "outputs" not in outcome:
            why = outcome.get("error") or f"the simulation process ended with status {completed.returncode}"
            return ValidationResult(messages=[_finding("fmu.simulation_failed", f"the simulation failed: {why}")],
                                    outputs=outputs)  # fmt: skip
        series = outcome["outputs"]
        results = context.workdir / RESULTS_NAME
        return ValidationResult(
            messages=bound_findings(series, config),
            metrics=[Metric(name=name, value=values["final"]) for name, values in series.items()],
            outputs={**outputs, "samples": outcome["samples"]},
            artifacts=[ArtifactFile(results, "text/csv")] if results.is_file() else [],
        )
