"""The EnergyPlus model rules without EnergyPlus: parsing, the safety scan, run settings, err parsing."""

from __future__ import annotations

import json

import pytest

from jobs.validators.energyplus_model import (
    ModelError,
    RunSettings,
    parse_idf,
    prepare_epjson,
    prepare_idf,
    scan_epjson,
    scan_idf,
)
from jobs.validators.energyplus_results import parse_err

MODEL = """! a comment; with, punctuation
Version, 25.2;
Timestep,
    4;      !- Number of Timesteps per Hour
RunPeriod, Year, 1, 1, , 12, 31, , , Yes, Yes, No, Yes, Yes;
Output:SQLite, Simple;
Zone, Office;
"""


def test_idf_objects_are_parsed_with_their_lines_whatever_the_layout() -> None:
    objects = parse_idf(MODEL)

    assert [(o.class_name, o.name, o.line) for o in objects] == [
        ("Version", "25.2", 2),
        ("Timestep", "4", 3),
        ("RunPeriod", "Year", 5),
        ("Output:SQLite", "Simple", 6),
        ("Zone", "Office", 7),
    ]


def test_an_unterminated_object_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"line 2\): a ';' is missing"):
        parse_idf("Version, 25.2;\nZone, Office\n")


@pytest.mark.parametrize(
    ("idf", "why"),
    [
        ("PythonPlugin:Instance, P, No, mod, Cls;", "may not run their own code"),
        ("ExternalInterface, PtolemyServer;", "may not run their own code"),
        ("ExternalInterface:FunctionalMockupUnitImport, a.fmu, 10;", "may not run their own code"),
        ("EnergyManagementSystem:Program, P, SET x = 1;", "may not run their own code"),
        ("EnergyManagementSystem:Subroutine, S, SET x = 1;", "may not run their own code"),
        ("Schedule:File, S, Any, /etc/passwd, 1;", "'/etc/passwd' is absolute, remote or outside"),
        ("Schedule:File, S, Any, C:\\data\\s.csv, 1;", "is absolute, remote or outside"),
        ("Schedule:File, S, Any, https://example.com/s.csv, 1;", "is absolute, remote or outside"),
        ("Schedule:File, S, Any, ../../s.csv, 1;", "is absolute, remote or outside"),
    ],
)
def test_unsafe_objects_are_refused_with_their_line(idf: str, why: str) -> None:
    [refusal] = scan_idf(parse_idf("Version, 25.2;\n" + idf))

    assert refusal.code == "energyplus.unsafe_model"
    assert why in refusal.text
    assert refusal.location.line == 2


def test_safe_objects_pass_the_scan() -> None:
    idf = "Schedule:File, S, Any, schedules/occupancy.csv, 1;\nEnergyManagementSystem:Sensor, T, Zone, Temp;"
    assert scan_idf(parse_idf(idf)) == []


def test_epjson_scan_finds_the_same_objects() -> None:
    model = {
        "Version": {"Version 1": {"version_identifier": "25.2"}},
        "PythonPlugin:Instance": {"Exfiltrate": {"python_module_name": "m"}},
        "Schedule:File": {"Remote": {"file_name": "gs://bucket/s.csv"}},
    }
    assert [m.location.path for m in scan_epjson(model)] == ["PythonPlugin:Instance/Exfiltrate", "Schedule:File/Remote"]


def test_run_settings_replace_the_models_own_and_outputs_are_forced() -> None:
    settings = RunSettings(timesteps_per_hour=6, run_period=(1, 1, 1, 31))
    prepared = parse_idf(prepare_idf(MODEL, parse_idf(MODEL), settings))

    by_class: dict[str, list[list[str]]] = {}
    for obj in prepared:
        by_class.setdefault(obj.class_name, []).append(obj.fields)
    assert by_class["Timestep"] == [["6"]]
    assert [f[:5] for f in by_class["RunPeriod"]] == [["Validibot Run Period", "1", "1", "", "1"]]
    assert by_class["Output:SQLite"] == [["SimpleAndTabular"]]
    assert by_class["Output:Table:SummaryReports"] == [["AllSummary"]]
    assert by_class["OutputControl:Table:Style"] == [["HTML"]]
    assert by_class["Zone"] == [["Office"]]


def test_epjson_run_settings() -> None:
    model = {"Timestep": {"Timestep 1": {"number_of_timesteps_per_hour": 4}}, "Output:SQLite": {"x": {}}}
    prepared = json.loads(prepare_epjson(model, RunSettings(timesteps_per_hour=12)))

    assert prepared["Timestep"] == {"Timestep 1": {"number_of_timesteps_per_hour": 12}}
    assert prepared["Output:SQLite"] == {"Output:SQLite 1": {"option_type": "SimpleAndTabular"}}
    assert "RunPeriod" not in prepared


def test_err_file_becomes_one_finding_per_message_with_continuations() -> None:
    err = """Program Version,EnergyPlus, Version 25.2.0-cf7368216c, YMD=2026.11.22 21:41,
   ** Warning ** GetHTSurfaceData: no "Ground Temperatures" were input.
   **   ~~~   ** Found first in surface=FLOOR
   ** Severe  ** BuildingSurface:Detailed="FLOOR", invalid Construction Name="X".
   **  Fatal  ** GetSurfaceData: Errors discovered, program terminates.
   ************* EnergyPlus Terminated--Fatal Error Detected. 1 Warning; 1 Severe Errors;
"""
    messages = parse_err(err)

    assert [(m.severity, m.code) for m in messages] == [
        ("WARNING", "energyplus.warning"),
        ("ERROR", "energyplus.severe"),
        ("ERROR", "energyplus.fatal"),
    ]
    assert messages[0].text == 'GetHTSurfaceData: no "Ground Temperatures" were input. Found first in surface=FLOOR'
    assert messages[2].text == "GetSurfaceData: Errors discovered, program terminates."
