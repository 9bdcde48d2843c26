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
        after: int = 0,
    ) -> None:
        """`after` lets that many calls through first (e.g. the journal's second PutItem)."""
        remaining = {"n": times}

        def answer(**_: Any) -> Any:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            if self.calls[operation] <= after or remaining["n"] <= 0:
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


class SimulatedCrash(BaseException):
    """Stands in for the process dying (timeout, OOM, kill): nothing in the function catches a BaseException, so
    the run stops exactly where it is and leaves whatever state it reached."""


def after_aws_call(service: str, operation: str, exception: BaseException, occurrence: int = 1) -> None:
    """Raise `exception` right after the `occurrence`-th successful call of this operation (its effect stays)."""
    boto3.setup_default_session()
    events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")
    seen = {"n": 0}

    def strike(**_: Any) -> None:
        seen["n"] += 1
        if seen["n"] == occurrence:
            raise exception

    events.register(f"after-call.{service}.{operation}", strike, unique_id=f"after-{service}-{operation}")


def after_keeper_call(monkeypatch: Any, path: str, exception: BaseException) -> None:
    """Raise `exception` right after the first successful KSM request to `path` (e.g. "finalize_secret_update")."""
    from keeper_secrets_manager_core.core import SecretsManager

    original = SecretsManager._post_query
    seen = {"n": 0}

    def post_query(self: Any, route: str, payload: Any) -> Any:
        answer = original(self, route, payload)
        if route == path:
            seen["n"] += 1
            if seen["n"] == 1:
                raise exception
        return answer

    monkeypatch.setattr(SecretsManager, "_post_query", post_query)
