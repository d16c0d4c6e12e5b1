"""EnergyPlus models as data: read IDF and epJSON, scan them for unsafe objects, apply the step's run settings.

Pure functions over text and dicts, so the safety rules are unit-tested without running EnergyPlus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from schemas.enums import Severity
from schemas.envelopes import Location, Message

# Objects that run code or talk to the outside world: a model with any of them is refused before it runs.
FORBIDDEN_PREFIXES = ("pythonplugin:", "externalinterface")
FORBIDDEN_CLASSES = {"energymanagementsystem:program", "energymanagementsystem:subroutine"}
# (class, field index after the name, epJSON key) of fields that name files EnergyPlus will open.
FILE_FIELDS = {"schedule:file": (2, "file_name")}

# Outputs the validator reads (the SQL file with tabular reports) and publishes (the HTML tables).
REQUIRED_OUTPUTS_IDF = """
Output:SQLite, SimpleAndTabular;
Output:Table:SummaryReports, AllSummary;
OutputControl:Table:Style, HTML;
"""
REPLACED_OUTPUT_CLASSES = {"output:sqlite", "output:table:summaryreports", "outputcontrol:table:style"}
VALID_TIMESTEPS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)

_TOKEN = re.compile(r"!.*|[,;]|[^,;!]+")


class ModelError(ValueError):
    """The file is not a model EnergyPlus can read."""


@dataclass(frozen=True)
class IdfObject:
    class_name: str
    fields: list[str]
    line: int
    start: int
    end: int

    @property
    def name(self) -> str:
        return self.fields[0] if self.fields else ""


def parse_idf(text: str) -> list[IdfObject]:
    """Objects in file order: `Class, field, field;` with `!` comments, any layout."""
    objects: list[IdfObject] = []
    fields: list[str] = []
    current = ""
    line = 1
    start = object_line = None
    for token in _TOKEN.finditer(text):
        value = token.group()
        if value.startswith("!"):
            continue
        if value in ",;":
            fields.append(current.strip())
            current = ""
            if value == ";":
                assert start is not None
                assert object_line is not None
                objects.append(IdfObject(fields[0], fields[1:], object_line, start, token.end()))
                fields, start, object_line = [], None, None
            continue
        if start is None and value.strip():
            stripped = len(value) - len(value.lstrip())
            start = token.start() + stripped
            object_line = line + value[:stripped].count("\n")
        current += value
        line += value.count("\n")
    if current.strip() or fields:
        raise ModelError(f"the IDF ends inside an object (line {object_line}): a ';' is missing")
    return objects


def _unsafe_path(path: str) -> bool:
    p = path.strip().replace("\\", "/")
    return p.startswith("/") or re.match(r"^[A-Za-z]:", p) is not None or "://" in p or ".." in p.split("/")


def _refusal(class_name: str, name: str, why: str, line: int | None) -> Message:
    return Message(
        severity=Severity.ERROR,
        code="energyplus.unsafe_model",
        text=f"{class_name} '{name}' is not allowed: {why}",
        location=Location(file_role="primary", line=line, path=f"{class_name}/{name}"),
    )


def _check(class_name: str, name: str, file_name: str | None, line: int | None) -> Message | None:
    lowered = class_name.lower()
    if lowered.startswith(FORBIDDEN_PREFIXES) or lowered in FORBIDDEN_CLASSES:
        return _refusal(class_name, name, "models may not run their own code or connect to other programs", line)
    if file_name is not None and _unsafe_path(file_name):
        return _refusal(class_name, name, f"file {file_name!r} is absolute, remote or outside the model folder", line)
    return None


def scan_idf(objects: list[IdfObject]) -> list[Message]:
    found = []
    for obj in objects:
        index = FILE_FIELDS.get(obj.class_name.lower(), (None, None))[0]
        file_name = obj.fields[index] if index is not None and len(obj.fields) > index else None
        problem = _check(obj.class_name, obj.name, file_name, obj.line)
        if problem:
            found.append(problem)
    return found


def scan_epjson(model: dict[str, Any]) -> list[Message]:
    found = []
    for class_name, instances in model.items():
        if not isinstance(instances, dict):
            continue
        key = FILE_FIELDS.get(class_name.lower(), (None, None))[1]
        for name, fields in instances.items():
            file_name = fields.get(key) if key and isinstance(fields, dict) else None
            problem = _check(class_name, name, str(file_name) if file_name is not None else None, None)
            if problem:
                found.append(problem)
    return found


@dataclass(frozen=True)
class RunSettings:
    timesteps_per_hour: int | None = None
    # (begin month, begin day, end month, end day)
    run_period: tuple[int, int, int, int] | None = None


def prepare_idf(text: str, objects: list[IdfObject], settings: RunSettings) -> str:
    """The model with the step's run settings and the validator's required outputs in place of the model's own."""
    replaced = set(REPLACED_OUTPUT_CLASSES)
    extra = [REQUIRED_OUTPUTS_IDF]
    if settings.timesteps_per_hour is not None:
        replaced.add("timestep")
        extra.append(f"Timestep, {settings.timesteps_per_hour};\n")
    if settings.run_period is not None:
        replaced.add("runperiod")
        bm, bd, em, ed = settings.run_period
        extra.append(f"RunPeriod, Validibot Run Period, {bm}, {bd}, , {em}, {ed}, , , Yes, Yes, No, Yes, Yes;\n")
    kept, position = [], 0
    for obj in objects:
        if obj.class_name.lower() in replaced:
            kept.append(text[position : obj.start])
            position = obj.end
    kept.append(text[position:])
    return "".join(kept) + "\n! Added by validibot\n" + "".join(extra)


def prepare_epjson(model: dict[str, Any], settings: RunSettings) -> str:
    lowered = {k.lower(): k for k in model}
    prepared = {k: v for k, v in model.items() if k.lower() not in REPLACED_OUTPUT_CLASSES}
    prepared["Output:SQLite"] = {"Output:SQLite 1": {"option_type": "SimpleAndTabular"}}
    prepared["Output:Table:SummaryReports"] = {
        "Output:Table:SummaryReports 1": {"reports": [{"report_name": "AllSummary"}]}
    }
    prepared["OutputControl:Table:Style"] = {"OutputControl:Table:Style 1": {"column_separator": "HTML"}}
    if settings.timesteps_per_hour is not None:
        prepared.pop(lowered.get("timestep", "Timestep"), None)
        prepared["Timestep"] = {"Timestep 1": {"number_of_timesteps_per_hour": settings.timesteps_per_hour}}
    if settings.run_period is not None:
        prepared.pop(lowered.get("runperiod", "RunPeriod"), None)
        bm, bd, em, ed = settings.run_period
        prepared["RunPeriod"] = {
            "Validibot Run Period": {
                "begin_month": bm,
                "begin_day_of_month": bd,
                "end_month": em,
                "end_day_of_month": ed,
            }
        }
    return json.dumps(prepared, indent=1)


def load_epjson(data: bytes) -> dict[str, Any]:
    try:
        model = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"the epJSON file is not valid JSON: {exc}") from exc
    if not isinstance(model, dict):
        raise ModelError("the epJSON file must be a JSON object of object types")
    return model


def uses_hvac_templates(objects: list[IdfObject]) -> bool:
    return any(o.class_name.lower().startswith("hvactemplate:") for o in objects)
