"""Charts of a run's results, drawn on the server as SVG: EnergyPlus monthly end uses by fuel (stacked bars, from the
validator's end-uses.json) and FMU output time series (lines, from results.csv).

Server-rendered because the page then needs no script to show them (the Content-Security-Policy allows none
inline, and a vendored charting library would be the largest script on the page), they print, and every label is
escaped by the same Jinja autoescaping as the rest of the page. Colours are SVG presentation attributes, not style
attributes, which the policy would refuse. Each chart has a title, axis units, a text description and its data as a
table.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MAX_LINE_POINTS = 400
MAX_LINE_SERIES = 8
# The drawing's size and the plot area's margins, in SVG pixels (the SVG scales to its container).
WIDTH, HEIGHT = 720, 340
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 16, 56
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
BASELINE = TOP + PLOT_HEIGHT


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float]
    colour: str


@dataclass(frozen=True)
class Tick:
    at: float  # pixels
    label: str


@dataclass(frozen=True)
class Bar:
    series: str
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str


@dataclass(frozen=True)
class Line:
    series: str
    points: str
    colour: str


@dataclass(frozen=True)
class Chart:
    """A chart laid out in SVG pixel space, ready for templates/chart.html to draw."""

    kind: str  # "stacked-bars" or "lines"
    title: str
    description: str
    x_label: str
    y_label: str
    series: list[Series]
    categories: list[str]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    bars: list[Bar]
    lines: list[Line]
    # The data table under the chart: a header row, then one row per category (or sample).
    table: list[list[str]]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_width: int = PLOT_WIDTH
    baseline: int = BASELINE


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks if span > 0 else 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _y_axis(low: float, high: float) -> tuple[float, float, list[Tick]]:
    step = _nice_step(high - low)
    bottom, top = math.floor(low / step) * step, math.ceil(high / step) * step
    if top == bottom:
        top = bottom + step
    count = round((top - bottom) / step)
    ticks = [
        Tick(BASELINE - (i * step) / (top - bottom) * PLOT_HEIGHT, _fmt(bottom + i * step)) for i in range(count + 1)
    ]
    return bottom, top, ticks


def end_use_charts(data: dict[str, Any]) -> list[Chart]:
    """One stacked-bar chart per fuel: a bar per month, a segment per end use."""
    months: list[str] = [str(m) for m in data.get("months", [])]
    unit = str(data.get("unit", ""))
    by_fuel: dict[str, list[tuple[str, list[float]]]] = {}
    for entry in data.get("series", []):
        values = [float(v) for v in entry.get("values", [])]
        if len(values) == len(months) and all(math.isfinite(v) and v >= 0 for v in values):
            by_fuel.setdefault(str(entry.get("fuel")), []).append((str(entry.get("end_use")), values))
    return [_stacked(fuel, months, unit, uses) for fuel, uses in by_fuel.items()]


def _stacked(fuel: str, months: list[str], unit: str, uses: list[tuple[str, list[float]]]) -> Chart:
    series = [Series(name, values, PALETTE[i % len(PALETTE)]) for i, (name, values) in enumerate(uses)]
    totals = [sum(s.values[m] for s in series) for m in range(len(months))]
    _, top, y_ticks = _y_axis(0.0, max(totals, default=0.0))
    slot = PLOT_WIDTH / max(len(months), 1)
    bars, x_ticks = [], []
    for m, month in enumerate(months):
        x = LEFT + m * slot + slot * 0.15
        x_ticks.append(Tick(LEFT + (m + 0.5) * slot, month))
        stacked = 0.0
        for s in series:
            value = s.values[m]
            height = value / top * PLOT_HEIGHT
            y = BASELINE - (stacked + value) / top * PLOT_HEIGHT
            bars.append(Bar(s.name, x, y, slot * 0.7, height, s.colour, f"{s.name}, {month}: {_fmt(value)} {unit}"))
            stacked += value
    annual = sorted(((sum(s.values), s.name) for s in series), reverse=True)
    description = (
        f"Stacked bars of monthly {fuel.lower()} use in {unit}, one segment per end use. Over the year: "
        + "; ".join(f"{name} {_fmt(total)} {unit}" for total, name in annual)
        + f". The largest month is {months[totals.index(max(totals))]} with {_fmt(max(totals))} {unit}."
        if series
        else f"No {fuel.lower()} use."
    )
    table = [["Month", *[s.name for s in series], "Total"]] + [
        [month, *[_fmt(s.values[m]) for s in series], _fmt(totals[m])] for m, month in enumerate(months)
    ]
    return Chart(
        kind="stacked-bars",
        title=f"Monthly {fuel.lower()} end uses",
        description=description,
        x_label="Month",
        y_label=f"{fuel} ({unit})",
        series=series,
        categories=months,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        bars=bars,
        lines=[],
        table=table,
    )


def time_series_chart(text: str, units: dict[str, str | None]) -> Chart | None:
    """Lines of each output variable over simulation time, from an FMU's results.csv (at most MAX_LINE_POINTS points
    per line, evenly taken; the data table lists the same points). None when the file holds no numeric series."""
    rows = list(csv.reader(io.StringIO(text)))
    if len(rows) < 2 or len(rows[0]) < 2:
        return None
    header, samples = rows[0], []
    for row in rows[1:]:
        try:
            values = [float(v) for v in row]
        except ValueError:
            return None
        # A blank or short line, or a value that diverged (inf, nan), cannot be drawn: the line skips that sample.
        if len(values) == len(header) and all(math.isfinite(v) for v in values):
            samples.append(values)
    if not samples:
        return None
    stride = max(1, math.ceil(len(samples) / MAX_LINE_POINTS))
    taken = samples[::stride]
    if taken[-1] is not samples[-1]:
        taken.append(samples[-1])
    names = header[1 : 1 + MAX_LINE_SERIES]
    times = [row[0] for row in taken]
    series = [Series(name, [row[i + 1] for row in taken], PALETTE[i % len(PALETTE)]) for i, name in enumerate(names)]
    every = [v for s in series for v in s.values]
    low, high, y_ticks = _y_axis(min(every), max(every))
    t0, t1 = times[0], times[-1] if times[-1] > times[0] else times[0] + 1

    def x_of(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * PLOT_WIDTH

    def y_of(v: float) -> float:
        return BASELINE - (v - low) / (high - low) * PLOT_HEIGHT

    lines = [
        Line(s.name, " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in zip(times, s.values, strict=True)), s.colour)
        for s in series
    ]
    step = _nice_step(t1 - t0)
    x_ticks = [Tick(x_of(t0 + i * step), _fmt(t0 + i * step)) for i in range(int((t1 - t0) / step) + 1)]
    unit_names = {name: units.get(name) for name in names}
    declared = {name: unit for name, unit in unit_names.items() if unit}
    y_unit = next(iter(set(declared.values()))) if len(set(declared.values())) == 1 else None
    y_label = f"Value ({y_unit})" if y_unit else "Value (units as the FMU declares them; none declared)"
    description = (
        f"Lines of {', '.join(names)} over simulation time from {_fmt(t0)} s to {_fmt(times[-1])} s. "
        + "; ".join(
            f"{s.name} goes from {_fmt(s.values[0])} to {_fmt(s.values[-1])} (between {_fmt(min(s.values))} and "
            f"{_fmt(max(s.values))})"
            for s in series
        )
    )
    table = [["Time (s)", *names]] + [[_fmt(t), *[_fmt(s.values[i]) for s in series]] for i, t in enumerate(times)]
    return Chart(
        kind="lines",
        title="Output variables over time",
        description=description + ".",
        x_label="Simulation time (s)",
        y_label=y_label,
        series=series,
        categories=[],
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        bars=[],
        lines=lines,
        table=table,
    )
