"""Shared fixtures: moto for AWS, the KSM emulator (real SDK, real encryption, loopback HTTPS) for Keeper.

`stack` gives a small world to rotate in and the two facts every rotation test compares: the password moto stores
for an IAM user, and the password Keeper has committed for the record.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.iam.models import iam_backends

from keeper_iam_rotator.journal import Journal
from rotator_sandbox.aging import age_rotations
from rotator_sandbox.stack import (  # the names template.yaml gives the function's resources
    ACCOUNT,
    CONFIG_SECRET,
    IDEMPOTENCY_TABLE,
    JOURNAL_KEY,
    JOURNAL_MAC_KEY,
    JOURNAL_TABLE,
    SCOPE_TAG,
    create_function_resources,
    field_value,
)

INITIAL_PASSWORD = "Initial-Passw0rd!"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "KeeperIamRotator",
        "KSM_CONFIG_SECRET_ID": CONFIG_SECRET,
        "IDEMPOTENCY_TABLE_NAME": IDEMPOTENCY_TABLE,
        "RETRY_DELAY": "0",
    }.items():
        monkeypatch.setenv(name, value)
    for name in (
        *("AWS_PROFILE", "AWS_ENDPOINT_URL", "ROTATION_FOLDER_UIDS", "DRY_RUN", "KSM_CONFIG", "KSM_HOSTNAME"),
        *("TARGET_ACCOUNT_IDS", "TARGET_EXTERNAL_ID", "TARGET_EXTERNAL_ID_SECRET", "ROTATION_QUEUE_URL"),
        *("INLINE_ROTATION_LIMIT", "RECOVERY_SCHEDULE_EXPRESSION", "JOURNAL_MAC_KEY_ID"),
        *("SANDBOX_KEEPER_HOST", "AWS_LAMBDA_FUNCTION_NAME", "AWS_SAM_LOCAL", "KEEPER_REGION", "BIND_CALLER_ARNS"),
        *("PACING_TABLE_NAME", "KEEPER_BURST_LIMIT", "KEEPER_QUIET_SECONDS", "KEEPER_REQUESTS_PER_MINUTE"),
        "KEEPER_RATE_WINDOW_SECONDS",
        *("KEEPER_PACING_MAX_WAIT", "SCHEDULE_EXPRESSION", "KEEPER_PACING", "KSM_SKIP_VERIFY"),
    ):
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    yield
    _clear_caches()


def _clear_caches() -> None:
    import sys

    from keeper_iam_rotator import aws, iam, idempotency, keeper

    if "app" in sys.modules:  # the handler's warm clients (imported by the first test that invokes it)
        sys.modules["app"].CLIENTS.clear()
    for cached in (keeper.vault_for, idempotency._store):
        cached.cache_clear()
    aws.clear_ksm_config_cache()
    iam._directory_pages.clear()  # what a warm container learnt of each account's directory size


@dataclass
class LambdaContext:
    function_name: str = "keeper-iam-rotator"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:keeper-iam-rotator"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 300_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Stack:
    """IAM (moto) + Keeper (emulator) + the function's own resources, with helpers to read the truth back."""

    keeper: Any
    iam: Any = field(default_factory=lambda: boto3.client("iam"))
    remaining_ms: int = 300_000  # what the fake Lambda context reports; it sizes the journal lease

    def add_user(self, name: str, password: str | None = INITIAL_PASSWORD, path: str = "/") -> str:
        arn = self.iam.create_user(UserName=name, Path=path, Tags=[SCOPE_TAG])["User"]["Arn"]
        if password is not None:
            self.iam.create_login_profile(UserName=name, Password=password)
        return arn

    def add_record(
        self,
        login: str | None,
        password: str = INITIAL_PASSWORD,
        dn: str = "",
        record_type: str = "pamUser",
        folder: str | None = None,
        title: str | None = None,
        uid: str | None = None,
    ) -> str:
        fields = [
            {"type": "login", "value": [login] if login else []},
            {"type": "password", "value": [password] if password else []},
            {"type": "text", "label": "distinguishedName", "value": [dn] if dn else []},
        ]
        return self.keeper.vault.add_record(
            uid=uid, type=record_type, title=title or f"IAM {login}", fields=fields, custom=[], folder=folder
        )

    def add_pair(self, name: str, bound: bool = True, **record: Any) -> str:
        """An IAM user with a console password and the pamUser record that holds it, bound to the user by its ARN
        (the steady state) unless `bound=False` (only a login: the record's first explicit rotation binds it)."""
        arn = self.add_user(name)
        return self.add_record(name, dn=arn if bound else "", **record)

    def iam_password(self, name: str) -> str | None:
        return iam_backends[ACCOUNT]["global"].get_user(name).password

    def iam_reset_required(self, name: str) -> Any:
        return iam_backends[ACCOUNT]["global"].get_user(name).password_reset_required

    def keeper_record(self, uid: str) -> dict[str, Any]:
        return self.keeper.vault.committed(uid)

    def keeper_password(self, uid: str) -> str | None:
        return field_value(self.keeper_record(uid), "password")

    def edit_record(self, uid: str, edit: Callable[[dict[str, Any]], None]) -> None:
        """Change a record as a Keeper user would: a committed edit, a new revision."""
        data = self.keeper_record(uid)
        edit(data)
        self.keeper.vault.update(uid, data, self.keeper.vault.revision(uid), transactional=False)

    def set_password_policy(self, **policy: Any) -> None:
        self.iam.update_account_password_policy(**policy)

    def invoke(self, event: dict[str, Any], **context: Any) -> dict[str, Any]:
        from app import lambda_handler

        context.setdefault("remaining_ms", self.remaining_ms)
        return lambda_handler(event, LambdaContext(**context))

    def rotate(self, *uids: str, dry_run: bool = False, bind: bool = False) -> list[dict[str, Any]]:
        """A direct invoke naming the records; `bind` asks to bind records that have only a login."""
        return self.invoke({"records": list(uids), "dryRun": dry_run} | ({"bind": True} if bind else {}))["results"]

    def journal_items(self) -> list[dict[str, Any]]:
        return boto3.client("dynamodb").scan(TableName=JOURNAL_TABLE)["Items"]

    def journal_passwords(self) -> list[str]:
        """Every password the journal's open entries hold (decrypted as the function would)."""
        journal = Journal(boto3.client("dynamodb"), boto3.client("kms"), JOURNAL_TABLE, JOURNAL_KEY, JOURNAL_MAC_KEY)
        return [p.reveal() for entry in journal.entries() if entry.sealed for p in journal.passwords(entry)]


def age_rotation(stack: Stack, uid: str, days: float) -> None:
    """Move the record's last successful rotation `days` further into the past (what time would do): when it
    closed and when IAM took its password (signed again: the journal's items carry a MAC)."""
    aged = age_rotations(boto3.client("dynamodb"), boto3.client("kms"), JOURNAL_TABLE, JOURNAL_MAC_KEY, days, uid)
    assert aged == 1


def custom_value(record: dict[str, Any], label: str) -> str | None:
    for item in record.get("custom") or []:
        if item.get("label") == label:
            return (item.get("value") or [None])[0]
    return None


@pytest.fixture
def keeper(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from ksm_emulator import EmulatorServer

    with EmulatorServer() as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
        monkeypatch.setenv("SANDBOX_KEEPER_HOST", server.host)  # the one Keeper besides Keeper's own it may talk to
        yield server


@pytest.fixture
def stack(keeper: Any) -> Iterator[Stack]:
    with mock_aws():
        create_function_resources(boto3.client, keeper.client_config())
        yield Stack(keeper=keeper)


@pytest.fixture
def short_lease(stack, monkeypatch):
    """A dead run's lease expires at once, so the very next run may recover it."""
    monkeypatch.setenv("JOURNAL_LEASE_MARGIN_SECONDS", "0")
    stack.remaining_ms = 0


@pytest.fixture
def patches():
    """Fault patches, undone by `disarm` while the test's environment stays."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture
def function_log() -> Iterator[io.StringIO]:
    """Everything the function's Powertools Logger writes during the test (its handler keeps the stream it found
    at import, which capsys/capfd do not capture)."""
    from app import logger

    handler = logger.logger_handler
    stream, handler.stream = handler.stream, io.StringIO()
    yield handler.stream
    handler.stream = stream


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print every fault-matrix cell (case -> what the faulted run reported -> state after the recovery run)."""
    from matrix import OUTCOMES

    if not OUTCOMES:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"fault matrix: {len(OUTCOMES)} cells, 0 lost passwords unless a test above failed")
    width = max(len(case) for case, _, _ in OUTCOMES)
    first_width = max(len(first) for _, first, _ in OUTCOMES)
    write(f"{'case':<{width}}  {'faulted run':<{first_width}}  after recovery run")
    for case, first, after in sorted(OUTCOMES):
        write(f"{case:<{width}}  {first:<{first_width}}  {after}")
