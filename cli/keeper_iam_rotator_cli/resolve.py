"""Where the CLI's settings come from: command-line options, the SAM stack's outputs, the environment.

Precedence for every value: explicit option > `--stack` output > environment variable. There is no default name:
CloudFormation names the stack's tables, so a guessed name would point at a table that does not exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

from keeper_iam_rotator.aws import AwsClients
from keeper_iam_rotator.errors import AWS_ERRORS, ConfigurationError
from keeper_iam_rotator.settings import Settings

from .aws import aws_error, stack_outputs
from .errors import EXIT_USAGE, CliError

REQUIRED_CONFIG_KEYS: Final = ("clientId", "privateKey", "appKey")


@dataclass
class ConfigSource:
    """Where the KSM config comes from: a Secrets Manager secret, a local file, or env KSM_CONFIG."""

    secret_id: str | None = None
    file: Path | None = None
    from_env: bool = False
    arn: str | None = None  # the secret's ARN, known once it was read

    @property
    def label(self) -> str:
        if self.secret_id:
            return f"secret {self.secret_id}"
        if self.file:
            return f"file {self.file}"
        return "environment variable KSM_CONFIG"

    def read(self, clients: AwsClients) -> str:
        """The config text (base64 or JSON). CliError (exit 2) names the source, never the content."""
        if self.secret_id:
            try:
                answer = clients("secretsmanager").get_secret_value(SecretId=self.secret_id)
            except AWS_ERRORS as error:
                raise CliError(aws_error(f"Secrets Manager GetSecretValue {self.secret_id}", error)) from None
            self.arn = answer.get("ARN")
            text = answer.get("SecretString") or (answer.get("SecretBinary") or b"").decode("utf-8", "replace")
        elif self.file:
            try:
                text = self.file.read_text()
            except OSError as error:
                raise CliError(f"cannot read the KSM config file {self.file}: {error.strerror}") from None
        else:
            text = os.environ.get("KSM_CONFIG", "")
        text = text.strip()
        if not text:
            raise CliError(f"the KSM config in {self.label} is empty")
        return text


@contextlib.contextmanager
def _sdk_silenced() -> Iterator[None]:
    """The SDK logs a JSON parse error (a warning on its `ksm` logger) before raising its own; ours says it better."""
    sdk_logger = logging.getLogger("ksm")
    saved, sdk_logger.disabled = sdk_logger.disabled, True
    try:
        yield
    finally:
        sdk_logger.disabled = saved


def validate_config(text: str, label: str) -> dict[str, Any]:
    """Parse the config the way the SDK does; refuse one that is not a bound KSM client config. The SDK's own parse
    errors can quote the config, so they are replaced by a message that names only the source and the keys."""
    try:
        with _sdk_silenced():
            parsed = InMemoryKeyValueStorage(text).read_storage()
    except Exception:
        raise CliError(f"the KSM config in {label} is not valid base64 or JSON KSM configuration") from None
    missing = [key for key in REQUIRED_CONFIG_KEYS if not parsed.get(key)]
    if missing:
        raise CliError(f"the KSM config in {label} lacks {', '.join(missing)} (is it a bound KSM application config?)")
    return dict(parsed)


@dataclass
class Target:
    """Everything a local command needs to reach: the config source and the journal, plus the stack's outputs, and
    the command's AWS clients."""

    clients: AwsClients
    config: ConfigSource
    journal_table: str
    journal_key: str
    outputs: dict[str, str]
    idempotency_table: str | None = None  # only the Lambda uses it; `check` verifies it when known
    journal_mac_key: str = Settings.journal_mac_key_id  # the HMAC key of the journal's integrity MAC
    pacing_table: str = Settings.pacing_table  # shared with the function: a CLI run paces on the same devices
    devices: tuple[
        str, ...
    ] = ()  # the config secrets the deployment lists, one per client device (the CLI uses the first)

    def settings(self, folder_uids: tuple[str, ...] = (), dry_run: bool = False) -> Settings:
        """The rotator's Settings: the environment's tuning (PASSWORD_LENGTH, RETRY_DELAY, ...) with our values. A
        local run never hands records to the rotation queue (its results would be the deployed function's)."""
        try:
            base = Settings.from_env()
        except ConfigurationError as error:
            raise CliError(str(error)) from None
        return dataclasses.replace(
            base,
            ksm_config_secret_ids=(self.config.secret_id,) if self.config.secret_id else (),
            pacing_table=self.pacing_table,
            folder_uids=folder_uids or base.folder_uids,
            dry_run=dry_run or base.dry_run,
            journal_table=self.journal_table,
            journal_key_id=self.journal_key,
            journal_mac_key_id=self.journal_mac_key,
            idempotency_table=self.idempotency_table or "",
            rotation_queue_url="",
            keeper_region=self.keeper_region,
        )

    @property
    def required_user_tag(self) -> dict[str, str] | None:
        """The tag the stack's role requires on a user (its RequiredUserTag output, `key=value` or `none`): {} when
        it requires none (unsafe), None when there is no stack to ask."""
        output = self.outputs.get("RequiredUserTag")
        if output is None:
            return None
        key, sep, value = output.partition("=")
        return {key: value} if sep else {}

    @property
    def keeper_region(self) -> str | None:
        """The deployment's Keeper region: the stack's KeeperRegion output, else KEEPER_REGION; None (any Keeper
        region's host) when neither says."""
        return self.outputs.get("KeeperRegion") or os.environ.get("KEEPER_REGION", "").strip().upper() or None

    @cached_property
    def config_text(self) -> str:
        text = self.config.read(self.clients)
        validate_config(text, self.config.label)
        return text


def resolve_target(
    clients: AwsClients,
    config_secret: str | None,
    config_file: Path | None,
    journal_table: str | None,
    journal_key: str | None,
    stack: str | None,
    idempotency_table: str | None = None,
) -> Target:
    if config_secret and config_file:
        raise CliError("give either --config-secret or --config-file, not both", EXIT_USAGE)
    outputs = stack_outputs(clients("cloudformation"), stack) if stack else {}
    if config_secret:
        source = ConfigSource(secret_id=config_secret)
    elif config_file:
        source = ConfigSource(file=config_file)
    elif os.environ.get("KSM_CONFIG", "").strip():
        source = ConfigSource(from_env=True)
    elif outputs.get("ConfigSecretArn"):  # several devices: the CLI runs on the first
        source = ConfigSource(secret_id=_first(outputs["ConfigSecretArn"]))
    elif os.environ.get("KSM_CONFIG_SECRET_ID", "").strip():
        source = ConfigSource(secret_id=_first(os.environ["KSM_CONFIG_SECRET_ID"]))
    else:
        raise CliError(
            "no KSM config: give --config-secret ID, --config-file PATH or --stack NAME "
            "(or set KSM_CONFIG / KSM_CONFIG_SECRET_ID)"
        )
    return Target(
        clients=clients,
        config=source,
        journal_table=_required(
            "journal table", journal_table, "--journal-table NAME", outputs, "JournalTableName", "JOURNAL_TABLE_NAME"
        ),
        journal_key=_required(
            "journal key", journal_key, "--journal-key ID", outputs, "JournalKeyArn", "JOURNAL_KEY_ID"
        ),
        outputs=outputs,
        idempotency_table=_setting(idempotency_table, outputs, "IdempotencyTableName", "IDEMPOTENCY_TABLE_NAME"),
        journal_mac_key=_setting(None, outputs, "JournalMacKeyArn", "JOURNAL_MAC_KEY_ID")
        or Settings.journal_mac_key_id,
        pacing_table=_setting(None, outputs, "PacingTableName", "PACING_TABLE_NAME") or Settings.pacing_table,
        devices=tuple(_listed(outputs.get("ConfigSecretArn") or os.environ.get("KSM_CONFIG_SECRET_ID", ""))),
    )


def _listed(secret_ids: str) -> list[str]:
    """A comma-separated list of config secrets (KsmConfigSecretArn lists one per client device)."""
    return [part.strip() for part in secret_ids.split(",") if part.strip()]


def _first(secret_ids: str) -> str:
    return _listed(secret_ids)[0]


def _setting(option: str | None, outputs: dict[str, str], output: str, env: str) -> str | None:
    """Option > stack output > environment variable; None when none gives it."""
    return option or outputs.get(output) or os.environ.get(env, "").strip() or None


def _required(what: str, option: str | None, flag: str, outputs: dict[str, str], output: str, env: str) -> str:
    value = _setting(option, outputs, output, env)
    if value is None:
        raise CliError(f"no {what}: give {flag} or --stack NAME (or set {env})")
    return value


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """`KEY=VALUE` options into a dict; CliError for anything else."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{option} takes KEY=VALUE, not {value!r}")
        pairs[key.strip()] = val.strip()
    return pairs
