"""How every process logs: JSON lines in Cloud Logging's structured format (DESIGN §15), or plain text locally.

Each line is one JSON object on stderr, which Cloud Run hands to Cloud Logging: `severity`, `message`, `time`,
`logging.googleapis.com/labels` (run_id, org and the like of the work at hand, with stage and component) and, inside
a request that carries one, `logging.googleapis.com/trace`, so one filter finds every line of a run, or of a request.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from schemas.log_labels import current_labels
from schemas.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Python's levels by Cloud Logging's names for them.
SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def request_trace_id() -> str | None:
    """The trace id of the request being handled (Cloud Run's X-Cloud-Trace-Context, or W3C traceparent)."""
    try:
        from flask import has_request_context, request
    except ImportError:
        return None
    if not has_request_context():
        return None
    cloud = request.headers.get("X-Cloud-Trace-Context", "")
    if cloud:
        return cloud.split("/", 1)[0] or None
    parts = request.headers.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class CloudLoggingFormatter(logging.Formatter):
    def __init__(self, project: str, stage: str, component: str) -> None:
        super().__init__()
        self._project, self._stage, self._component = project, stage, component

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, object] = {
            "severity": SEVERITY.get(record.levelno, "DEFAULT"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            "logging.googleapis.com/labels": {
                **current_labels(),
                "stage": self._stage,
                "component": self._component,
            },
        }
        trace = request_trace_id()
        if trace:
            entry["logging.googleapis.com/trace"] = f"projects/{self._project}/traces/{trace}"
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings, component: str) -> None:
    """The root logger of this process, at INFO: JSON lines (VALIDIBOT_LOG_FORMAT=json) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(CloudLoggingFormatter(settings.project, settings.stage, component))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
