"""`check`'s vocabulary: one line per check, each PASS, WARN, SKIP or FAIL with a detail."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    WARN = "WARN"
    SKIP = "SKIP"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    check: str
    result: Verdict
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "result": str(self.result), "detail": self.detail}
