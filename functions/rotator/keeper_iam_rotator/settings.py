"""Configuration from environment variables. The Lambda requires KSM_CONFIG_SECRET_ID; the template sets the rest.
The CLI builds the same Settings from the same variables and its own options (it reads the config elsewhere).

VARIABLES is the one list of what the function reads: Settings.from_env parses it, and the README's environment
variable tables are generated from it and template.yaml (`make docs`), so a setting added here is documented there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .errors import ConfigurationError
from .pacing import Limits

ACCOUNT_ID = re.compile(r"\d{12}")
RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
Parse = Callable[[str, str], Any]  # (variable name, its stripped, non-empty value) -> the setting's value


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


def _text(name: str, raw: str) -> str:
    return raw


def _flag(name: str, raw: str) -> bool:
    return flag({name: raw}, name, False)


def _number(low: float, high: float, whole: bool = True) -> Parse:
    def parse(name: str, raw: str) -> float | int:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None
        if not low <= value <= high:
            raise ConfigurationError(f"{name} must be between {low:g} and {high:g}, not {raw}")
        return int(value) if whole else value

    return parse


def _uids(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


class DriftAction(StrEnum):
    """What the rotator does when a bound user's password was changed outside it (DRIFT_ACTION)."""

    ROTATE = "rotate"  # rotate the record at once: Keeper holds the working password again within minutes
    ALERT = "alert"  # report it (result, DriftDetected, DriftAlarm) and change nothing


def _drift_action(name: str, raw: str) -> DriftAction:
    try:
        return DriftAction(raw.lower())
    except ValueError:
        raise ConfigurationError(f"{name} must be rotate or alert, not {raw[:20]!r}") from None


def _upper(name: str, raw: str) -> str:
    return raw.upper()


def _rate_seconds(name: str, raw: str) -> int:
    """The period of an EventBridge `rate(N unit)` expression, in seconds."""
    rate = RATE.fullmatch(raw)
    if rate is None:
        raise ConfigurationError(f"{name} must be a rate expression like rate(15 minutes), not {raw[:40]!r}")
    return int(rate[1]) * UNIT_SECONDS[rate[2].removesuffix("s")]


def _schedule_seconds(name: str, raw: str) -> int:
    """A schedule's period in seconds: a rate's, or a day for a cron expression (the usual daily run)."""
    return UNIT_SECONDS["day"] if raw.startswith("cron(") else _rate_seconds(name, raw)


def _account_ids(name: str, raw: str) -> tuple[str, ...]:
    ids = _uids(name, raw)
    bad = [account for account in ids if not ACCOUNT_ID.fullmatch(account)]
    if bad:
        raise ConfigurationError(f"{name} must list 12-digit AWS account ids; {bad[0][:20]!r} is not one")
    return ids


@dataclass(frozen=True)
class Variable:
    """One environment variable: the Settings field it sets (None: read by another module or by Powertools), how
    its value is parsed, and what it means (the README's table)."""

    name: str
    field: str | None
    meaning: str
    parse: Parse = _text
    default: str = ""  # documented instead of the Settings field's default (a variable without a field, or parsed)


VARIABLES: Final = (
    Variable(
        "KSM_CONFIG_SECRET_ID",
        "ksm_config_secret_ids",
        "Secrets Manager secret(s) holding a KSM config (base64 or JSON), comma-separated: one per client device; "
        "the only variable the code requires",
        _uids,
    ),
    Variable("PACING_TABLE_NAME", "pacing_table", "the DynamoDB table pacing Keeper requests per client device"),
    Variable(
        "KEEPER_PACING",
        "keeper_pacing",
        "pace Keeper requests through PACING_TABLE_NAME (false: unpaced, for tests of other things)",
        _flag,
        default="true",
    ),
    Variable(
        "KEEPER_BURST_LIMIT",
        "keeper_burst_limit",
        "most requests one client device sends one Keeper endpoint without a KEEPER_QUIET_SECONDS pause",
        _number(1, 10000),
    ),
    Variable(
        "KEEPER_QUIET_SECONDS",
        "keeper_quiet_seconds",
        "the pause after which Keeper's per-device burst count restarts (Keeper: 10 s)",
        _number(1, 600, whole=False),
    ),
    Variable(
        "KEEPER_REQUESTS_PER_MINUTE",
        "keeper_requests_per_minute",
        "most requests per client device in any 60 s (0: no per-minute cap; Keeper's rate-limit page: 10)",
        _number(0, 1000),
    ),
    Variable(
        "KEEPER_RATE_WINDOW_SECONDS",
        "keeper_rate_window",
        "the window KEEPER_REQUESTS_PER_MINUTE counts over; only the sandbox shortens it, to compress time",
        _number(1, 60, whole=False),
    ),
    Variable(
        "KEEPER_PACING_MAX_WAIT",
        "keeper_pacing_max_wait",
        "seconds a Keeper request may wait for pacing before its record fails `keeper_throttled`",
        _number(0, 600, whole=False),
    ),
    Variable(
        "SCHEDULE_EXPRESSION",
        "schedule_period",
        "the planning schedule (`rate(...)`; a `cron(...)` counts as daily): the Keeper budget of one scheduled run",
        _schedule_seconds,
        default="rate(1 day)",
    ),
    Variable(
        "ROTATION_FOLDER_UIDS",
        "folder_uids",
        "scheduled-run scope (empty: every record the KSM application sees); unbound records in these folders are "
        "rotated and bound",
        _uids,
    ),
    Variable("DRY_RUN", "dry_run", "audit mode: every rotation is planned and reported, nothing changes", _flag),
    Variable("PASSWORD_LENGTH", "password_length", "raised to the policy minimum, at most 128", _number(8, 128)),
    Variable("JOURNAL_TABLE_NAME", "journal_table", "the journal's DynamoDB table"),
    Variable("JOURNAL_KEY_ID", "journal_key_id", "the KMS key sealing the journal's passwords"),
    Variable(
        "JOURNAL_MAC_KEY_ID", "journal_mac_key_id", "the HMAC KMS key the journal's integrity MAC is derived from"
    ),
    Variable("IDEMPOTENCY_TABLE_NAME", "idempotency_table", "idempotent retries (empty: off)"),
    Variable(
        "KSM_CONFIG_MAX_AGE", "ksm_config_max_age", "seconds the config is cached per warm container", _number(0, 86400)
    ),
    Variable(
        "KEEPER_TIMEOUT",
        "keeper_timeout",
        "seconds per Keeper request (the SDK itself has none)",
        _number(1, 120, whole=False),
    ),
    Variable("KEEPER_COMMIT_ATTEMPTS", "commit_attempts", "commit tries before IAM is set back", _number(1, 10)),
    Variable(
        "RETRY_DELAY",
        "retry_delay",
        "base of the exponential backoff for IAM retries, in seconds",
        _number(0, 30, whole=False),
    ),
    Variable("JOURNAL_LEASE_MARGIN_SECONDS", "lease_margin", "lease = remaining Lambda time + this", _number(0, 3600)),
    Variable(
        "ROTATION_CONCURRENCY",
        "concurrency",
        "records rotated in parallel (1-16); each IAM user is still locked by its lease",
        _number(1, 16),
    ),
    Variable(
        "TARGET_ACCOUNT_IDS",
        "target_account_ids",
        "member accounts whose users may be rotated (comma-separated; empty: only the function's own)",
        _account_ids,
    ),
    Variable("TARGET_ROLE_NAME", "target_role_name", "the role `member-account.yaml` creates in each member account"),
    Variable(
        "TARGET_EXTERNAL_ID_SECRET",
        "target_external_id_secret",
        "the Secrets Manager secret holding the `sts:ExternalId` the member roles require, if any",
    ),
    Variable(
        "TARGET_EXTERNAL_ID",
        "target_external_id",
        "the ExternalId itself, for the CLI and tests (the function reads TARGET_EXTERNAL_ID_SECRET)",
    ),
    Variable(
        "ROTATION_PERIOD_DAYS",
        "rotation_period_days",
        "default rotation period (1-365); a record's `rotation_period_days` overrides it",
        _number(1, 365),
    ),
    Variable(
        "INLINE_ROTATION_LIMIT",
        "inline_rotation_limit",
        "due records the scheduled run rotates itself; the rest go to the rotation queue",
        _number(0, 10000),
    ),
    Variable(
        "ROTATION_QUEUE_URL",
        "rotation_queue_url",
        "the rotation queue; empty (the CLI, tests): the scheduled run rotates everything itself",
    ),
    Variable(
        "DRIFT_ACTION",
        "drift_action",
        "a bound user's password changed outside the rotator: `rotate` the record at once, or only `alert`",
        _drift_action,
    ),
    Variable(
        "BIND_CALLER_ARNS",
        "bind_caller_arns",
        "API callers (ARN patterns, comma-separated) whose requests may bind records with only a login",
        _uids,
    ),
    Variable(
        "KEEPER_REGION",
        "keeper_region",
        "the Keeper region (US, EU, AU, GOV, JP, CA, IL5) whose host and server keys the KSM config must name",
        _upper,
    ),
    Variable(
        "RECOVERY_SCHEDULE_EXPRESSION",
        "recovery_period",
        "the recovery schedule's `rate(...)`: an open journal entry older than two periods plus the lease is stale",
        _rate_seconds,
        default="rate(15 minutes)",
    ),
    Variable(
        "TRACE_CALLS",
        None,
        "Powertools Tracer (X-Ray SDK) around the handler: subsegments for every AWS and Keeper call",
        default="false",
    ),
    Variable(
        "POWERTOOLS_SERVICE_NAME",
        None,
        "log service name and the metrics' `service` dimension (the alarms expect the template's value)",
        default="keeper-iam-rotator",
    ),
    Variable(
        "POWERTOOLS_METRICS_NAMESPACE",
        None,
        "metric namespace (the alarms expect the template's value)",
        default="KeeperIamRotator",
    ),
    Variable("POWERTOOLS_LOG_LEVEL", None, "log level (secrets are never logged at any level)", default="INFO"),
    Variable("POWERTOOLS_TRACER_CAPTURE_RESPONSE", None, "whether X-Ray records responses", default="true"),
)


@dataclass(frozen=True)
class Settings:
    ksm_config_secret_ids: tuple[str, ...] = ()  # the Lambda's config sources, one per client device
    pacing_table: str = "keeper-iam-rotator-pacing"
    keeper_pacing: bool = True
    keeper_burst_limit: int = 90
    keeper_quiet_seconds: float = 11.0
    keeper_requests_per_minute: int = 0
    keeper_rate_window: float = 60.0
    keeper_pacing_max_wait: float = 60.0
    schedule_period: int = 86400  # seconds between scheduled runs (ScheduleExpression)
    folder_uids: tuple[str, ...] = ()
    dry_run: bool = False
    password_length: int = 32
    journal_table: str = "keeper-iam-rotator-journal"
    journal_key_id: str = "alias/keeper-iam-rotator-journal"
    journal_mac_key_id: str = "alias/keeper-iam-rotator-journal-mac"  # the HMAC key of the journal's integrity MAC
    idempotency_table: str = ""
    ksm_config_max_age: int = 300
    keeper_timeout: float = 20.0
    commit_attempts: int = 3
    retry_delay: float = 1.0
    lease_margin: int = 60
    concurrency: int = 4
    target_account_ids: tuple[str, ...] = ()  # accounts besides the function's own whose users may be rotated
    target_role_name: str = "keeper-iam-rotator-target"
    target_external_id: str = ""  # the CLI's (and tests'): the function reads it from target_external_id_secret
    target_external_id_secret: str = ""  # the Secrets Manager secret holding the member roles' ExternalId
    rotation_period_days: int = 30
    inline_rotation_limit: int = 50
    rotation_queue_url: str = ""  # empty: the scheduled run rotates everything itself
    drift_action: DriftAction = DriftAction.ROTATE
    bind_caller_arns: tuple[str, ...] = ()  # API callers whose requests may bind records ("bind": true)
    recovery_period: int = 900  # seconds between recovery runs (RecoveryScheduleExpression)
    keeper_region: str | None = "US"  # the Keeper region the KSM config must name (trust.py); None: any (the CLI)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every VARIABLES entry with a field, from `env` (default: the process's); unset or empty: the default."""
        env = os.environ if env is None else env
        values = {
            variable.field: variable.parse(variable.name, raw)
            for variable in VARIABLES
            if variable.field and (raw := env.get(variable.name, "").strip())
        }
        return cls(**values)

    def require_ksm_config_secrets(self) -> tuple[str, ...]:
        """The secrets the Lambda reads its KSM configs from (one per client device); it has no other source."""
        if not self.ksm_config_secret_ids:
            raise ConfigurationError(
                "KSM_CONFIG_SECRET_ID is not set: name the Secrets Manager secret holding the KSM config"
            )
        return tuple(dict.fromkeys(self.ksm_config_secret_ids))

    @property
    def keeper_limits(self) -> Limits:
        return Limits(
            self.keeper_burst_limit, self.keeper_quiet_seconds, self.keeper_requests_per_minute, self.keeper_rate_window
        )
