"""Keeper adapter: read PAM User records, stage a rotation, commit or roll it back.

Every request goes through the SDK's transport hook (`SecretsManager.post_function`), replaced here by a keep-alive
urllib3 pool with timeouts: the stock transport opens a new TLS connection per call and waits forever.

The SDK (with requests and cryptography, ~70 ms to import) loads when the first vault is built, not with the
handler: a recovery-only run that finds the journal empty never talks to Keeper.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from .errors import KeeperCallError, KeeperThrottledError
from .sensitive import Secret, remember_ksm_config

if TYPE_CHECKING:
    from keeper_secrets_manager_core.dto.dtos import Record
    from keeper_secrets_manager_core.dto.payload import KSMHttpResponse

    from .pacing import Pacer

ACCOUNT_FIELD_LABEL: Final = "account_id_or_alias"  # the label Keeper's AWS post-rotation plugin wrote
ROTATION_TRANSACTION: Final = "rotation"
MAX_DEVICES: Final = 64  # client devices kept warm per container (KSM_CONFIG_SECRET_ID's list, and a rotated config)


class RecordType(StrEnum):
    """The Keeper record types the rotator tells apart: only PAM User records are ever rotated."""

    PAM_USER = "pamUser"


class _Answer:
    """What the SDK reads from a response when the status is not 200 (`text`, `reason`, `status_code`)."""

    def __init__(self, status_code: int, content: bytes, reason: str | None) -> None:
        self.status_code, self.content, self.reason = status_code, content, reason

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class _Transport:
    """`post_function` replacement: the SDK's request (its headers, the ones `requests` adds, TLS verification
    against the same CA bundle, an explicit or environment proxy) over one urllib3 pool with timeouts.

    urllib3 directly rather than `requests`: the session layer (settings merge, cookies, environment lookups per
    call) cost about a third of each Keeper call's CPU, and a rotation makes two. Failures are raised as the
    `requests` exceptions the stock transport raises, so errors read the same (`ConnectionError`, `ReadTimeout`).

    Every request first waits for its grant from the pacer (pacing.py) for this client device and endpoint. A
    `throttled` answer raises KeeperThrottledError here, before the SDK would sleep and retry it for minutes
    (11 s doubling, 5 times): the record fails `keeper_throttled` and a later run (or the queue) brings it back.
    """

    def __init__(self, timeout: float, device: str) -> None:
        import requests  # noqa: PLC0415 - with the SDK, see the module docstring

        self._timeout, self.device = timeout, device
        self.pacer: Pacer | None = None
        self._pools: dict[tuple[str, bool, str | None], Any] = {}
        self._headers = {  # what the stock transport sends besides the SDK's own headers
            "User-Agent": requests.utils.default_user_agent(),
            "Accept-Encoding": "gzip, deflate",
            "Accept": "*/*",
            "Connection": "keep-alive",
        }

    def __call__(
        self, url: str, transmission_key: Any, payload: Any, verify_ssl_certs: bool = True, proxy_url: str | None = None
    ) -> KSMHttpResponse:
        import urllib3  # noqa: PLC0415 - loaded by then (botocore's and the SDK's HTTP stack)
        from keeper_secrets_manager_core.dto.payload import KSMHttpResponse  # noqa: PLC0415 - loaded by then
        from keeper_secrets_manager_core.utils import bytes_to_base64  # noqa: PLC0415

        headers = {
            **self._headers,
            "Content-Type": "application/octet-stream",
            "PublicKeyId": str(transmission_key.publicKeyId),
            "TransmissionKey": bytes_to_base64(transmission_key.encryptedKey),
            "Authorization": f"Signature {bytes_to_base64(payload.signature)}",
        }
        endpoint = urlsplit(url).path.rsplit("/", 1)[-1]
        grant = self.pacer.admit(self.device, endpoint) if self.pacer is not None else None
        pool = self._pool(url, verify_ssl_certs, proxy_url)
        try:
            response = pool.request("POST", url, body=payload.encrypted_payload, headers=headers)
        except urllib3.exceptions.HTTPError as error:
            raise _as_requests_error(error, url) from None
        finally:
            if self.pacer is not None and grant is not None:
                self.pacer.sent(grant)
        if response.status == 403 and _throttled(response.data):
            raise KeeperThrottledError(f"Keeper throttled {endpoint} for client device {self.device}")
        answer = _Answer(response.status, response.data, response.reason)
        return KSMHttpResponse(answer.status_code, answer.content, answer)

    def _pool(self, url: str, verify: bool, proxy_url: str | None) -> Any:
        """One pool per (host, verification, proxy): the SDK passes the same on every call of a vault, so the
        environment's proxy settings are read once."""
        import urllib3  # noqa: PLC0415

        host = urlsplit(url).hostname or ""
        key = (host, verify, proxy_url)
        if key not in self._pools:
            proxy = proxy_url or _environment_proxy(host)
            options: dict[str, Any] = {
                "maxsize": MAX_CONNECTIONS,
                "retries": False,  # as the stock transport: the SDK and the protocol decide what to retry
                "timeout": urllib3.Timeout(connect=min(CONNECT_TIMEOUT, self._timeout), read=self._timeout),
                **({"cert_reqs": "CERT_REQUIRED", "ca_certs": _ca_bundle()} if verify else {"cert_reqs": "CERT_NONE"}),
            }
            self._pools[key] = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        return self._pools[key]


MAX_CONNECTIONS = 16  # the most records in flight (ROTATION_CONCURRENCY's upper bound)
CONNECT_TIMEOUT: Final = 5.0  # seconds to connect to Keeper (KEEPER_TIMEOUT bounds each answer)


def _throttled(body: bytes) -> bool:
    """Keeper's throttle answer: HTTP 403 with `{"error": "throttled"}` (or `result_code`), as the SDK reads it."""
    import json  # noqa: PLC0415

    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and "throttled" in (answer.get("error"), answer.get("result_code"))


def _ca_bundle() -> str:
    """The CA bundle `requests` would verify Keeper's certificate with: REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, certifi."""
    import certifi  # noqa: PLC0415 - a dependency of requests, so of the SDK

    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


def _environment_proxy(host: str) -> str | None:
    """HTTPS_PROXY unless NO_PROXY exempts the host, as `requests` reads them."""
    from urllib.request import getproxies, proxy_bypass  # noqa: PLC0415

    proxy = getproxies().get("https")
    return None if not proxy or proxy_bypass(host) else proxy


def _as_requests_error(error: Exception, url: str) -> Exception:
    import requests  # noqa: PLC0415
    import urllib3  # noqa: PLC0415

    if isinstance(error, urllib3.exceptions.NewConnectionError):  # a subclass of ConnectTimeoutError, as in requests
        return requests.ConnectionError(f"cannot connect to {url}: {type(error).__name__}")
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return requests.ConnectTimeout(f"connecting to {url} timed out")
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return requests.ReadTimeout(f"{url} did not answer in time")
    if isinstance(error, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(f"TLS with {url} failed: {error}")
    return requests.ConnectionError(f"{url}: {type(error).__name__}")


@dataclass
class PamUser:
    """A view of a Keeper record with the fields rotation reads; `record` is the SDK object staged back."""

    record: Record

    @property
    def uid(self) -> str:
        return str(self.record.uid)

    @property
    def type(self) -> str:
        return str(self.record.type or "")

    @property
    def editable(self) -> bool:
        return self.record.is_editable is not False

    @property
    def folder_uids(self) -> set[str]:
        return {uid for uid in (self.record.folder_uid, self.record.inner_folder_uid) if uid}

    def _standard(self, field_type: str) -> str:
        field = self.record.get_standard_field(field_type)
        values = (field or {}).get("value") or []
        return str(values[0]).strip() if values and values[0] else ""

    @property
    def login(self) -> str:
        return self._standard("login")

    @property
    def distinguished_name(self) -> str:
        return self._standard("distinguishedName")

    def custom(self, label: str) -> str:
        """The first value of the custom field with this label ("" when absent)."""
        for field in self.record.dict.get("custom") or []:
            if field.get("label") == label and field.get("value"):
                return str(field["value"][0]).strip()
        return ""

    @property
    def password(self) -> Secret | None:
        value = self._standard("password")
        return Secret(value) if value else None


def _set_field(fields: list[dict[str, Any]], field_type: str, value: str, label: str | None = None) -> None:
    """Set the first field of this type (and label, when given), adding it when the record lacks one."""
    for field in fields:
        if field.get("type") == field_type and (label is None or field.get("label") == label):
            field["value"] = [value]
            return
    fields.append({"type": field_type, "value": [value], **({"label": label} if label else {})})


def _with_rotation(user: PamUser, password: Secret, account_id: str, user_arn: str) -> Record:
    """The user's record carrying the rotation's fields, ready to save."""
    record = user.record
    fields = record.dict.setdefault("fields", [])
    _set_field(fields, "password", password.reveal())
    if not user.distinguished_name:
        _set_field(fields, "text", user_arn, label="distinguishedName")
    _set_field(record.dict.setdefault("custom", []), "text", account_id, label=ACCOUNT_FIELD_LABEL)
    record._update()
    return record


class KeeperVault:
    """One client device (one KSM config): its records, and the stage/commit/rollback of a rotation."""

    def __init__(self, config: str, timeout: float = 20.0) -> None:
        """Parse the config (no network). The SDK's errors may quote the config, so only their type is kept."""
        from keeper_secrets_manager_core import SecretsManager  # noqa: PLC0415 - see the module docstring
        from keeper_secrets_manager_core.configkeys import ConfigKeys  # noqa: PLC0415
        from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage  # noqa: PLC0415

        from .pacing import device_id  # noqa: PLC0415 - with the SDK

        remember_ksm_config(config)
        try:
            self._sm = SecretsManager(config=InMemoryKeyValueStorage(config))
            client_id = str(self._sm.config.get(ConfigKeys.KEY_CLIENT_ID) or "")
            app_key = str(self._sm.config.get(ConfigKeys.KEY_APP_KEY) or "")
        except Exception as error:
            raise KeeperCallError(
                f"the KSM config is not a usable KSM client configuration ({type(error).__name__}); "
                "store the base64 (or JSON) config of a bound KSM client device"
            ) from None
        self._transport = _Transport(timeout, device_id(client_id))
        self._sm.post_function = self._transport
        # Devices of one KSM application see the same records (devices.py): a digest of its key, never the key
        self.application = device_id(app_key) if app_key else self.device

    @property
    def device(self) -> str:
        """The client device's name in the pacing table (a digest of its clientId)."""
        return self._transport.device

    def pace(self, pacer: Pacer | None) -> None:
        """Send every later request only when `pacer` grants it (None: unpaced)."""
        self._transport.pacer = pacer

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeeperThrottledError:
            raise
        except Exception as error:
            raise KeeperCallError(f"{action}: {type(error).__name__}: {str(error)[:300]}") from None

    def fetch(self, uids: Sequence[str], links: bool = False) -> dict[str, PamUser]:
        """The requested records that the KSM application can see, by uid (absent uids are not shared or do not
        exist: Keeper does not distinguish). `links`: with their links, the reads that lead to a rotation
        (keeperpam.py)."""
        records: Iterable[Record] = self._read(list(uids), None, links) if uids else []
        return {str(r.uid): PamUser(r) for r in records}

    def fetch_all(self, folder_uids: Sequence[str] = (), links: bool = False) -> list[PamUser]:
        """Every record the application sees, or only those in the given shared folders."""
        users = [PamUser(r) for r in self._read(None, list(folder_uids) or None, links)]
        if folder_uids:  # subfolders report their shared folder too; keep only what was asked for
            users = [u for u in users if u.folder_uids & set(folder_uids)]
        return users

    def _read(self, uids: list[str] | None, folder_uids: list[str] | None, links: bool) -> Iterable[Record]:
        from keeper_secrets_manager_core.dto.payload import QueryOptions  # noqa: PLC0415 - loaded with the vault

        options = QueryOptions(records_filter=uids, folders_filter=folder_uids, request_links=links or None)
        records: Iterable[Record] = self._call("read records", self._sm.get_secrets_with_options, options)
        return records

    def visible_folder_uids(self) -> set[str]:
        """The shared folders the application sees, and the subfolders its records sit in: tells a mistyped or
        unshared folder uid apart from a folder that holds no pamUser records."""
        response = self._call("read folders", self._sm.get_secrets, None, full_response=True)
        shared = {str(folder.uid) for folder in response.folders or []}
        return shared | {uid for record in response.records or [] for uid in PamUser(record).folder_uids}

    def committed_password(self, uid: str) -> Secret | None:
        """Re-read the record: what every other Keeper reader sees now."""
        user = self.fetch([uid]).get(uid)
        return user.password if user else None

    def stage(self, user: PamUser, password: Secret, account_id: str, user_arn: str) -> None:
        """Stage (not yet apply) the new password, the account id and, if empty, the user ARN as one update.

        When Keeper refuses and a staged update is pending (left by a run that died), roll that one back and stage
        again on a fresh copy of the record: a dead run's transaction must not block the record forever.
        """
        try:
            self._sm.save(_with_rotation(user, password, account_id, user_arn), transaction_type=ROTATION_TRANSACTION)
            return
        except KeeperThrottledError:
            raise
        except Exception as error:
            first = f"stage update: {type(error).__name__}: {str(error)[:300]}"
        try:
            self._sm.complete_transaction(user.uid, rollback=True)
        except Exception:
            raise KeeperCallError(first) from None  # nothing was pending: the first error is the real one
        refreshed = self.fetch([user.uid]).get(user.uid)
        if refreshed is None:
            raise KeeperCallError("stage update: the record is no longer shared with the application")
        user.record = refreshed.record
        record = _with_rotation(user, password, account_id, user_arn)
        self._call("stage update", self._sm.save, record, transaction_type=ROTATION_TRANSACTION)

    def commit(self, uid: str) -> None:
        self._call("commit update", self._sm.complete_transaction, uid)

    def rollback(self, uid: str) -> None:
        self._call("roll back update", self._sm.complete_transaction, uid, rollback=True)


@lru_cache(maxsize=MAX_DEVICES)
def vault_for(ksm_config: str, timeout: float) -> KeeperVault:
    """One Keeper connection per distinct config (client device): a rotated KSM config gets a new client, an
    unchanged one keeps its keep-alive session across warm invocations."""
    return KeeperVault(ksm_config, timeout=timeout)
