"""From exceptions to gRPC status codes: the one place that decides what a client is told.

Every RPC body runs under `rpc_errors` / `rpc_stream_errors`. Known errors become their status code with
a "field: reason" message; anything else is logged here with its trace and answered INTERNAL with an
incident id, so the client never sees UNKNOWN or a Python stack trace.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from encoders.errors import InvalidInputError

log = logging.getLogger("tribind.service")

F = TypeVar("F", bound=Callable[..., Any])


class ServiceError(Exception):
    """An error the service raises itself, with the status code the client gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def invalid(field: str, reason: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {reason}")


def version_mismatch(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message)


def exhausted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message)


class ClientGone(Exception):
    """The caller cancelled or its deadline passed: stop working, nobody reads the answer."""


def _index_error_status(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    # Imported lazily and by name so that this module does not fix the index package's layout.
    try:
        from index import errors as index_errors
    except ImportError:
        return None
    table = (
        ("CaseNotFound", grpc.StatusCode.NOT_FOUND),
        ("VersionMismatch", grpc.StatusCode.FAILED_PRECONDITION),
        ("InvalidRequest", grpc.StatusCode.INVALID_ARGUMENT),
    )
    for name, code in table:
        cls = getattr(index_errors, name, None)
        if cls is not None and isinstance(exc, cls):
            field = getattr(exc, "field", None)
            reason = getattr(exc, "reason", None)
            message = f"{field}: {reason}" if field and reason else str(exc)
            return code, message
    return None


def status_for(exc: BaseException, context: grpc.ServicerContext | None = None) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception raised while serving."""
    if isinstance(exc, ClientGone) and context is not None and _deadline_passed(context):
        # The caller's deadline, not a cancel: say so, as the client's own stub would.
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the work finished"
    if isinstance(exc, ServiceError):
        return exc.code, exc.message
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, ClientGone):
        return grpc.StatusCode.CANCELLED, "the client cancelled or its deadline passed"
    mapped = _index_error_status(exc) if isinstance(exc, Exception) else None
    if mapped is not None:
        return mapped
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal server error (incident {incident}; the trace is in the server log)"


def _deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def rpc_errors(method: F) -> F:
    """Wrap a unary servicer method: map every exception to a status code (see `status_for`)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - this is the catch-all boundary
            code, message = status_for(exc, context)
        context.abort(code, message)

    return wrapper  # type: ignore[return-value]


def rpc_stream_errors(method: F) -> F:
    """As `rpc_errors`, for a server-streaming method (a generator)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
            return
        except Exception as exc:  # noqa: BLE001 - this is the catch-all boundary
            code, message = status_for(exc, context)
        context.abort(code, message)

    return wrapper  # type: ignore[return-value]
