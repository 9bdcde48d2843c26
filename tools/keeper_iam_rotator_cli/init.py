"""`init`: redeem a KSM one-time access token the way the SDK does and store the bound config in Secrets Manager.

The token is single-use, so everything that can be checked without spending it (the token's shape, access to the
secret) is checked first; if storing fails after the token was redeemed, the config is written to a private local
file rather than lost, and never printed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError
from keeper_secrets_manager_core import SecretsManager
from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

from keeper_iam_rotator import service
from keeper_iam_rotator.iam import error_code

from .errors import EXIT_FAILED, CliError
from .resolve import REQUIRED_CONFIG_KEYS, aws_error

AWS_ERRORS = (ClientError, BotoCoreError)
TOKEN_ENV = ("KSM_TOKEN", "KSM_CONFIG")  # the SDK would prefer these over the token we pass


def read_token(token: str | None, token_file: Any) -> str:
    if token and token_file:
        raise CliError("give either --token or --token-file, not both")
    if token_file is not None:
        token = token_file.read()
    elif token is None:
        token = click.prompt("KSM one-time access token", hide_input=True)
    token = (token or "").strip()
    if not token:
        raise CliError("the one-time access token is empty")
    return token


def check_token_shape(token: str, hostname: str | None) -> None:
    """The SDK's formats: `REGION:TOKEN` (US, EU, AU, GOV, JP, CA), `HOST:TOKEN`, or a bare token with --hostname.
    A `HOST:PORT:TOKEN` would be mis-parsed by the SDK, so it is refused here (without echoing the token)."""
    parts = token.split(":")
    if len(parts) == 1 and not hostname:
        raise CliError("this token has no region prefix (like US:...): give --hostname")
    if len(parts) > 2 and parts[0].upper() != "IL5":
        raise CliError(
            "the token has more than one ':'; for a host with a port pass --hostname HOST:PORT and the bare token"
        )
    if not (parts[0] if len(parts) == 1 else parts[1]).strip():
        raise CliError("the token has no key after its prefix")


@contextlib.contextmanager
def _without_sdk_env() -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in TOKEN_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def redeem(token: str, hostname: str | None, server_public_key: str | None) -> tuple[str, str, int]:
    """Bind a new client with the token; return (config as base64 of its JSON, app title, records visible)."""
    storage = InMemoryKeyValueStorage()
    try:
        with _without_sdk_env():
            sm = SecretsManager(
                token=token, hostname=hostname, config=storage, server_public_key=server_public_key or None
            )
            response = sm.get_secrets(full_response=True)
    except Exception as error:  # SDK messages may quote the token or a client id: keep only the error's kind
        raise CliError(f"redeeming the one-time token failed: {_keeper_reason(error)}", EXIT_FAILED) from None
    config = {key: value for key, value in storage.read_storage().items() if value is not None and key != "clientKey"}
    missing = [key for key in REQUIRED_CONFIG_KEYS if not config.get(key)]
    if missing:
        raise CliError(f"Keeper did not bind the client (config lacks {', '.join(missing)})", EXIT_FAILED)
    title = getattr(getattr(response, "appData", None), "title", None) or "?"
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    return encoded, str(title), len(response.records or [])


def _keeper_reason(error: Exception) -> str:
    """The SDK's error kind (access_denied, invalid token, connection) without the message text."""
    text = str(error)
    for reason in ("access_denied", "invalid_client", "invalid_client_version", "throttled", "Signature is invalid"):
        if reason in text:
            return f"{type(error).__name__} ({reason})"
    return type(error).__name__


@dataclass
class Stored:
    arn: str
    created: bool
    app_title: str
    records: int

    def show(self) -> None:
        action = "Created secret" if self.created else "Stored a new version of secret"
        lines = [
            f"Bound a new client device of KSM application '{self.app_title}' ({self.records} records visible).",
            f"{action}: {self.arn}",
        ]
        if not self.created:
            lines.append("(existing secret: its tags and KMS key were left as they are)")
        lines += [
            "",
            "Deploy with:",
            f"  sam deploy --parameter-overrides KsmConfigSecretArn={self.arn}",
            "Then check:",
            f"  keeper-iam-rotator check --config-secret {self.arn}",
        ]
        click.echo("\n".join(lines))


def _existing_arn(client: Any, name: str) -> str | None:
    """The secret's ARN if it exists; CliError when Secrets Manager cannot be used (before the token is spent)."""
    try:
        return str(client.describe_secret(SecretId=name)["ARN"])
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            return None
        raise CliError(aws_error(f"Secrets Manager DescribeSecret {name}", error), EXIT_FAILED) from None
    except BotoCoreError as error:
        raise CliError(aws_error(f"Secrets Manager DescribeSecret {name}", error), EXIT_FAILED) from None


def initialise(
    token: str,
    secret_name: str,
    kms_key_id: str | None,
    tags: dict[str, str],
    hostname: str | None,
    server_public_key: str | None,
    description: str,
) -> Stored:
    check_token_shape(token, hostname)
    client = service.client("secretsmanager")
    existing = _existing_arn(client, secret_name)
    config, title, records = redeem(token, hostname, server_public_key)
    try:
        if existing:
            arn = client.put_secret_value(SecretId=existing, SecretString=config)["ARN"]
        else:
            extra: dict[str, Any] = {"KmsKeyId": kms_key_id} if kms_key_id else {}
            if tags:
                extra["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
            arn = client.create_secret(Name=secret_name, SecretString=config, Description=description, **extra)["ARN"]
    except AWS_ERRORS as error:
        fallback = _save_locally(secret_name, config)
        raise CliError(
            f"{aws_error('Secrets Manager store', error)}. The token is spent; the bound config was saved to "
            f"{fallback} (mode 600): store it yourself, then delete the file",
            EXIT_FAILED,
        ) from None
    return Stored(arn=str(arn), created=not existing, app_title=title, records=records)


def _save_locally(secret_name: str, config: str) -> Path:
    path = Path.cwd() / f"ksm-config-{secret_name.replace('/', '_')}.b64"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(config)
    return path
