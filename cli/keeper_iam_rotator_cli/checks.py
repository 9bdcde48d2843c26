"""`check`: a preflight that changes nothing. Every check is one line: PASS, WARN, SKIP or FAIL with a detail.

The IAM checks reuse the rotation's own steps (resolve the user, require a login profile) so the preflight refuses
exactly what a rotation would refuse, with the same words.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from keeper_iam_rotator import due
from keeper_iam_rotator.accounts import Accounts
from keeper_iam_rotator.binding import Vouched, bind
from keeper_iam_rotator.errors import AWS_ERRORS, JournalUnavailableError, KeeperCallError, RotationHaltedError
from keeper_iam_rotator.iam import IamGateway, IamUser
from keeper_iam_rotator.journal import Journal
from keeper_iam_rotator.keeper import KeeperVault, PamUser, RecordType
from keeper_iam_rotator.passwords import IAM_MAX_LENGTH, PasswordPolicy, generate_password
from keeper_iam_rotator.results import Code
from keeper_iam_rotator.rotation import require_console_access

from .aws import aws_error
from .devices import device_checks
from .drift_view import DriftView
from .errors import CliError
from .permissions import PermissionCheck, Resources, principal_of
from .resolve import Target
from .rotate import unseen_folders, unseen_folders_message
from .steering import config_secret_policy, keeper_host, user_scope
from .verdicts import Check, Verdict

HOW: Final = "`rotate --record UID --bind` binds it"


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
    checks: list[Check] = field(default_factory=list)
    # record uid -> last rotation (the journal's); None: the journal cannot be read
    last_rotated: dict[str, float] | None = field(default_factory=dict)

    def add(self, check: str, result: Verdict, detail: str) -> None:
        self.checks.append(Check(check, result, detail))

    def run(self) -> list[Check]:
        clients = self.target.clients
        self.iam = IamGateway(clients("iam"), clients("iam", writes=True), clients("sts"))
        caller = self._identity()
        self.checks.append(user_scope(self.target.required_user_tag))
        config = self._config()
        users = self._records(config)
        if config is not None and not self.uids:  # the whole fleet: its devices and their capacity
            self.checks += device_checks(self.target, users, self.target.settings(folder_uids=self.folders))
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
            caller = self.iam.identity
        except AWS_ERRORS as error:
            self.add("aws-credentials", Verdict.FAIL, aws_error("STS GetCallerIdentity", error))
            return None
        self.add("aws-credentials", Verdict.PASS, f"{caller['Arn']} (account {caller['Account']})")
        return str(caller["Arn"])

    def _config(self) -> str | None:
        source = self.target.config
        try:
            text = self.target.config_text
        except CliError as error:
            self.add("ksm-config", Verdict.FAIL, error.message)
            return None
        self.add("ksm-config", Verdict.PASS, f"read from {source.label}; the SDK parses it as a bound client config")
        if source.secret_id:
            self.checks.append(config_secret_policy(self.target.clients("secretsmanager"), source.secret_id))
        host = keeper_host(text, self.target.keeper_region)
        self.checks.append(host)
        return text if host.result is Verdict.PASS else None  # never read records from a Keeper the function refuses

    def _records(self, config: str | None) -> list[PamUser]:
        if config is None:
            self.add("keeper-records", Verdict.SKIP, "no usable KSM config")
            return []
        settings = self.target.settings(folder_uids=self.folders)
        try:
            vault = KeeperVault(config, timeout=settings.keeper_timeout)
            missing_folders = [] if self.uids else unseen_folders(vault, self.folders)
            if missing_folders:
                self.add("keeper-records", Verdict.FAIL, unseen_folders_message(missing_folders))
                return []
            if self.uids:  # with their links: KeeperPAM's own rotation shows there (keeperpam.py)
                found = vault.fetch(self.uids, links=True)
                seen = list(found.values())
            else:
                seen = vault.fetch_all(settings.folder_uids, links=True)
        except (KeeperCallError, CliError) as error:
            self.add("keeper-records", Verdict.FAIL, f"the KSM application cannot read records: {error}")
            return []
        pam_users = [u for u in seen if u.type == RecordType.PAM_USER]
        scope = f"in folder(s) {', '.join(settings.folder_uids)}" if settings.folder_uids else "shared with it"
        if self.uids:
            missing = [uid for uid in self.uids if uid not in found]
            self.add(
                "keeper-records",
                Verdict.FAIL if missing else Verdict.PASS,
                f"not shared with the KSM application (or no such record): {', '.join(missing)}"
                if missing
                else f"the KSM application sees all {len(self.uids)} requested record(s)",
            )
            return [found[uid] for uid in self.uids if uid in found]
        self.add(
            "keeper-records",
            Verdict.PASS if pam_users else Verdict.WARN,
            f"{len(pam_users)} pamUser record(s) {scope}" if pam_users else f"no pamUser records {scope}",
        )
        return pam_users

    def _iam_users(self, users: list[PamUser]) -> list[str]:
        folders = self.target.settings(folder_uids=self.folders).folder_uids
        arns = []
        for user in users:
            name = f"record {user.uid}"
            try:  # what an explicit request would do; the schedule adds the binding rule reported below
                claim = bind(user, self.accounts, Vouched(explicit=True))
                require_console_access(claim)
            except RotationHaltedError as halt:
                not_ours = halt.code in {Code.NOT_IAM_RECORD, Code.NOT_PAM_USER, Code.MANAGED_BY_KEEPERPAM}
                self.add(name, Verdict.SKIP if not_ours else Verdict.FAIL, f"{halt.code}: {halt.message}")
                continue
            target = claim.target
            arns.append(target.arn)
            problems = self._scope_problems(target)
            if problems:
                self.add(name, Verdict.FAIL, f"IAM user {target.name}: {'; '.join(problems)}")
            elif user.distinguished_name:
                verdict, drift = self.drift.describe(claim)
                self.add(
                    name, verdict, f"bound → IAM user {target.arn}, console password set; {self._due(user)}; {drift}"
                )
            elif Vouched(explicit=False, folder_uids=folders).covers(user):
                how = "unbound, in a folder declared AWS-only (binds on rotation)"
                self.add(name, Verdict.PASS, f"{how} → IAM user {target.arn}, console password set; {self._due(user)}")
            else:
                self.add(
                    name,
                    Verdict.WARN,
                    f"unbound → IAM user {target.arn}: the schedule skips it ({Code.NOT_BOUND}); {HOW}",
                )
        return arns

    # -- fleets: member accounts (TARGET_ACCOUNT_IDS) and rotation when due ----------------------------------------
    def _member_accounts(self) -> None:
        """Each member account's role can be assumed and lets the rotator read what rotation reads; the writes
        (UpdateLoginProfile) are not tried. Records are then checked with the same per-account gateways."""
        settings = self.target.settings()
        self.accounts = Accounts.for_settings(self.iam, self.target.clients, settings)
        for account in settings.target_account_ids:
            check, role = f"account {account}", self.accounts.role_arn(account)
            try:
                self.accounts.gateway(account, "preflight-check").password_policy  # noqa: B018 - reads it
            except RotationHaltedError as halt:
                self.add(check, Verdict.FAIL, f"{halt.code}: {halt.message}")
            except AWS_ERRORS as error:
                self.add(check, Verdict.FAIL, aws_error(f"assumed {role}, but GetAccountPasswordPolicy", error))
            else:
                self.add(check, Verdict.PASS, f"assumed {role}; it reads the password policy (records below use it)")
        clients = self.target.clients
        journal = Journal(
            clients("dynamodb"), clients("kms"), self.target.journal_table, "", self.target.journal_mac_key
        )
        try:
            items = list(journal.entries())
        except JournalUnavailableError:
            self.last_rotated = None  # the journal check below reports why
            items = []
        else:
            self.last_rotated = due.last_rotations(items)
        self.drift = DriftView({item.user_arn: item for item in items})

    def _due(self, user: PamUser) -> str:
        """Whether the scheduled run would rotate the record now (it always rotates on request)."""
        default = self.target.settings().rotation_period_days
        days = due.period_days(user, default)
        if self.last_rotated is None:
            return "due: unknown, the journal cannot be read (a scheduled run now fails journal_unavailable)"
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
                pages = self.target.clients("iam").get_paginator("list_user_tags").paginate(UserName=target.name)
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
            self.add("password-policy", Verdict.FAIL, aws_error("IAM GetAccountPasswordPolicy", error))
            return
        if policy.minimum_length > IAM_MAX_LENGTH:
            self.add("password-policy", Verdict.FAIL, f"minimum length {policy.minimum_length} exceeds IAM's 128")
            return
        size = len(generate_password(policy, length).reveal())
        self.add("password-policy", Verdict.PASS, policy_detail(policy, size))

    def _table(self, check: str, table: str, key: str) -> str | None:
        """DescribeTable: the table exists and has the hash key the function writes; its ARN for the simulation."""
        try:
            described = self.target.clients("dynamodb").describe_table(TableName=table)["Table"]
        except AWS_ERRORS as error:
            self.add(check, Verdict.FAIL, aws_error(f"DynamoDB DescribeTable {table}", error))
            return None
        keys = [(k["AttributeName"], k["KeyType"]) for k in described.get("KeySchema", [])]
        if keys != [(key, "HASH")]:
            self.add(check, Verdict.FAIL, f"{table} is keyed {keys}, not {key} (HASH)")
        else:
            self.add(check, Verdict.PASS, f"{table} is {described.get('TableStatus')}, keyed {key}")
        arn: str | None = described.get("TableArn")
        return arn

    def _journal(self) -> tuple[str | None, str | None]:
        table_arn = self._table("journal-table", self.target.journal_table, "userArn")
        key_arn = None
        key = self.target.journal_key
        try:
            meta = self.target.clients("kms").describe_key(KeyId=key)["KeyMetadata"]
        except AWS_ERRORS as error:
            self.add("journal-key", Verdict.FAIL, aws_error(f"KMS DescribeKey {key}", error))
        else:
            key_arn = meta.get("Arn")
            state = meta.get("KeyState", "Enabled" if meta.get("Enabled") else "Disabled")
            usable = state == "Enabled" and meta.get("KeyUsage", "ENCRYPT_DECRYPT") == "ENCRYPT_DECRYPT"
            self.add("journal-key", Verdict.PASS if usable else Verdict.FAIL, f"{key_arn} is {state}")
        return table_arn, key_arn

    def _idempotency_table(self) -> str | None:
        table = self.target.idempotency_table
        if not table:
            self.add("idempotency-table", Verdict.SKIP, "not checked: give --idempotency-table NAME or --stack NAME")
            return None
        return self._table("idempotency-table", table, "id")

    def _permissions(
        self, caller: str, user_arns: list[str], table_arn: str | None, key_arn: str | None, idem_arn: str | None
    ) -> None:
        principal = self.role_arn or principal_of(caller)
        if principal is None:
            detail = f"cannot simulate {caller}; pass --stack NAME or --role-arn (the function's role)"
            self.add("permissions", Verdict.SKIP, detail)
            return
        secret_arn = self.target.config.arn
        res = Resources(user_arns, self.iam.account_id, table_arn, key_arn, secret_arn, idem_arn)
        self.checks += PermissionCheck(self.target.clients, principal, res).run()
