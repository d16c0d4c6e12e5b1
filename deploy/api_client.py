"""The CLI's side of REST API v1 (DESIGN §14): a small client over `requests`, and where the CLI keeps its key.

Responses are read with the same pydantic models the server writes them with (schemas/api.py), so a change on one
side fails loudly on the other. The key goes into the Authorization header and the config file, nowhere else: not
into an error, a log line or a repr.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, ValidationError

from schemas.api import (
    IDEMPOTENCY_IN_PROGRESS,
    Accepted,
    Caller,
    Canceled,
    FindingOut,
    FindingPage,
    Problem,
    RunDetail,
    RunPage,
    WorkflowApplied,
    WorkflowList,
    WorkflowOut,
)

M = TypeVar("M", bound=BaseModel)

CONFIG_ENV = "VALIDIBOT_CLI_CONFIG"
SERVER_ENV = "VALIDIBOT_SERVER"
KEY_ENV = "VALIDIBOT_API_KEY"
DEFAULT_CONFIG = Path("~/.validibot/cli.json")
# (connect, read) seconds: a submission of up to 10 MiB is one request, so reads get the longer wait.
TIMEOUT = (10.0, 120.0)
# Attempts beyond the first for a request that is safe to repeat; waits double from RETRY_WAIT.
RETRIES = 2
RETRY_WAIT = 0.5
# A rate-limited request waits what the API asks, up to this many seconds, rather than failing the command.
MAX_RETRY_AFTER = 10.0
# A page of findings as large as the API gives; a run's findings are bounded (max_findings_per_step per step).
FINDINGS_PAGE = 1000


class ApiError(Exception):
    """A request the API refused (its problem's status and detail), or one that never got an answer (status 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.detail} (HTTP {self.status})" if self.status else self.detail


# -- Where the CLI keeps its key -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiTarget:
    """The server and key API mode talks to; `org` is the key's org when known without asking (saved by login)."""

    server: str
    key: str = field(repr=False)
    org: str | None = None


def normal_server(server: str) -> str:
    """The server's base URL as typed, or copied from `validibot up`'s banner with its /api/v1 suffix."""
    server = server.strip().rstrip("/")
    return server.removesuffix("/api/v1").rstrip("/")


def config_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


def read_config(path: Path) -> ApiTarget | None:
    """What `validibot login` saved, or None when nobody logged in; ValueError when the file is not one it wrote."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}); run `validibot login` again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("server"), str) or not isinstance(data.get("key"), str):
        raise ValueError(f"{path} is not a validibot CLI config; run `validibot login` again")
    org = data.get("org")
    return ApiTarget(data["server"], data["key"], org if isinstance(org, str) else None)


def write_config(path: Path, target: ApiTarget) -> None:
    """Save the target readable by its owner alone: the file is created 0600 before the key is written into it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # The umask cannot have widened it, but an old leftover temporary file may have had other bits.
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump({"server": target.server, "key": target.key, "org": target.org}, out)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def resolve_target(env: Mapping[str, str], saved: ApiTarget | None) -> ApiTarget | None:
    """API mode's server and key: each from the environment when set there, else from the saved config; None
    (direct mode) unless both are found. The saved org holds only for the saved key."""
    server = env.get(SERVER_ENV) or (saved.server if saved else None)
    key = env.get(KEY_ENV) or (saved.key if saved else None)
    if not server or not key:
        return None
    org = saved.org if saved is not None and saved.key == key else None
    return ApiTarget(normal_server(server), key, org)


# -- The client ------------------------------------------------------------------------------------------------


@dataclass
class ApiClient:
    server: str
    key: str = field(repr=False)
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    retries: int = RETRIES
    retry_wait: float = RETRY_WAIT

    def __post_init__(self) -> None:
        self.server = normal_server(self.server)

    def whoami(self) -> Caller:
        return self._call("GET", "/whoami", Caller)

    def submit(self, org: str, workflow: str, path: Path, idempotency_key: str | None = None) -> Accepted:
        """Submit the file at `path`. Every attempt carries the same Idempotency-Key, so an attempt whose answer
        was lost and then retried replays the first one's run instead of making a second."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"

        def files() -> dict[str, Any]:
            # Read anew for each attempt: a failed attempt may have consumed part of a stream.
            return {"file": (path.name, path.read_bytes(), content_type)}

        return self._call(
            "POST", f"/orgs/{org}/workflows/{workflow}/runs", Accepted, files=files, headers=headers, retry=True
        )

    def run(self, org: str, run_id: str) -> RunDetail | None:
        """The run with its steps; None while it is not there (the API says 404 until intake has made it)."""
        try:
            return self._call("GET", f"/orgs/{org}/runs/{run_id}", RunDetail)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def runs(
        self,
        org: str,
        status: str | None = None,
        workflow: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        params = {"status": status, "workflow": workflow, "cursor": cursor, "limit": limit}
        return self._call("GET", f"/orgs/{org}/runs", RunPage, params=params)

    def findings(self, org: str, run_id: str, cursor: str | None = None, limit: int = FINDINGS_PAGE) -> FindingPage:
        params = {"cursor": cursor, "limit": limit}
        return self._call("GET", f"/orgs/{org}/runs/{run_id}/findings", FindingPage, params=params)

    def all_findings(self, org: str, run_id: str, limit: int | None = None) -> list[FindingOut]:
        """The run's findings by step and index, page after page: all of them, or the first `limit`."""
        found: list[FindingOut] = []
        cursor: str | None = None
        while limit is None or len(found) < limit:
            wanted = FINDINGS_PAGE if limit is None else min(FINDINGS_PAGE, limit - len(found))
            page = self.findings(org, run_id, cursor, wanted)
            found.extend(page.items)
            cursor = page.next_cursor
            if cursor is None or not page.items:
                break
        return found

    def cancel(self, org: str, run_id: str) -> Canceled:
        # Not retried: a cancel that did happen would be answered 409 (ended already) the second time.
        return self._call("POST", f"/orgs/{org}/runs/{run_id}/cancel", Canceled)

    def rerun(self, org: str, run_id: str) -> Accepted:
        # Not retried: the API takes no Idempotency-Key here, so a repeat could make a second run.
        return self._call("POST", f"/orgs/{org}/runs/{run_id}/rerun", Accepted)

    def workflows(self, org: str) -> WorkflowList:
        return self._call("GET", f"/orgs/{org}/workflows", WorkflowList)

    def workflow(self, org: str, slug: str) -> WorkflowOut:
        return self._call("GET", f"/orgs/{org}/workflows/{slug}", WorkflowOut)

    def apply_workflow(self, org: str, slug: str, path: Path, resources: Mapping[str, Path]) -> WorkflowApplied:
        """PUT the workflow file and its resource files, each part named by its path relative to the workflow file.
        Retried like a read: applying the same content twice is a no-op."""

        def files() -> list[tuple[str, tuple[str, bytes, str]]]:
            parts = [("workflow", (path.name, path.read_bytes(), "application/yaml"))]
            for name, file in resources.items():
                kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
                parts.append(("resources", (name, file.read_bytes(), kind)))
            return parts

        return self._call("PUT", f"/orgs/{org}/workflows/{slug}", WorkflowApplied, files=files, retry=True)

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        files: Any = None,
        retry: bool | None = None,
    ) -> M:
        """One request, its body read as `model`, or ApiError with the problem's detail. Repeated after a 429 (the
        rate limit refuses before anything is done), and after no answer or a 5xx when `retry` says it is safe to
        repeat (reads always; writes that say so)."""
        retry = method == "GET" if retry is None else retry
        url = f"{self.server}/api/v1{path}"
        sent = {"Authorization": f"Bearer {self.key}", "Accept": "application/json", **(headers or {})}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = 1 + self.retries
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.session.request(
                    method,
                    url,
                    params=query,
                    headers=sent,
                    files=files() if callable(files) else files,
                    timeout=TIMEOUT,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last or not retry:
                    # The exception's text names the URL, never the headers: the key stays out of it.
                    raise ApiError(0, f"no answer from {self.server}: {type(exc).__name__}") from exc
                time.sleep(self.retry_wait * 2**attempt)
                continue
            wait = None if last else self._retry_wait(response, attempt, retry)
            if wait is not None:
                time.sleep(wait)
                continue
            return self._read(response, model)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _retry_wait(self, response: requests.Response, attempt: int, retry: bool) -> float | None:
        """How long to wait before repeating a request that got this answer; None to take the answer."""
        status = response.status_code
        if status == 429:
            retry_after = response.headers.get("Retry-After", "")
            return min(MAX_RETRY_AFTER, float(retry_after)) if retry_after.isdigit() else self.retry_wait * 2**attempt
        # An earlier attempt of this very request may still be uploading: the API says so, and replays it after.
        if retry and (status >= 500 or (attempt > 0 and status == 409 and _in_progress(response))):
            return self.retry_wait * 2**attempt
        return None

    @staticmethod
    def _read(response: requests.Response, model: type[M]) -> M:
        if not 200 <= response.status_code < 300:
            raise ApiError(response.status_code, _problem_detail(response))
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise ApiError(
                response.status_code, f"the server's answer is not a {model.__name__} ({type(exc).__name__})"
            ) from exc


def _in_progress(response: requests.Response) -> bool:
    try:
        return bool(response.json().get("type") == IDEMPOTENCY_IN_PROGRESS)
    except (ValueError, AttributeError):
        return False


def _problem_detail(response: requests.Response) -> str:
    """What the problem says went wrong; the reason phrase when the body is not a problem (a proxy's page)."""
    try:
        problem = Problem.model_validate(response.json())
    except (ValueError, ValidationError):
        return response.reason or f"HTTP {response.status_code}"
    detail = problem.detail or problem.title
    # A request that did not validate lists its fields only in `errors`; a refused workflow's detail has them all.
    fields = [error for error in problem.errors or [] if "loc" in error]
    if fields:
        detail += " " + "; ".join(_field_error(error) for error in fields)
    return detail


def _field_error(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc") or [])
    return f"{where}: {error.get('msg', '')}"
