"""Errors raised for bad inputs anywhere below the service.

The service turns an `InvalidInputError` into gRPC INVALID_ARGUMENT with the field and the reason,
so every message must say what is wrong and what to do, in words a caller can act on.
"""

from __future__ import annotations


class InvalidInputError(ValueError):
    """An input (image bytes, ECG array, text, config value) that cannot be used as given."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def with_prefix(self, prefix: str) -> "InvalidInputError":
        """The same error located inside a larger request, e.g. prefix 'items[3]'."""
        return InvalidInputError(f"{prefix}.{self.field}" if self.field else prefix, self.reason)
