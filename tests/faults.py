"""AWS faults at botocore's transport boundary: the call is answered by an error instead of moto, the way AWS
would answer it. moto does not enforce password policies or produce IAM's transient errors, so this is the only way
to exercise those branches in process (the end-to-end tests use real process death instead)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3


@dataclass
class _Http:
    status_code: int
    headers: dict[str, str]
    content: bytes = b""
    text: str = ""


class AwsFaults:
    """`fail("iam", "UpdateLoginProfile", "PasswordPolicyViolation", times=1)` answers the next call(s) with that error.
    Must be armed before the function creates its clients (the tests clear the client cache per test)."""

    def __init__(self) -> None:
        boto3.setup_default_session()
        self._events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")
        self.calls: dict[str, int] = {}

    def fail(
        self,
        service: str,
        operation: str,
        code: str,
        times: int = 1,
        status: int = 400,
        exception: Exception | None = None,
    ) -> None:
        remaining = {"n": times}

        def answer(**_: Any) -> Any:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            if remaining["n"] <= 0:
                return None
            remaining["n"] -= 1
            if exception is not None:
                raise exception
            parsed = {
                "Error": {"Code": code, "Message": f"injected {code}"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            }
            return _Http(status, {}), parsed

        self._events.register(f"before-call.{service}.{operation}", answer, unique_id=f"fault-{service}-{operation}")
