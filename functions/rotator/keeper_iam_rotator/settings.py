"""Configuration from environment variables. The Lambda requires KSM_CONFIG_SECRET_ID; the template sets the rest.
The CLI builds the same Settings from the same variables and its own options (it reads the config elsewhere)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from .errors import ConfigurationError

ACCOUNT_ID = re.compile(r"\d{12}")
RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class DriftAction(StrEnum):
    """What the rotator does when a bound user's password was changed outside it (DRIFT_ACTION)."""

    ROTATE = "rotate"  # rotate the record at once: Keeper holds the working password again within minutes
    ALERT = "alert"  # report it (result, DriftDetected, DriftAlarm) and change nothing


def _drift_action(env: Mapping[str, str]) -> DriftAction:
    raw = env.get("DRIFT_ACTION", "").strip().lower() or DriftAction.ROTATE
    try:
        return DriftAction(raw)
    except ValueError:
        raise ConfigurationError(f"DRIFT_ACTION must be rotate or alert, not {raw[:20]!r}") from None


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low:g} and {high:g}, not {raw}")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated variable as its non-empty items."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _rate_seconds(env: Mapping[str, str], name: str, default: int) -> int:
    """The period of an EventBridge `rate(N unit)` expression, in seconds."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    rate = RATE.fullmatch(raw)
    if rate is None:
        raise ConfigurationError(f"{name} must be a rate expression like rate(15 minutes), not {raw[:40]!r}")
    return int(rate[1]) * UNIT_SECONDS[rate[2].removesuffix("s")]


def _account_ids(env: Mapping[str, str]) -> tuple[str, ...]:
    ids = _list(env, "TARGET_ACCOUNT_IDS")
    bad = [account for account in ids if not ACCOUNT_ID.fullmatch(account)]
    if bad:
        raise ConfigurationError(f"TARGET_ACCOUNT_IDS must list 12-digit AWS account ids; {bad[0][:20]!r} is not one")
    return ids


@dataclass(frozen=True)
class Settings:
    ksm_config_secret_id: str = ""  # the Lambda's config source (see require_ksm_config_secret)
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
        env = os.environ if env is None else env
        return cls(
            ksm_config_secret_id=env.get("KSM_CONFIG_SECRET_ID", "").strip(),
            folder_uids=_list(env, "ROTATION_FOLDER_UIDS"),
            dry_run=flag(env, "DRY_RUN", False),
            password_length=int(_number(env, "PASSWORD_LENGTH", 32, 8, 128)),
            journal_table=env.get("JOURNAL_TABLE_NAME", "").strip() or cls.journal_table,
            journal_key_id=env.get("JOURNAL_KEY_ID", "").strip() or cls.journal_key_id,
            journal_mac_key_id=env.get("JOURNAL_MAC_KEY_ID", "").strip() or cls.journal_mac_key_id,
            idempotency_table=env.get("IDEMPOTENCY_TABLE_NAME", "").strip(),
            ksm_config_max_age=int(_number(env, "KSM_CONFIG_MAX_AGE", 300, 0, 86400)),
            keeper_timeout=_number(env, "KEEPER_TIMEOUT", 20.0, 1, 120),
            commit_attempts=int(_number(env, "KEEPER_COMMIT_ATTEMPTS", 3, 1, 10)),
            retry_delay=_number(env, "RETRY_DELAY", 1.0, 0, 30),
            lease_margin=int(_number(env, "JOURNAL_LEASE_MARGIN_SECONDS", 60, 0, 3600)),
            concurrency=int(_number(env, "ROTATION_CONCURRENCY", 4, 1, 16)),
            target_account_ids=_account_ids(env),
            target_role_name=env.get("TARGET_ROLE_NAME", "").strip() or cls.target_role_name,
            target_external_id=env.get("TARGET_EXTERNAL_ID", "").strip(),
            target_external_id_secret=env.get("TARGET_EXTERNAL_ID_SECRET", "").strip(),
            rotation_period_days=int(_number(env, "ROTATION_PERIOD_DAYS", 30, 1, 365)),
            inline_rotation_limit=int(_number(env, "INLINE_ROTATION_LIMIT", 50, 0, 10000)),
            rotation_queue_url=env.get("ROTATION_QUEUE_URL", "").strip(),
            drift_action=_drift_action(env),
            bind_caller_arns=_list(env, "BIND_CALLER_ARNS"),
            keeper_region=env.get("KEEPER_REGION", "").strip().upper() or cls.keeper_region,
            recovery_period=_rate_seconds(env, "RECOVERY_SCHEDULE_EXPRESSION", cls.recovery_period),
        )

    def require_ksm_config_secret(self) -> str:
        """The secret the Lambda reads its KSM config from; it has no other source."""
        if not self.ksm_config_secret_id:
            raise ConfigurationError(
                "KSM_CONFIG_SECRET_ID is not set: name the Secrets Manager secret holding the KSM config"
            )
        return self.ksm_config_secret_id
