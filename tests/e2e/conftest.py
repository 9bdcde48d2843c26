"""End-to-end fixtures: one sandbox (moto server + KSM emulator on 127.0.0.1) for the whole session, emptied and
re-created before every test; the handler always runs in its own process, as the function role template.yaml
defines, with moto authorising each of its requests against that role's policies.

Every test appends a row to OUTCOMES; the table is printed at the end of the run (pytest_terminal_summary).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest

from rotator_sandbox import Sandbox, SeededUser
from rotator_sandbox.queue import QUEUE_NAME
from rotator_sandbox.stack import (
    CONFIG_SECRET,
    IDEMPOTENCY_TABLE,
    JOURNAL_KEY,
    JOURNAL_MAC_KEY,
    JOURNAL_TABLE,
    PACING_TABLE,
    Invocation,
    field_value,
)

from template_tools import FUNCTION_ROLE, TranslatedStack, function_role_policies, translate

LEASE_ENV = {"SANDBOX_REMAINING_MS": "500", "JOURNAL_LEASE_MARGIN_SECONDS": "0"}  # a lease of 0.5 s

OUTCOMES: list[tuple[str, str, str]] = []  # (case, policy, outcome)


@pytest.fixture(scope="session")
def sandbox_session() -> Iterator[Sandbox]:
    with Sandbox(users=0, user_prefix="e2e-user") as sb:
        yield sb


@pytest.fixture
def sb(sandbox_session: Sandbox) -> Sandbox:
    sandbox_session.pending_policy = "replace"
    sandbox_session.reset(users=0)
    run_handler_as_the_function_role(sandbox_session)
    return sandbox_session


def run_handler_as_the_function_role(sb: Sandbox, parameters: dict[str, str] | None = None) -> None:
    """Create template.yaml's function role in moto, with its policies resolved to the sandbox's resources, and give
    the handler that role's credentials. moto then checks every action the handler calls against the role's
    policies (it passes "*" as the resource for these services, so it checks actions; the resources are checked
    in test_least_privilege.py). Called again with other template parameters, it replaces the role's policies."""
    stack = sandbox_template(sb, parameters)
    role_arn = stack.get_att(FUNCTION_ROLE, "Arn")
    role_name = role_arn.rsplit("/", 1)[1]
    iam = sb.aws("iam")
    trust = stack.resource(FUNCTION_ROLE)["Properties"]["AssumeRolePolicyDocument"]
    with suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
    for name, document in function_role_policies(stack).items():
        iam.put_role_policy(RoleName=role_name, PolicyName=name, PolicyDocument=json.dumps(actions_only(document)))
    credentials = sb.aws("sts").assume_role(RoleArn=role_arn, RoleSessionName="handler")["Credentials"]
    sb.handler_credentials = {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


def sandbox_template(sb: Sandbox, parameters: dict[str, str] | None = None) -> TranslatedStack:
    """template.yaml translated with the sandbox's resources standing in for the stack's."""
    aws = sb.aws
    account = aws("sts").get_caller_identity()["Account"]
    physical = {
        f"{FUNCTION_ROLE}.Arn": f"arn:aws:iam::{account}:role/keeper-iam-rotator-{FUNCTION_ROLE}",
        "AlarmTopic": f"arn:aws:sns:us-east-1:{account}:keeper-iam-rotator-alarms",  # the sandbox has neither
        "AlarmTopicKey.Arn": f"arn:aws:kms:us-east-1:{account}:key/00000000-0000-0000-0000-000000000000",
        "JournalTable.Arn": aws("dynamodb").describe_table(TableName=JOURNAL_TABLE)["Table"]["TableArn"],
        "IdempotencyTable.Arn": aws("dynamodb").describe_table(TableName=IDEMPOTENCY_TABLE)["Table"]["TableArn"],
        "PacingTable.Arn": aws("dynamodb").describe_table(TableName=PACING_TABLE)["Table"]["TableArn"],
        "JournalKey.Arn": aws("kms").describe_key(KeyId=JOURNAL_KEY)["KeyMetadata"]["Arn"],
        "JournalMacKey.Arn": aws("kms").describe_key(KeyId=JOURNAL_MAC_KEY)["KeyMetadata"]["Arn"],
        "RotationQueue.Arn": f"arn:aws:sqs:us-east-1:{account}:{QUEUE_NAME}",
    }
    secret_arn = aws("secretsmanager").describe_secret(SecretId=CONFIG_SECRET)["ARN"]
    return translate({"KsmConfigSecretArn": secret_arn, **(parameters or {})}, physical)


def actions_only(document: dict[str, Any]) -> dict[str, Any]:
    """The policy as moto can check it: moto authorises these services' requests against Resource "*", so a statement
    scoped to an ARN would never match there; resources are checked by test_least_privilege.py instead."""
    statements = document["Statement"] if isinstance(document["Statement"], list) else [document["Statement"]]
    return {
        "Version": "2012-10-17",
        "Statement": [{**statement, "Action": _as_moto_checks(statement), "Resource": "*"} for statement in statements],
    }


# AWS authorises SendMessageBatch by sqs:SendMessage (there is no sqs:SendMessageBatch permission); moto checks the
# operation's own name.
MOTO_ACTION_NAMES = {"sqs:SendMessage": "sqs:SendMessageBatch"}


def _as_moto_checks(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    return actions + [MOTO_ACTION_NAMES[action] for action in actions if action in MOTO_ACTION_NAMES]


def record_outcome(case: str, policy: str, outcome: str) -> None:
    OUTCOMES.append((case, policy, outcome))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not OUTCOMES:
        return
    width_case = max(len(c) for c, _, _ in OUTCOMES)
    width_policy = max(len("policy"), *(len(p) for _, p, _ in OUTCOMES))
    terminalreporter.section("e2e outcomes (crash matrix and fault cases)")
    terminalreporter.write_line(f"{'case'.ljust(width_case)}  {'policy'.ljust(width_policy)}  outcome")
    for case, policy, outcome in OUTCOMES:
        terminalreporter.write_line(f"{case.ljust(width_case)}  {policy.ljust(width_policy)}  {outcome}")


# -- helpers ------------------------------------------------------------------------------------------------------


def statuses(run: Invocation) -> str:
    parts = []
    for r in run.results:
        text = r["status"]
        if "error" in r:
            text += f"({r['error']['code']})"
        if r.get("recovered"):
            text += "+recovered"
        parts.append(text)
    return ",".join(parts) or f"no results (exit {run.exit_code})"


def held_passwords(sb: Sandbox, user: SeededUser) -> set[str]:
    """Every password IAM, Keeper (committed and staged) and the journal hold for this user right now."""
    found = {
        sb.iam_password(user.name),
        sb.keeper_password(user.uid),
        sb.keeper_staged_password(user.uid),
        *sb.journal_passwords(),
    }
    return {p for p in found if p}


def journal_state(sb: Sandbox, user: SeededUser) -> str:
    item = sb.journal_items().get(user.arn)
    return item["state"]["S"] if item else "none"


def wait_for_lease(sb: Sandbox, user: SeededUser, timeout: float = 10.0) -> None:
    """Sleep until the user's journal lease (if any) has run out."""
    item = sb.journal_items().get(user.arn)
    if not item:
        return
    until = float(item["leaseUntil"]["N"])
    delay = until - time.time() + 0.05
    assert delay < timeout, f"lease runs {delay:.1f}s more: the crash run did not use the short lease"
    if delay > 0:
        time.sleep(delay)


def assert_converged(sb: Sandbox, user: SeededUser) -> None:
    """The end state every run must leave: IAM = Keeper's committed password, a valid record, nothing staged, the
    journal entry closed."""
    iam, keeper = sb.iam_password(user.name), sb.keeper_password(user.uid)
    assert iam is not None
    assert iam == keeper, "IAM's password is not Keeper's committed password"
    record = sb.keeper_record(user.uid)
    assert record is not None
    assert record["type"] == "pamUser"
    assert field_value(record, "login") == user.name
    assert sb.keeper.vault.staged(user.uid) is None, "a staged update was left behind"
    assert journal_state(sb, user) in ("closed", "none"), "the journal entry is still open"


def recover(sb: Sandbox, user: SeededUser, faulted: Invocation, extra_env: dict[str, str] | None = None) -> Invocation:
    """After a faulted run: wait out its lease, run the record again, and require that run to rotate and converge
    with no password (any the test saw) in either run's output."""
    seen = held_passwords(sb, user) | {user.initial_password}
    wait_for_lease(sb, user)
    recovery = sb.invoke({"records": [user.uid]}, {**LEASE_ENV, **(extra_env or {})})
    assert [r["status"] for r in recovery.results] == ["rotated"], recovery.stdout
    assert_converged(sb, user)
    assert_no_leak(seen | held_passwords(sb, user), faulted, recovery)
    return recovery


def assert_no_leak(passwords: set[str], *runs: Invocation) -> None:
    for run in runs:
        for stream, text in (("stdout", run.stdout), ("stderr", run.stderr)):
            for password in passwords:
                assert password not in text, f"a password appeared on the handler's {stream}"
