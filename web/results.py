"""What the run page draws from a step's results: the charts of web/charts.py, from the artifacts it recorded."""

from __future__ import annotations

import csv
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


def step_charts(step: StepDoc) -> list[Chart]:
    charts: list[Chart] = []
    for artifact in step.artifacts:
        if artifact.name == END_USES and (text := _read(artifact)) is not None:
            try:
                charts.extend(end_use_charts(json.loads(text)))
            except (ValueError, TypeError, AttributeError, ArithmeticError):
                log.warning("%s is not the end uses a chart is drawn from", artifact.uri)
        elif artifact.name == TIME_SERIES and (text := _read(artifact)) is not None:
            units = {metric.name: metric.unit for metric in step.metrics}
            try:
                chart = time_series_chart(text, units)
            except (ValueError, ArithmeticError, csv.Error):
                log.warning("%s is not a time series a chart is drawn from", artifact.uri)
                chart = None
            charts.extend([chart] if chart else [])
    return charts
