"""Errors raised by the case store.

The service maps them to gRPC status codes: `InvalidRequest` -> INVALID_ARGUMENT, `CaseNotFound` ->
NOT_FOUND, `VersionMismatch` -> FAILED_PRECONDITION, any other `StoreError` -> INTERNAL. Every message
says what is wrong and what the caller can do about it.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the case store raises on purpose."""


class InvalidRequest(StoreError, ValueError):
    """A request field that cannot be stored or searched as given; nothing was changed."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class CaseNotFound(StoreError, KeyError):
    """The case id is not in the store."""

    def __init__(self, case_id: str) -> None:
        self.case_id = case_id
        super().__init__(case_id)

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the id only
        return f"case {self.case_id!r} is not in the store; upsert it first or check the id"


class VersionMismatch(StoreError):
    """Vectors embedded by another model than the one the store was opened for."""

    def __init__(self, expected: str, found: str, hint: str) -> None:
        self.expected = expected
        self.found = found
        self.hint = hint
        super().__init__(f"model_version mismatch: expected {expected!r}, found {found!r}. {hint}")
