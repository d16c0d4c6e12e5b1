"""What an EnergyPlus run said: findings from eplusout.err, metrics and monthly end uses from the tabular reports in
eplusout.sql."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from schemas.enums import Severity
from schemas.envelopes import Location, Message, Metric

_ERR_LINE = re.compile(r"^\s*\*\*\s*(?P<kind>Warning|Severe|Fatal|~~~)\s*\*\*\s?(?P<text>.*)$")
_SEVERITY = {"Warning": Severity.WARNING, "Severe": Severity.ERROR, "Fatal": Severity.ERROR}
MAX_TEXT_CHARS = 1000

GJ_TO_KWH = 277.7777777777778
MJ_PER_M2_TO_KWH_PER_M2 = 1 / 3.6
_TO_KWH = {"GJ": GJ_TO_KWH, "kWh": 1.0, "MJ": GJ_TO_KWH / 1000}
_TO_KWH_PER_M2 = {"MJ/m2": MJ_PER_M2_TO_KWH_PER_M2, "kWh/m2": 1.0}

ABUPS = "AnnualBuildingUtilityPerformanceSummary"


def parse_err(text: str) -> list[Message]:
    """One message per Warning, Severe or Fatal, with its `~~~` continuation lines joined to it."""
    messages: list[Message] = []
    for raw in text.splitlines():
        match = _ERR_LINE.match(raw)
        if match is None:
            continue
        kind, body = match["kind"], match["text"].strip()
        if kind == "~~~":
            if messages and body:
                last = messages[-1]
                joined = f"{last.text} {body}"[:MAX_TEXT_CHARS]
                messages[-1] = last.model_copy(update={"text": joined})
            continue
        messages.append(
            Message(
                severity=_SEVERITY[kind],
                code=f"energyplus.{kind.lower()}",
                text=body[:MAX_TEXT_CHARS],
                location=Location(file_role="eplusout.err"),
            )
        )
    return messages


def _value(db: sqlite3.Connection, report: str, table: str, row: str, column: str) -> tuple[float, str] | None:
    found = db.execute(
        "SELECT Value, Units FROM TabularDataWithStrings "
        "WHERE ReportName = ? AND ReportForString = 'Entire Facility' AND TableName = ? AND RowName = ? "
        "AND ColumnName = ?",
        (report, table, row, column),
    ).fetchone()
    if found is None:
        return None
    try:
        return float(found[0]), found[1]
    except ValueError:
        return None


def _converted(found: tuple[float, str] | None, factors: dict[str, float]) -> float | None:
    if found is None or found[1] not in factors:
        return None
    return round(found[0] * factors[found[1]], 3)


def tabular_rows(sql_path: Path, query: str) -> list[tuple[Any, ...]] | None:
    """Rows of one query over eplusout.sql, opened read-only; None when the file is not a database EnergyPlus
    finished writing."""
    db = sqlite3.connect(f"file:{sql_path}?mode=ro", uri=True)
    try:
        return db.execute(query).fetchall()
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()


def read_metrics(sql_path: Path) -> list[Metric]:
    """The headline figures of the run, in kWh, kWh/m², m² and hours (SI or IP tables alike)."""
    db = sqlite3.connect(f"file:{sql_path}?mode=ro", uri=True)
    try:
        area = _value(db, ABUPS, "Building Area", "Net Conditioned Building Area", "Area")
        eui = _value(db, ABUPS, "Site and Source Energy", "Total Site Energy", "Energy Per Conditioned Building Area")
        if area is not None and area[0] == 0:
            eui = _value(db, ABUPS, "Site and Source Energy", "Total Site Energy", "Energy Per Total Building Area")
        unmet = "Time Setpoint Not Met"
        candidates = [
            ("site_electricity", _converted(_value(db, ABUPS, "End Uses", "Total End Uses", "Electricity"), _TO_KWH),
             "kWh"),
            ("site_natural_gas", _converted(_value(db, ABUPS, "End Uses", "Total End Uses", "Natural Gas"), _TO_KWH),
             "kWh"),
            ("site_eui", _converted(eui, _TO_KWH_PER_M2), "kWh/m2"),
            ("unmet_heating_hours", _converted(_value(db, "SystemSummary", unmet, "Facility", "During Heating"),
                                               {"hr": 1.0}), "h"),
            ("unmet_cooling_hours", _converted(_value(db, "SystemSummary", unmet, "Facility", "During Cooling"),
                                               {"hr": 1.0}), "h"),
            ("conditioned_area", _converted(area, {"m2": 1.0}), "m2"),
        ]  # fmt: skip
    except sqlite3.DatabaseError:
        return []
    finally:
        db.close()
    return [Metric(name=name, value=value, unit=unit) for name, value, unit in candidates if value is not None]


MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
J_TO_KWH = 1 / 3.6e6
# EnergyPlus's meter names for end uses and fuels, as people read them (its own tabular reports' wording).
END_USE_NAMES = {
    "INTERIORLIGHTS": "Interior Lighting",
    "EXTERIORLIGHTS": "Exterior Lighting",
    "INTERIOREQUIPMENT": "Interior Equipment",
    "EXTERIOREQUIPMENT": "Exterior Equipment",
    "FANS": "Fans",
    "PUMPS": "Pumps",
    "HEATING": "Heating",
    "COOLING": "Cooling",
    "HEATREJECTION": "Heat Rejection",
    "HUMIDIFIER": "Humidification",
    "HEATRECOVERY": "Heat Recovery",
    "WATERSYSTEMS": "Water Systems",
    "REFRIGERATION": "Refrigeration",
    "COGENERATION": "Generators",
}
FUEL_NAMES = {"ELECTRICITY": "Electricity", "NATURALGAS": "Natural Gas"}
END_USES_ARTIFACT = "end-uses.json"


def read_monthly_end_uses(sql_path: Path) -> dict[str, Any] | None:
    """Monthly end uses by fuel in kWh, from the EndUseEnergyConsumption*Monthly reports: every end use that used
    any energy, as `{"unit", "months", "series": [{"fuel", "end_use", "values"}]}`. None when the reports are
    missing (the run did not get that far)."""
    rows = tabular_rows(
        sql_path,
        "SELECT RowName, ColumnName, Units, Value FROM TabularDataWithStrings "
        "WHERE ReportName LIKE 'EndUseEnergyConsumption%Monthly' AND TableName = 'Custom Monthly Report'",
    )
    if rows is None:
        return None
    values: dict[tuple[str, str], list[float]] = {}
    for month, column, unit, text in rows:
        end_use, _, fuel = column.partition(":")
        if month not in MONTHS or not fuel:
            continue
        try:
            number = float(text)
        except ValueError:
            continue
        kwh = number * J_TO_KWH if unit == "J" else number * _TO_KWH.get(unit, 0.0)
        key = (FUEL_NAMES.get(fuel, fuel.title()), END_USE_NAMES.get(end_use, end_use.title()))
        values.setdefault(key, [0.0] * len(MONTHS))[MONTHS.index(month)] = round(kwh, 3)
    if not values:
        return None
    series = [
        {"fuel": fuel, "end_use": end_use, "values": monthly}
        for (fuel, end_use), monthly in sorted(values.items())
        if any(monthly)
    ]
    return {"unit": "kWh", "months": [m[:3] for m in MONTHS], "series": series}
