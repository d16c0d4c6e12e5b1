"""Monthly end uses by fuel, read from the EndUseEnergyConsumption*Monthly tabular reports of eplusout.sql."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from jobs.validators.energyplus_results import MONTHS, read_monthly_end_uses


def sql_with(tmp_path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    path = tmp_path / "eplusout.sql"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE TabularDataWithStrings (ReportName TEXT, TableName TEXT, RowName TEXT, ColumnName TEXT,"
        " Units TEXT, Value TEXT)"
    )
    db.executemany("INSERT INTO TabularDataWithStrings VALUES (?, 'Custom Monthly Report', ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    return path


def monthly(report: str, column: str, joules: float) -> list[tuple[str, str, str, str, str]]:
    rows = [(report, month, column, "J", f"{joules * (i + 1):E}") for i, month in enumerate(MONTHS)]
    return [*rows, (report, "Annual Sum or Average", column, "J", "1.0E+12")]


def test_end_uses_are_converted_to_kwh_named_as_people_read_them_and_zero_ones_left_out(tmp_path: Path) -> None:
    electricity = "EndUseEnergyConsumptionElectricityMonthly"
    rows = [
        *monthly(electricity, "INTERIORLIGHTS:ELECTRICITY", 3.6e6),
        *[(electricity, month, "FANS:ELECTRICITY", "", "        0.00") for month in MONTHS],
        *monthly("EndUseEnergyConsumptionNaturalGasMonthly", "HEATING:NATURALGAS", 7.2e6),
    ]

    found = read_monthly_end_uses(sql_with(tmp_path, rows))

    assert found is not None
    assert found["unit"] == "kWh"
    assert found["months"] == ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    assert [(s["fuel"], s["end_use"]) for s in found["series"]] == [
        ("Electricity", "Interior Lighting"),
        ("Natural Gas", "Heating"),
    ]
    assert found["series"][0]["values"] == pytest.approx([float(i + 1) for i in range(12)])
    assert found["series"][1]["values"][11] == pytest.approx(24.0)


def test_no_monthly_reports_is_none(tmp_path: Path) -> None:
    assert read_monthly_end_uses(sql_with(tmp_path, [])) is None
    broken = tmp_path / "broken.sql"
    broken.write_bytes(b"not a database")
    assert read_monthly_end_uses(broken) is None
