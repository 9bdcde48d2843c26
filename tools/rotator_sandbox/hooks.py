"""Hooks installed inside the handler process by `rotator_sandbox.invoke` (never by product code).

- Crash after a remote call: `SANDBOX_CRASH_AFTER="aws:iam:UpdateLoginProfile"`, `"aws:dynamodb:PutItem#2"` (the 2nd
  successful PutItem, any table), `"aws:dynamodb:PutItem@keeper-iam-rotator-journal#2"` (the 2nd on that table),
  `"keeper:update_secret"`. The process dies with `os._exit(137)` (like SIGKILL: no finally
  blocks, no atexit) right after the call returned successfully, i.e. the remote side has applied it.
- AWS errors: `SANDBOX_AWS_FAULTS="iam:UpdateLoginProfile=PasswordPolicyViolation"`, comma-separated, each
  `<endpoint prefix>:<Operation>=<ErrorCode>[/<HTTP status>][#<first call>][x<times>]` (default status 400, from the
  1st call, once). The call is answered by that error without reaching moto, the way AWS would answer it
  (moto does not enforce password policies and never produces IAM's transient errors).
- Call counting: every AWS operation (botocore `after-call`) and every Keeper path (`SecretsManager._post_query`),
  with the CPU time the calling thread spent in each (what a remote call costs the handler, its retries included).

AWS: botocore clients copy their session's event emitter when created, and Powertools' secret provider makes its own
boto3 session, so the hook is registered on every client as it is created (botocore `Session.create_client`), which
covers boto3's default session and any other session alike.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.client
import botocore.session
from keeper_secrets_manager_core.core import SecretsManager

CRASH_EXIT_CODE = 137

calls: Counter[str] = Counter()  # "aws:iam:GetUser" / "keeper:get_secret" -> successful calls
table_calls: Counter[str] = Counter()  # "aws:dynamodb:PutItem@<table>" -> successful calls
attempts: Counter[str] = Counter()  # the same, failed calls included
requested: Counter[str] = Counter()  # AWS calls about to be made (what injected faults count)
call_cpu: Counter[str] = Counter()  # "aws:iam:GetLoginProfile" / "keeper:update_secret" -> CPU seconds of the caller
call_cpu_count: Counter[str] = Counter()  # the calls (failed ones included) that CPU was spent on
call_cpu_lock = threading.Lock()  # the handler's threads add to them concurrently


def _spent(call: str, started: float) -> None:
    spent = time.thread_time() - started
    with call_cpu_lock:
        call_cpu[call] += spent
        call_cpu_count[call] += 1


def call_cpu_since(before: tuple[Counter[str], Counter[str]] | None) -> dict[str, tuple[int, float]]:
    """Operation -> (calls, CPU seconds) since `before` (a `call_cpu_snapshot()`; None: since the start)."""
    with call_cpu_lock:
        count, cpu = (call_cpu_count - before[0], call_cpu - before[1]) if before else (call_cpu_count, call_cpu)
        return {call: (n, cpu[call]) for call, n in count.items()}


def call_cpu_snapshot() -> tuple[Counter[str], Counter[str]]:
    with call_cpu_lock:
        return call_cpu_count.copy(), call_cpu.copy()


@dataclass(frozen=True)
class CrashPoint:
    call: str  # "aws:<endpoint prefix>:<Operation>" or "keeper:<path>"
    occurrence: int = 1

    @classmethod
    def parse(cls, spec: str) -> CrashPoint:
        call, _, nth = spec.strip().partition("#")
        kind = call.split(":", 1)[0]
        if kind not in ("aws", "keeper") or call.count(":") != (2 if kind == "aws" else 1):
            raise ValueError(f"crash point must look like aws:<service>:<Operation>[#N] or keeper:<path>[#N]: {spec!r}")
        return cls(call, int(nth) if nth else 1)

    def __str__(self) -> str:
        return self.call if self.occurrence == 1 else f"{self.call}#{self.occurrence}"


_FAULT_SPEC = re.compile(
    r"^(?P<svc>[\w-]+):(?P<op>\w+)=(?P<code>\w+)(?:/(?P<status>\d{3}))?(?:#(?P<first>\d+))?(?:x(?P<times>\d+))?$"
)


@dataclass
class AwsFault:
    call: str  # "aws:iam:UpdateLoginProfile"
    code: str
    status: int = 400
    first: int = 1
    times: int = 1

    @classmethod
    def parse_all(cls, spec: str) -> list[AwsFault]:
        faults = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            match = _FAULT_SPEC.match(part)
            if not match:
                raise ValueError(f"AWS fault must look like iam:UpdateLoginProfile=Code[/500][#2][x3]: {part!r}")
            faults.append(
                cls(
                    call=f"aws:{match['svc']}:{match['op']}",
                    code=match["code"],
                    status=int(match["status"] or 400),
                    first=int(match["first"] or 1),
                    times=int(match["times"] or 1),
                )
            )
        return faults

    def answer(self, nth: int) -> Any:
        """botocore's (http, parsed) short-circuit when the nth call of this operation is one of ours to fail."""
        if not self.first <= nth < self.first + self.times:
            return None
        parsed = {
            "Error": {"Code": self.code, "Message": f"injected by the sandbox: {self.code}"},
            "ResponseMetadata": {"HTTPStatusCode": self.status},
        }
        return _InjectedHttp(self.status), parsed


@dataclass
class _InjectedHttp:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    text: str = ""


@dataclass
class _State:
    crash: CrashPoint | None = None
    aws_faults: list[AwsFault] = field(default_factory=list)
    installed: bool = False


_state = _State()


def _seen(call: str, ok: bool, table: str | None = None) -> None:
    attempts[call] += 1
    if not ok:
        return
    calls[call] += 1
    if table:
        table_calls[f"{call}@{table}"] += 1
    crash = _state.crash
    if crash is None:
        return
    count = table_calls[crash.call] if "@" in crash.call else calls[crash.call]
    if crash.call in (call, f"{call}@{table}") and count == crash.occurrence:
        sys.stderr.write(f"[sandbox] crashing after {crash} (exit {CRASH_EXIT_CODE})\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)


def _after_aws_call(http_response: Any = None, model: Any = None, context: Any = None, **_: Any) -> None:
    if model is None:
        return
    status = getattr(http_response, "status_code", 0) or 0
    table = (context or {}).get("rotator_sandbox_table")
    _seen(f"aws:{model.service_model.endpoint_prefix}:{model.name}", 200 <= status < 300, table)


def _table_of(params: Any) -> str | None:
    """The TableName of a DynamoDB request (its JSON body), so crash points and counts can name the table."""
    try:
        body = (params or {}).get("body") or b"{}"
        return json.loads(body).get("TableName")
    except (ValueError, TypeError, AttributeError):
        return None


def _before_aws_call(model: Any = None, params: Any = None, context: Any = None, **_: Any) -> Any:
    if model is None:
        return None
    if model.service_model.endpoint_prefix == "dynamodb" and isinstance(context, dict):
        context["rotator_sandbox_table"] = _table_of(params)
    call = f"aws:{model.service_model.endpoint_prefix}:{model.name}"
    requested[call] += 1
    for fault in _state.aws_faults:
        if fault.call == call and (answer := fault.answer(requested[call])) is not None:
            return answer
    return None


def install(crash_after: str | None = None, aws_faults: str | None = None) -> None:
    """Install the counting (and, when asked, crashing / failing) hooks; call before the handler creates any
    client."""
    _state.crash = CrashPoint.parse(crash_after) if crash_after else None
    _state.aws_faults = AwsFault.parse_all(aws_faults or "")
    if _state.installed:
        return
    _state.installed = True
    original_create_client = botocore.session.Session.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original_create_client(self, *args, **kwargs)
        client.meta.events.register("before-call", _before_aws_call, unique_id="rotator-sandbox-before-call")
        client.meta.events.register("after-call", _after_aws_call, unique_id="rotator-sandbox-after-call")
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    boto3.setup_default_session()  # the handler's boto3.client(...) calls go through this session

    original_api_call = botocore.client.BaseClient._make_api_call

    def api_call(self: Any, operation_name: str, api_params: Any) -> Any:
        started = time.thread_time()
        try:
            return original_api_call(self, operation_name, api_params)
        finally:
            _spent(f"aws:{self.meta.service_model.endpoint_prefix}:{operation_name}", started)

    botocore.client.BaseClient._make_api_call = api_call  # type: ignore[method-assign]
    original_post_query = SecretsManager._post_query

    def post_query(self: Any, path: str, payload: Any) -> Any:
        started = time.thread_time()
        try:
            answer = original_post_query(self, path, payload)
        except BaseException:
            _seen(f"keeper:{path}", ok=False)
            raise
        finally:
            _spent(f"keeper:{path}", started)
        _seen(f"keeper:{path}", ok=True)
        return answer

    SecretsManager._post_query = post_query  # type: ignore[method-assign]
