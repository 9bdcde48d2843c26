"""AWS clients, and the KSM config read from Secrets Manager.

Clients live as long as the process (a warm Lambda container keeps its connection pools and credentials); a client
acting with assumed-role credentials lives as long as the gateway that asked for it (one invocation).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.config import Config

from .errors import KsmConfigUnavailableError, SecretUnavailableError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

_POOL: Final = {"connect_timeout": 5, "read_timeout": 20, "max_pool_connections": 20}  # >= ROTATION_CONCURRENCY max
READS: Final = Config(retries={"mode": "standard", "max_attempts": 5}, **_POOL)
WRITES: Final = Config(retries={"total_max_attempts": 1}, **_POOL)  # see iam.py: UpdateLoginProfile retries itself


class AwsClients:
    """A ClientFactory (context.py): one client per service and purpose, made on first use from boto3's default
    session as it is then, in `region_name` (None: the environment's)."""

    def __init__(self, region_name: str | None = None) -> None:
        self._region = {"region_name": region_name} if region_name else {}
        self._clients: dict[tuple[str, bool], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, service: str, *, writes: bool = False, credentials: Mapping[str, str] | None = None) -> Any:
        config = WRITES if writes else READS
        if credentials is not None:  # another account's role: never shared beyond the gateway that asked
            return self._make(service, config, credentials)
        with self._lock:
            if (service, writes) not in self._clients:
                self._clients[(service, writes)] = self._make(service, config, {})
            return self._clients[(service, writes)]

    def clear(self) -> None:
        """Forget every client (tests arm botocore hooks that only clients made afterwards see)."""
        with self._lock:
            self._clients.clear()

    def _make(self, service: str, config: Config, credentials: Mapping[str, str]) -> Any:
        return boto3.client(service, config=config, **self._region, **credentials)


@lru_cache(maxsize=1)
def _secrets_provider(secretsmanager: Any) -> SecretsProvider:
    """Powertools' Secrets Manager provider on our client (same timeouts and retries); it caches values. Imported
    on the first read: a recovery run that finds nothing to do never reads the config."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

    return SecretsProvider(boto3_client=secretsmanager)


def clear_ksm_config_cache() -> None:
    _secrets_provider.cache_clear()


def load_ksm_config(secretsmanager: Any, secret_id: str, max_age: int) -> str:
    """The KSM config (base64 or JSON) from Secrets Manager, cached for `max_age` seconds per process."""
    return load_secret(secretsmanager, secret_id, max_age, "KSM config secret", KsmConfigUnavailableError)


def load_secret(
    secretsmanager: Any,
    secret_id: str,
    max_age: int,
    what: str = "secret",
    error_type: type[SecretUnavailableError] = SecretUnavailableError,
) -> str:
    """A secret's value from Secrets Manager, cached for `max_age` seconds per process."""
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError  # noqa: PLC0415

    try:
        value = _secrets_provider(secretsmanager).get(secret_id, max_age=max_age)
    except GetParameterError as error:
        raise error_type(f"cannot read the {what} {secret_id}: {str(error)[:300]}") from None
    return value.decode() if isinstance(value, bytes) else str(value)
