"""`check`: a preflight that changes nothing. Every check is one line: PASS, WARN, SKIP or FAIL with a detail.

The IAM checks reuse the rotation's own steps (resolve the user, require a login profile) so the preflight refuses
exactly what a rotation would refuse, with the same words.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from keeper_iam_rotator import due, service
from keeper_iam_rotator.accounts import account_of, for_settings
from keeper_iam_rotator.binding import Vouched, resolve_target
from keeper_iam_rotator.iam import IamGateway, IamUser, describe, error_code
from keeper_iam_rotator.journal import Journal, JournalError
from keeper_iam_rotator.keeper import KeeperFailure, KeeperVault, PamUser
from keeper_iam_rotator.passwords import IAM_MAX_LENGTH, PasswordPolicy, generate_password
from keeper_iam_rotator.results import Code, RotationStop
from keeper_iam_rotator.rotation import require_console_access

from .errors import CliError
from .resolve import Target, aws_error
from .rotate import unseen_folders, unseen_folders_message

PASS, WARN, SKIP, FAIL = "PASS", "WARN", "SKIP", "FAIL"
NAMED, IAM, NONE = "named", "iam", "none"  # how a key policy grants an action (key_policy_grant)
HOW = "rotating it by --record binds it"
AWS_ERRORS = (ClientError, BotoCoreError)


def permission_groups(
    user_arns: list[str],
    account: str,
    table_arn: str | None,
    key_arn: str | None,
    secret_arn: str | None,
    idempotency_arn: str | None = None,
) -> list[tuple[list[str], list[str]]]:
    """(actions, resources) the function's role needs, on the resources this deployment uses."""
    users = user_arns or [f"arn:aws:iam::{account}:user/*"]
    groups = [
        (["iam:GetUser", "iam:GetLoginProfile", "iam:UpdateLoginProfile"], users),
        (["iam:GetAccountPasswordPolicy", "iam:ListUsers"], ["*"]),
    ]
    if table_arn:
        groups.append((["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Scan"], [table_arn]))
    if idempotency_arn:
        actions = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
        groups.append((actions, [idempotency_arn]))
    if key_arn:
        groups.append((["kms:GenerateDataKey", "kms:Decrypt"], [key_arn]))
    if secret_arn:
        groups.append((["secretsmanager:GetSecretValue"], [secret_arn]))
    return groups


def principal_of(caller_arn: str) -> str | None:
    """The IAM entity SimulatePrincipalPolicy takes for a caller: an assumed role's role, a user as is."""
    parts = caller_arn.split(":")
    if len(parts) < 6:
        return None
    account, resource = parts[4], parts[5]
    if resource.startswith("assumed-role/"):
        return f"arn:aws:iam::{account}:role/{resource.split('/')[1]}"
    if resource.startswith("user/") or resource.startswith("role/"):
        return caller_arn
    return None


def policy_detail(policy: PasswordPolicy, length: int) -> str:
    if not policy.custom:
        return f"no custom policy (AWS default: 8+ chars, 3 of 4 classes); generated passwords have {length} chars"
    needs = [
        name
        for name, flag in (
            ("uppercase", policy.require_uppercase),
            ("lowercase", policy.require_lowercase),
            ("numbers", policy.require_numbers),
            ("symbols", policy.require_symbols),
        )
        if flag
    ]
    required = f", requires {', '.join(needs)}" if needs else ""
    return f"custom policy: min {policy.minimum_length}{required}; generated passwords have {length} chars, all classes"


@dataclass
class Preflight:
    target: Target
    uids: tuple[str, ...]
    folders: tuple[str, ...]
    user_path: str | None
    required_tags: dict[str, str]
    role_arn: str | None
    checks: list[dict[str, str]] = field(default_factory=list)
    last_rotated: dict[str, float] = field(default_factory=dict)  # record uid -> last rotation (the journal's)

    def add(self, check: str, result: str, detail: str) -> None:
        self.checks.append({"check": check, "result": result, "detail": detail})

    def run(self) -> list[dict[str, str]]:
        self.iam = IamGateway(service.client("iam"), service.client("iam", service.WRITES), service.client("sts"))
        caller = self._identity()
        users = self._records(self._config())
        if caller:
            self._member_accounts()
        user_arns = self._iam_users(users) if caller else []
        if caller:
            self._password_policy()
        table_arn, key_arn = self._journal()
        idempotency_arn = self._idempotency_table()
        if caller:
            self._permissions(caller, user_arns, table_arn, key_arn, idempotency_arn)
        return self.checks

    def _identity(self) -> str | None:
        try:
            caller = self.iam._caller
        except AWS_ERRORS as error:
            self.add("aws-credentials", FAIL, aws_error("STS GetCallerIdentity", error))
            return None
        self.add("aws-credentials", PASS, f"{caller['Arn']} (account {caller['Account']})")
        return str(caller["Arn"])

    def _config(self) -> str | None:
        source = self.target.config
        try:
            text = self.target.config_text
        except CliError as error:
            self.add("ksm-config", FAIL, error.message)
            return None
        self.add("ksm-config", PASS, f"read from {source.label}; the SDK parses it as a bound client config")
        return text

    def _records(self, config: str | None) -> list[PamUser]:
        if config is None:
            self.add("keeper-records", SKIP, "no usable KSM config")
            return []
        settings = self.target.settings(folder_uids=self.folders)
        try:
            vault = KeeperVault(config, timeout=settings.keeper_timeout)
            missing_folders = [] if self.uids else unseen_folders(vault, self.folders)
            if missing_folders:
                self.add("keeper-records", FAIL, unseen_folders_message(missing_folders))
                return []
            if self.uids:
                found = vault.fetch(self.uids)
                seen = list(found.values())
            else:
                seen = vault.fetch_all(settings.folder_uids)
        except (KeeperFailure, CliError) as error:
            self.add("keeper-records", FAIL, f"the KSM application cannot read records: {error}")
            return []
        pam_users = [u for u in seen if u.type == "pamUser"]
        scope = f"in folder(s) {', '.join(settings.folder_uids)}" if settings.folder_uids else "shared with it"
        if self.uids:
            missing = [uid for uid in self.uids if uid not in found]
            self.add(
                "keeper-records",
                FAIL if missing else PASS,
                f"not shared with the KSM application (or no such record): {', '.join(missing)}"
                if missing
                else f"the KSM application sees all {len(self.uids)} requested record(s)",
            )
            return [found[uid] for uid in self.uids if uid in found]
        self.add(
            "keeper-records",
            PASS if pam_users else WARN,
            f"{len(pam_users)} pamUser record(s) {scope}" if pam_users else f"no pamUser records {scope}",
        )
        return pam_users

    def _iam_users(self, users: list[PamUser]) -> list[str]:
        folders = self.target.settings(folder_uids=self.folders).folder_uids
        arns = []
        for user in users:
            name = f"record {user.uid}"
            try:  # what an explicit request would do; the schedule adds the binding rule reported below
                target = resolve_target(user, self.iam, Vouched(explicit=True), self._gateway_for(user))
                require_console_access(target, self.accounts.gateway(account_of(target.arn), user.uid))
            except RotationStop as stop:
                not_ours = stop.code in {Code.NOT_IAM_RECORD, Code.NOT_PAM_USER}
                self.add(name, SKIP if not_ours else FAIL, f"{stop.code}: {stop.message}")
                continue
            arns.append(target.arn)
            problems = self._scope_problems(target)
            if problems:
                self.add(name, FAIL, f"IAM user {target.name}: {'; '.join(problems)}")
            elif user.distinguished_name or Vouched(folder_uids=folders).covers(user):
                how = (
                    "bound" if user.distinguished_name else "unbound, in a folder declared AWS-only (binds on rotation)"
                )
                self.add(name, PASS, f"{how} → IAM user {target.arn}, console password set; {self._due(user)}")
            else:
                self.add(
                    name, WARN, f"unbound → IAM user {target.arn}: the schedule skips it ({Code.NOT_BOUND}); {HOW}"
                )
        return arns

    # -- fleets: member accounts (TARGET_ACCOUNT_IDS) and rotation when due ----------------------------------------
    def _member_accounts(self) -> None:
        """Each member account's role can be assumed and lets the rotator read what rotation reads; the writes
        (UpdateLoginProfile) are not tried. Records are then checked with the same per-account gateways."""
        settings = self.target.settings()
        self.accounts = for_settings(self.iam, service.client("sts"), settings, service.READS, service.WRITES)
        for account in settings.target_account_ids:
            check, role = f"account {account}", self.accounts.role_arn(account)
            try:
                self.accounts.gateway(account, "preflight-check").password_policy  # noqa: B018 - reads it
            except RotationStop as stop:
                self.add(check, FAIL, f"{stop.code}: {stop.message}")
            except AWS_ERRORS as error:
                self.add(check, FAIL, f"assumed {role}, but GetAccountPasswordPolicy: {describe(error)}")
            else:
                self.add(check, PASS, f"assumed {role}; it reads the password policy (records below use it)")
        journal = Journal(service.client("dynamodb"), service.client("kms"), self.target.journal_table, "")
        try:
            self.last_rotated = due.last_rotations(journal.entries())
        except JournalError:
            self.last_rotated = {}  # the journal check below reports why

    def _gateway_for(self, user: PamUser) -> Any:
        return lambda account: self.accounts.gateway(account, user.uid)

    def _due(self, user: PamUser) -> str:
        """Whether the scheduled run would rotate the record now (it always rotates on request)."""
        default = self.target.settings().rotation_period_days
        days = due.period_days(user, default)
        rotated_at = self.last_rotated.get(user.uid)
        if rotated_at is None:
            return f"due (never rotated by this rotator; period {days} d)"
        when = datetime.fromtimestamp(rotated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        state = "due" if due.is_due(user, self.last_rotated, default, time.time()) else "not due"
        return f"{state} (last rotated {when}; period {days} d)"

    def _scope_problems(self, target: IamUser) -> list[str]:
        problems = []
        if self.user_path is not None:
            path = target.arn.split(":user", 1)[-1].rsplit("/", 1)[0] + "/"
            if not path.startswith(self.user_path):
                problems.append(f"path {path} is outside {self.user_path}")
        if self.required_tags:
            try:
                pages = service.client("iam").get_paginator("list_user_tags").paginate(UserName=target.name)
                tags = {t["Key"]: t["Value"] for page in pages for t in page.get("Tags", [])}
            except AWS_ERRORS as error:
                return [*problems, aws_error("ListUserTags", error)]
            for key, value in self.required_tags.items():
                if tags.get(key) != value:
                    has = f" (has {key}={tags[key]})" if key in tags else ""
                    problems.append(f"tag {key}={value} missing{has}")
        return problems

    def _password_policy(self) -> None:
        length = self.target.settings().password_length
        try:
            policy = self.iam.password_policy
        except AWS_ERRORS as error:
            self.add("password-policy", FAIL, aws_error("IAM GetAccountPasswordPolicy", error))
            return
        if policy.minimum_length > IAM_MAX_LENGTH:
            self.add("password-policy", FAIL, f"minimum length {policy.minimum_length} exceeds IAM's 128")
            return
        size = len(generate_password(policy, length).reveal())
        self.add("password-policy", PASS, policy_detail(policy, size))

    def _table(self, check: str, table: str, key: str) -> str | None:
        """DescribeTable: the table exists and has the hash key the function writes; its ARN for the simulation."""
        try:
            described = service.client("dynamodb").describe_table(TableName=table)["Table"]
        except AWS_ERRORS as error:
            self.add(check, FAIL, aws_error(f"DynamoDB DescribeTable {table}", error))
            return None
        keys = [(k["AttributeName"], k["KeyType"]) for k in described.get("KeySchema", [])]
        if keys != [(key, "HASH")]:
            self.add(check, FAIL, f"{table} is keyed {keys}, not {key} (HASH)")
        else:
            self.add(check, PASS, f"{table} is {described.get('TableStatus')}, keyed {key}")
        return described.get("TableArn")

    def _journal(self) -> tuple[str | None, str | None]:
        table_arn = self._table("journal-table", self.target.journal_table, "userArn")
        key_arn = None
        key = self.target.journal_key
        try:
            meta = service.client("kms").describe_key(KeyId=key)["KeyMetadata"]
        except AWS_ERRORS as error:
            self.add("journal-key", FAIL, aws_error(f"KMS DescribeKey {key}", error))
        else:
            key_arn = meta.get("Arn")
            state = meta.get("KeyState", "Enabled" if meta.get("Enabled") else "Disabled")
            usable = state == "Enabled" and meta.get("KeyUsage", "ENCRYPT_DECRYPT") == "ENCRYPT_DECRYPT"
            self.add("journal-key", PASS if usable else FAIL, f"{key_arn} is {state}")
        return table_arn, key_arn

    def _idempotency_table(self) -> str | None:
        table = self.target.idempotency_table
        if not table:
            self.add("idempotency-table", SKIP, "not checked: give --idempotency-table NAME or --stack NAME")
            return None
        return self._table("idempotency-table", table, "id")

    def _permissions(
        self,
        caller: str,
        user_arns: list[str],
        table_arn: str | None,
        key_arn: str | None,
        idempotency_arn: str | None,
    ) -> None:
        principal = self.role_arn or principal_of(caller)
        if principal is None:
            self.add(
                "permissions", SKIP, f"cannot simulate {caller}; pass --stack NAME or --role-arn (the function's role)"
            )
            return
        account = self.iam.account_id
        secret_arn = self.target.config.arn
        key_policy = self._key_policy(key_arn)
        decisions: dict[str, list[str]] = {}
        granted_by: dict[str, str] = {}
        groups = permission_groups(user_arns, account, table_arn, key_arn, secret_arn, idempotency_arn)
        for group_actions, resources in groups:
            actions = group_actions
            if resources == [key_arn]:
                grants = {action: key_policy_grant(key_policy, principal, action, account) for action in actions}
                actions = [action for action, grant in grants.items() if grant == IAM]
                for action in set(grants) - set(actions):
                    granted_by[action] = "the key policy"
                    decisions[action] = (
                        [] if grants[action] == NAMED else [f"not granted by the key policy of {key_arn}"]
                    )
            if not actions:
                continue
            try:
                answer = self._simulate(principal, actions, resources)
            except Exception as error:  # denied, or not implemented (moto raises NotImplementedError)
                code = error_code(error) if isinstance(error, ClientError) else type(error).__name__
                self.add("permissions", SKIP, f"iam:SimulatePrincipalPolicy unavailable ({code}); not checked")
                return
            for result in answer:
                action = result["EvalActionName"]
                for resource, decision in _decisions(result):
                    bucket = decisions.setdefault(action, [])
                    if decision != "allowed":
                        bucket.append(f"{decision} on {resource}")
        for action, denials in decisions.items():
            if denials:
                self.add(action, FAIL, f"{principal}: {'; '.join(denials)}")
            else:
                self.add(action, PASS, f"allowed for {principal} ({granted_by.get(action, 'identity policies')})")

    def _key_policy(self, key_arn: str | None) -> dict[str, Any] | None:
        """The journal key's policy; None when it cannot be read (then only identity policies are simulated)."""
        if not key_arn:
            return None
        try:
            policy = service.client("kms").get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"]
            return dict(json.loads(policy))
        except (*AWS_ERRORS, ValueError):
            return None

    def _simulate(self, principal: str, actions: list[str], resources: list[str]) -> list[dict[str, Any]]:
        pages = (
            service.client("iam")
            .get_paginator("simulate_principal_policy")
            .paginate(PolicySourceArn=principal, ActionNames=actions, ResourceArns=resources)
        )
        return [result for page in pages for result in page.get("EvaluationResults", [])]


def key_policy_grant(policy: dict[str, Any] | None, principal: str, action: str, account: str) -> str:
    """How a KMS key policy lets `principal` use `action`: NAMED (an Allow names the principal), IAM (it leaves the
    decision to IAM policies: an Allow for the account root, or no readable policy), or NONE. Conditions and Deny
    statements are not evaluated. The template grants the journal key to the function's role in the key policy only,
    so simulating identity policies alone would report its kms actions as denied."""
    if policy is None:
        return IAM
    grant = NONE
    for statement in _as_list(policy.get("Statement")):
        if statement.get("Effect") != "Allow" or not any(
            fnmatch.fnmatchcase(action.lower(), str(pattern).lower()) for pattern in _as_list(statement.get("Action"))
        ):
            continue
        principals = statement.get("Principal")
        named = _as_list(principals.get("AWS")) if isinstance(principals, dict) else _as_list(principals)
        if principal in named:
            return NAMED
        if any(
            p in (account, f"arn:aws:iam::{account}:root", "*") or p.endswith(f":iam::{account}:root") for p in named
        ):
            grant = IAM
    return grant


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _decisions(result: dict[str, Any]) -> list[tuple[str, str]]:
    specific = result.get("ResourceSpecificResults") or []
    if specific:
        return [(r.get("EvalResourceName", "*"), r.get("EvalResourceDecision", "implicitDeny")) for r in specific]
    return [(result.get("EvalResourceName", "*"), result.get("EvalDecision", "implicitDeny"))]
