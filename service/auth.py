"""Optional API keys: `authorization: Bearer KEY` metadata, checked before any RPC body runs.

Two kinds of key: read-write (every RPC) and read-only (everything but Upsert, Delete, Reindex).
Health checks and reflection stay open so orchestrators and grpcurl work without a key. Keys are
compared with `hmac.compare_digest` against every configured key (no early exit), so the time a check
takes says nothing about how much of a guessed key was right. Keys are never logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("tribind.service")

SERVICE_PREFIX = "/tribind.v1.Tribind/"
WRITE_METHODS: frozenset[str] = frozenset({"Upsert", "Delete", "Reindex"})


@dataclass(frozen=True)
class ApiKeys:
    read_write: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.read_write or self.read_only)


def read_keys_file(path: str | Path) -> tuple[str, ...]:
    """One key per line; blank lines and `#` comments are skipped."""
    keys = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line)
    if not keys:
        raise ValueError(f"{path} holds no API key; write one key per line")
    return tuple(keys)


def split_keys(value: str | None) -> tuple[str, ...]:
    """Comma-separated keys from an environment variable."""
    return tuple(k.strip() for k in (value or "").split(",") if k.strip())


def _matches(candidate: str, keys: Iterable[str]) -> bool:
    found = False
    for key in keys:
        # `|` and no `break`: every key is compared whatever matched before.
        found |= hmac.compare_digest(candidate.encode("utf-8"), key.encode("utf-8"))
    return found


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for name, value in metadata or ():
        if name.lower() == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _deny(code: grpc.StatusCode, message: str, streaming: bool) -> grpc.RpcMethodHandler:
    def abort(request: object, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    if streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.ServerInterceptor):
    """Rejects Tribind RPCs without a valid key: UNAUTHENTICATED, or PERMISSION_DENIED for a read-only key writing."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if not method.startswith(SERVICE_PREFIX):
            return continuation(handler_call_details)  # health, reflection
        name = method[len(SERVICE_PREFIX):]
        streaming = name == "Reindex"
        token = _bearer(handler_call_details.invocation_metadata)
        if token is None:
            return _deny(
                grpc.StatusCode.UNAUTHENTICATED,
                "this server requires an API key: send metadata 'authorization: Bearer KEY' "
                "(tribind CLI: --api-key or $TRIBIND_API_KEY)",
                streaming,
            )
        is_rw = _matches(token, self._keys.read_write)
        is_ro = _matches(token, self._keys.read_only)
        if not (is_rw or is_ro):
            log.warning("rejected %s: unknown API key", name)
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "the API key is not valid for this server", streaming)
        if name in WRITE_METHODS and not is_rw:
            return _deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name} changes the library and needs a read-write API key; this key is read-only",
                streaming,
            )
        return continuation(handler_call_details)
