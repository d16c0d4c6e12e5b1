"""Errors of the REST API as RFC 9457 problem details: one shape for every status, raised anywhere in a view."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Response, jsonify, request

from schemas.api import Problem

PROBLEM_JSON = "application/problem+json"


class ApiProblem(Exception):
    def __init__(
        self,
        status: int,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
        problem_type: str = "about:blank",
    ) -> None:
        super().__init__(detail or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors
        self.problem_type = problem_type


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    problem_type: str = "about:blank",
) -> Response:
    body = Problem(
        type=problem_type,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.path,
        errors=errors,
    )
    response = jsonify(body.model_dump(mode="json", exclude_none=True))
    response.status_code = status
    response.content_type = PROBLEM_JSON
    response.headers.update(headers or {})
    return response


def not_found() -> ApiProblem:
    """The one answer for anything the caller may not see, so that existence is never revealed."""
    return ApiProblem(404, "There is no such resource, or it is not yours to see.")
