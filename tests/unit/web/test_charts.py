"""Charts laid out from results: stacked monthly end uses per fuel, FMU time series as lines."""

from __future__ import annotations

import pytest

from web.charts import BASELINE, MAX_LINE_POINTS, PLOT_HEIGHT, end_use_charts, time_series_chart

END_USES = {
    "unit": "kWh",
    "months": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
    "series": [
        {"fuel": "Electricity", "end_use": "Interior Lighting", "values": [100.0] * 12},
        {"fuel": "Electricity", "end_use": "Interior Equipment", "values": [float(m) for m in range(1, 13)]},
        {"fuel": "Natural Gas", "end_use": "Heating", "values": [50.0] * 6 + [0.0] * 6},
    ],
}


def test_one_stacked_chart_per_fuel_with_a_segment_per_end_use_and_units() -> None:
    electricity, gas = end_use_charts(END_USES)

    assert electricity.title == "Monthly electricity end uses"
    assert electricity.y_label == "Electricity (kWh)"
    assert [s.name for s in electricity.series] == ["Interior Lighting", "Interior Equipment"]
    assert len(electricity.bars) == 24
    december = [b for b in electricity.bars if ", Dec:" in b.label]
    lighting, equipment = december
    # Stacked: equipment sits on top of lighting, and the tallest stack stays inside the plot.
    assert equipment.y + equipment.height == pytest.approx(lighting.y)
    assert lighting.y + lighting.height == pytest.approx(BASELINE)
    assert BASELINE - equipment.y <= PLOT_HEIGHT
    assert "Interior Lighting 1,200 kWh" in electricity.description
    assert "The largest month is Dec with 112 kWh." in electricity.description
    assert electricity.table[0] == ["Month", "Interior Lighting", "Interior Equipment", "Total"]
    assert electricity.table[12] == ["Dec", "100", "12", "112"]
    assert gas.y_label == "Natural Gas (kWh)"


def test_series_of_the_wrong_length_are_left_out() -> None:
    broken = {**END_USES, "series": [{"fuel": "Electricity", "end_use": "Fans", "values": [1.0, 2.0]}]}
    assert end_use_charts(broken) == []


def test_time_series_become_lines_at_most_max_points_long_keeping_the_last_sample() -> None:
    rows = ['"time","room_temperature","heater_power"'] + [f"{t},{18 + t / 100},{1500}" for t in range(2001)]

    chart = time_series_chart("\n".join(rows), {"room_temperature": None, "heater_power": None})

    assert chart is not None
    assert [s.name for s in chart.series] == ["room_temperature", "heater_power"]
    temperature = chart.series[0].values
    assert len(temperature) <= MAX_LINE_POINTS + 1
    assert temperature[0] == 18
    assert temperature[-1] == 38
    assert chart.x_label == "Simulation time (s)"
    assert "none declared" in chart.y_label
    assert "room_temperature goes from 18 to 38" in chart.description
    assert len(chart.lines) == 2


def test_a_declared_unit_is_on_the_axis_and_text_is_no_series() -> None:
    chart = time_series_chart('"time","t_room"\n0,1\n1,2\n', {"t_room": "K"})
    assert chart is not None
    assert chart.y_label == "Value (K)"
    assert time_series_chart('"time","t"\n0,abc\n', {}) is None
    assert time_series_chart('"time"\n0\n', {}) is None


def test_samples_that_diverged_or_are_short_are_skipped_and_bad_end_uses_left_out() -> None:
    chart = time_series_chart('"time","t"\n0,1\n1,inf\n\n2,nan\n3,4\n4\n', {})
    assert chart is not None
    assert chart.series[0].values == [1.0, 4.0]
    assert time_series_chart('"time","t"\n0,inf\n', {}) is None
    diverged = {**END_USES, "series": [{"fuel": "Electricity", "end_use": "Fans", "values": [float("inf")] * 12}]}
    assert end_use_charts(diverged) == []
