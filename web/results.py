"""What the run page draws from a step's results: the charts of web/charts.py, from the artifacts it recorded."""

from __future__ import annotations

import csv
import functools
import json
import logging
import tempfile
from pathlib import Path

from schemas.documents import StepDoc
from schemas.envelopes import Artifact
from store.ports import IntegrityError, ObjectMissing, download_verified
from web.artifacts import pinned
from web.charts import Chart, end_use_charts, time_series_chart
from web.context import web_context

log = logging.getLogger(__name__)

END_USES = "end-uses.json"
TIME_SERIES = "results.csv"


def _read(artifact: Artifact) -> str | None:
    """The artifact exactly as its step recorded it (size and sha256 checked), or None when it cannot be charted."""
    ctx = web_context()
    if artifact.generation is None or artifact.size_bytes > ctx.settings.web_chart_max_bytes:
        return None
    with tempfile.TemporaryDirectory(prefix="validibot-chart-") as scratch:
        try:
            return download_verified(ctx.objects, pinned(artifact), Path(scratch) / "data").read_text(errors="replace")
        except (ObjectMissing, IntegrityError):
            log.warning("artifact %s cannot be charted: missing or not what its step recorded", artifact.uri)
            return None


class _Unreadable(Exception):
    """Not cached: the next page view tries the artifact again."""


@functools.lru_cache(maxsize=128)
def _artifact_charts(artifact_json: str, units: tuple[tuple[str, str | None], ...]) -> tuple[Chart, ...]:
    """The charts of one artifact version, drawn once per web process: a live page asks again on every change of
    its run, and the artifact (pinned by generation and sha256) never changes."""
    artifact = Artifact.model_validate_json(artifact_json)
    text = _read(artifact)
    if text is None:
        raise _Unreadable(artifact.uri)
    if artifact.name == END_USES:
        try:
            return tuple(end_use_charts(json.loads(text)))
        except (ValueError, TypeError, AttributeError, ArithmeticError):
            log.warning("%s is not the end uses a chart is drawn from", artifact.uri)
            return ()
    try:
        chart = time_series_chart(text, dict(units))
    except (ValueError, ArithmeticError, csv.Error):
        log.warning("%s is not a time series a chart is drawn from", artifact.uri)
        return ()
    return (chart,) if chart else ()


def step_charts(step: StepDoc) -> list[Chart]:
    units = tuple(sorted((metric.name, metric.unit) for metric in step.metrics))
    charts: list[Chart] = []
    for artifact in step.artifacts:
        if artifact.name not in (END_USES, TIME_SERIES):
            continue
        try:
            charts.extend(_artifact_charts(artifact.model_dump_json(), units if artifact.name == TIME_SERIES else ()))
        except _Unreadable:
            continue
    return charts
