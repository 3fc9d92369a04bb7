"""Bad arguments to the phantom generator raise `encoders.errors.InvalidInputError`.

`encoders/__init__` imports torch (seconds of start-up per process), and the generator itself needs only
numpy, scipy and PIL; so the error class is imported only when there is an error to raise.
"""

from __future__ import annotations


def invalid_input(field: str, reason: str) -> ValueError:
    """An `encoders.errors.InvalidInputError(field, reason)`, imported lazily."""
    from encoders.errors import InvalidInputError

    return InvalidInputError(field, reason)
