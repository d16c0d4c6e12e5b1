"""Template filters: how the pages write sizes, durations, numbers and times."""

from __future__ import annotations

from datetime import datetime

from flask import Flask


def filesize(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def number(value: float) -> str:
    return f"{value:g}"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def register_filters(app: Flask) -> None:
    for name, function in {"filesize": filesize, "duration": duration, "number": number, "when": when}.items():
        app.add_template_filter(function, name)
