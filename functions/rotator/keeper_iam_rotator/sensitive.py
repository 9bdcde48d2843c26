"""A wrapper that keeps secret strings out of logs, reprs, tracebacks and results."""

from __future__ import annotations

import hashlib


class Secret:
    """Holds a secret string; only `reveal()` gives it back.

    `str()`/`repr()` show a mask, so a secret that slips into an f-string, a log field or an exception message
    prints as `***` instead of the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """A short, non-reversible tag that lets people compare two secrets without seeing either."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:8]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__
