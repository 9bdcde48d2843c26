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
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import requests
from keeper_secrets_manager_core import SecretsManager
from keeper_secrets_manager_core.keeper_globals import keeper_servers
from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

from keeper_iam_rotator.aws import AwsClients
from keeper_iam_rotator.errors import AWS_ERRORS, AwsErrorCode, is_aws_error

from .aws import aws_error
from .devices import DeviceList, protect_message
from .errors import EXIT_FAILED, CliError
from .resolve import REQUIRED_CONFIG_KEYS

STACK_NAME = "keeper-iam-rotator"  # samconfig.toml's stack_name, which sam deploy uses
TOKEN_ENV = ("KSM_TOKEN", "KSM_CONFIG")  # the SDK would prefer these over the token we pass
TOKEN_KEY_BYTES = 32
TOKEN_KEY_CHARS = 43
TOKEN_KEY = re.compile(r"[A-Za-z0-9_-]+={0,2}")
KEEPER_HOSTS = frozenset(keeper_servers.values())  # the SDK knows these servers' public keys


def read_token(token: str | None, token_file: Any) -> str:
    if token and token_file:
        raise CliError("give either --token or --token-file, not both")
    if token_file is not None:
        token = token_file.read()
    elif token is None:
        if not has_terminal():  # getpass would warn, then read an echoed line or fail on an empty stdin
            raise click.UsageError(
                "no terminal to ask for the one-time token on: give --token-file PATH (or --token-file - to read it "
                "from standard input)"
            )
        token = click.prompt("KSM one-time access token", hide_input=True)
    token = (token or "").strip()
    if not token:
        raise CliError("the one-time access token is empty")
    return token


def has_terminal() -> bool:
    return sys.stdin.isatty()


def token_host(token: str, hostname: str | None) -> str:
    """The host the SDK will redeem the token at, refusing what the SDK would misread (without echoing the key).

    Formats the SDK accepts: `REGION:KEY` with one of Keeper's region prefixes (the SDK's own `keeper_servers`
    map: US, EU, AU, GOV, JP, CA, IL5), `HOST:KEY` for a Keeper host named by DNS, or a bare `KEY` with --hostname.
    Any other prefix would be tried as a host name; `HOST:PORT:KEY` would be split at the wrong ':'."""
    parts = token.split(":")
    if len(parts) > 2 and parts[0].upper() != "IL5":
        raise CliError(
            "the token has more than one ':'; for a host with a port pass --hostname HOST:PORT and the bare token"
        )
    if len(parts) == 1:
        if not hostname:
            raise CliError("this token has no region prefix (like US:...): give --hostname")
        host = hostname
    else:
        prefix = parts[0].strip()
        host = keeper_servers.get(prefix.upper()) or prefix
        if host == prefix and "." not in prefix:
            regions = ", ".join(keeper_servers)
            raise CliError(
                f"unknown region prefix {prefix[:12]!r} in the token: Keeper's are {regions} "
                "(for your own KSM host write HOST.DOMAIN:KEY, or pass --hostname HOST and the bare key)"
            )
    _require_token_key(parts[0] if len(parts) == 1 else parts[1])
    return host


def _require_token_key(key: str) -> None:
    """Keeper's one-time keys are 32 random bytes in url-safe base64 (43 characters); the SDK fails on anything
    else with a bare `binascii.Error`."""
    key = key.strip()
    if not key:
        raise CliError("the token has no key after its prefix")
    try:
        raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    except ValueError:
        raw = b""
    if not TOKEN_KEY.fullmatch(key) or len(raw) != TOKEN_KEY_BYTES:
        raise CliError(
            f"this is not a KSM one-time token: after the region prefix it has {len(key)} characters, expected "
            f"{TOKEN_KEY_CHARS} of url-safe base64 (copy the whole token Keeper shows, like US:...)"
        )


@contextlib.contextmanager
def _without_sdk_env() -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in TOKEN_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def redeem(token: str, hostname: str | None, server_public_key: str | None, host: str) -> tuple[str, str, int]:
    """Bind a new client with the token at `host`; return (config as base64 of its JSON, app title, records
    visible)."""
    storage = InMemoryKeyValueStorage()
    try:
        with _without_sdk_env():
            sm = SecretsManager(
                token=token, hostname=hostname, config=storage, server_public_key=server_public_key or None
            )
            response = sm.get_secrets(full_response=True)
    except requests.RequestException as error:
        raise CliError(
            f"cannot reach Keeper at {host} ({type(error).__name__}); nothing was stored", EXIT_FAILED
        ) from None
    except Exception as error:  # SDK messages may quote the token or a client id: keep only the error's kind
        reason = _keeper_reason(error, host, bool(server_public_key))
        raise CliError(f"redeeming the one-time token failed: {reason}", EXIT_FAILED) from None
    config = {key: value for key, value in storage.read_storage().items() if value is not None and key != "clientKey"}
    missing = [key for key in REQUIRED_CONFIG_KEYS if not config.get(key)]
    if missing:
        raise CliError(f"Keeper did not bind the client (config lacks {', '.join(missing)})", EXIT_FAILED)
    title = getattr(getattr(response, "appData", None), "title", None) or "?"
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    return encoded, str(title), len(response.records or [])


def _keeper_reason(error: Exception, host: str, server_key: bool) -> str:
    """The SDK's error kind (access_denied, invalid token, connection) without the message text, and what to do."""
    text = str(error)
    if "access_denied" in text and not server_key and host not in KEEPER_HOSTS:
        return (
            f"{host} refused it (access_denied), and it could not have read the request: without "
            "--server-public-key the token is sent encrypted for Keeper's own servers, not for a KSM deployment of "
            "your own. Pass that deployment's --server-public-key and use the same token again (it was not spent); "
            f"if {host} is Keeper's, the token is mistyped, already used or expired: create a new one"
        )
    if "access_denied" in text:
        return "Keeper refused it (access_denied): the token is mistyped, already used or expired; create a new one"
    for reason in ("invalid_client", "invalid_client_version", "throttled", "Signature is invalid"):
        if reason in text:
            return f"{type(error).__name__} ({reason})"
    return type(error).__name__


@dataclass
class Stored:
    arn: str
    created: bool
    app_title: str
    records: int
    added_to: DeviceList | None = None  # --add-device: the stack whose device list grows

    def show(self) -> None:
        action = "Created secret" if self.created else "Stored a new version of secret"
        lines = [
            f"Bound a new client device of KSM application '{self.app_title}' ({self.records} records visible).",
            f"{action}: {self.arn}",
        ]
        if not self.created:
            lines.append("(existing secret: its tags and KMS key were left as they are)")
        if self.added_to is not None:
            click.echo("\n".join([*lines, *protect_message(self.arn, self.added_to)]))
            return
        lines += [
            "",
            "Deploy with (in the repository checkout; make build installs SAM CLI in .venv-sam):",
            "  make build",
            f"  .venv-sam/bin/sam deploy --guided --parameter-overrides KsmConfigSecretArn={self.arn}",
            "Then check (nothing is changed):",
            f"  keeper-iam-rotator check --stack {STACK_NAME}",
        ]
        click.echo("\n".join(lines))


def _existing_arn(client: Any, name: str) -> str | None:
    """The secret's ARN if it exists; CliError when Secrets Manager cannot be used (before the token is spent)."""
    try:
        return str(client.describe_secret(SecretId=name)["ARN"])
    except AWS_ERRORS as error:
        if is_aws_error(error, AwsErrorCode.RESOURCE_NOT_FOUND):
            return None
        raise CliError(aws_error(f"Secrets Manager DescribeSecret {name}", error), EXIT_FAILED) from None


def initialise(
    clients: AwsClients,
    token: str,
    secret_name: str,
    kms_key_id: str | None,
    tags: dict[str, str],
    hostname: str | None,
    server_public_key: str | None,
    description: str,
    add_to: DeviceList | None = None,
) -> Stored:
    """Redeem the token and store the config; with `add_to`, as one more client device of that stack (a new secret,
    protected like the stack's first)."""
    host = token_host(token, hostname)
    client = clients("secretsmanager")
    if add_to is not None:
        add_to.require_new(secret_name)
    existing = _existing_arn(client, secret_name)
    config, title, records = redeem(token, hostname, server_public_key, host)
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
    if add_to is not None:
        add_to.protect(client, str(arn))
    return Stored(arn=str(arn), created=not existing, app_title=title, records=records, added_to=add_to)


def _save_locally(secret_name: str, config: str) -> Path:
    path = Path.cwd() / f"ksm-config-{secret_name.replace('/', '_')}.b64"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(config)
    return path
