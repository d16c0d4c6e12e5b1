"""The labels every log line of a piece of work carries (run_id, org, ...): set where the work is known (a stage,
a job, a web request), read by the log formatter (bootstrap/logs.py). Context variables, so each request's thread
and each chained call keeps its own."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType

# Read-only, so the default every context starts from can never be changed in place.
_labels: ContextVar[Mapping[str, str]] = ContextVar("validibot_log_labels", default=MappingProxyType({}))


def current_labels() -> Mapping[str, str]:
    return _labels.get()


def push_labels(**labels: str | None) -> Token[Mapping[str, str]]:
    """Add labels (those given a value) until `pop_labels` of the token: for hooks that cannot wrap the work."""
    return _labels.set({**_labels.get(), **{name: value for name, value in labels.items() if value}})


def pop_labels(token: Token[Mapping[str, str]]) -> None:
    _labels.reset(token)


@contextmanager
def log_labels(**labels: str | None) -> Iterator[None]:
    token = push_labels(**labels)
    try:
        yield
    finally:
        pop_labels(token)
