"""The rotation journal: a DynamoDB item per IAM user that is both a lease (lock) and a durable, encrypted copy of
every password IAM might hold that Keeper has not committed yet.

Item (partition key `userArn`):
  recordUid, state ("pending" | "closed"), owner (invocation id), leaseUntil (epoch s), updatedAt,
  expiresAt (TTL, set only on closed items), rotatedAt (epoch s of the last successful rotation: kept on the
  closed item, read by "rotation when due"), and while pending the sealed passwords:
  dataKey (KMS ciphertext of an AES-256 key), nonce, secret (AES-GCM of {"passwords": [...]}).
"pending": IAM holds Keeper's committed password or one of `passwords`.
"closed": IAM holds Keeper's committed password; the item is history (no secret) and expires by TTL.

Envelope encryption: one KMS GenerateDataKey per invocation (on its first write), AES-GCM locally for every entry,
with the user ARN and record uid as associated data, so an entry cannot be decrypted as another user's or record's
(what the KMS encryption context did when every entry was a KMS Encrypt). Reading an entry back (recovery only) costs
one KMS Decrypt per distinct data key.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .sensitive import Secret

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PENDING, CLOSED = "pending", "closed"
HISTORY_SECONDS = 400 * 86400  # closed items outlive the longest rotation period (365 days) with their rotatedAt
DATA_KEY_CONTEXT = {"purpose": "keeper-iam-rotator-journal"}  # KMS encryption context of every journal data key


class JournalError(Exception):
    """The journal could not be read or written (DynamoDB or KMS)."""


class LeaseHeld(Exception):
    """Another invocation holds this user's lease."""


class OwnedElsewhere(Exception):
    """The user was last rotated from another Keeper record."""

    def __init__(self, record_uid: str) -> None:
        super().__init__(record_uid)
        self.record_uid = record_uid


@dataclass(frozen=True)
class Sealed:
    """Passwords encrypted under a data key; only `data_key` (KMS-encrypted) can unlock `ciphertext`."""

    data_key: bytes
    nonce: bytes
    ciphertext: bytes

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Sealed | None:
        if not {"dataKey", "nonce", "secret"} <= item.keys():
            return None
        return cls(bytes(item["dataKey"]["B"]), bytes(item["nonce"]["B"]), bytes(item["secret"]["B"]))

    def to_item(self) -> dict[str, Any]:
        return {"dataKey": {"B": self.data_key}, "nonce": {"B": self.nonce}, "secret": {"B": self.ciphertext}}


@dataclass
class Entry:
    user_arn: str
    record_uid: str
    state: str
    owner: str
    lease_until: float
    sealed: Sealed | None = field(repr=False, default=None)
    rotated_at: float = 0.0

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Entry:
        return cls(
            user_arn=item["userArn"]["S"],
            record_uid=item.get("recordUid", {}).get("S", ""),
            state=item.get("state", {}).get("S", CLOSED),
            owner=item.get("owner", {}).get("S", ""),
            lease_until=float(item.get("leaseUntil", {}).get("N", "0")),
            sealed=Sealed.from_item(item),
            rotated_at=float(item.get("rotatedAt", {}).get("N", "0")),
        )

    @property
    def open(self) -> bool:
        return self.state != CLOSED


class Journal:
    def __init__(
        self, dynamodb: Any, kms: Any, table: str, key_id: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._ddb = dynamodb
        self._kms = kms
        self._table = table
        self._key_id = key_id
        self._clock = clock
        self._keys: dict[bytes, AESGCM] = {}  # KMS-encrypted data key -> its cipher, for this invocation
        self._data_key: bytes = b""  # the encrypted data key this invocation seals with (made on first use)
        self._keys_lock = threading.Lock()

    # -- secrets -------------------------------------------------------------------------------------------------
    def _sealing_key(self) -> tuple[bytes, AESGCM]:
        """This invocation's data key: one GenerateDataKey, on the first write, shared by every record's thread."""
        with self._keys_lock:
            if not self._data_key:
                try:
                    generated = self._kms.generate_data_key(
                        KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=DATA_KEY_CONTEXT
                    )
                except (ClientError, BotoCoreError) as error:
                    raise JournalError(f"KMS GenerateDataKey failed: {_code(error)}") from None
                self._data_key = generated["CiphertextBlob"]
                self._keys[self._data_key] = _cipher(generated["Plaintext"])
            return self._data_key, self._keys[self._data_key]

    def _opening_key(self, data_key: bytes) -> AESGCM:
        """The cipher for an entry's data key: ours, one already decrypted, or one KMS Decrypt (recovery only)."""
        with self._keys_lock:
            if data_key not in self._keys:
                try:
                    plaintext = self._kms.decrypt(CiphertextBlob=data_key, EncryptionContext=DATA_KEY_CONTEXT)
                except (ClientError, BotoCoreError) as error:
                    raise JournalError(f"KMS Decrypt failed: {_code(error)}") from None
                self._keys[data_key] = _cipher(plaintext["Plaintext"])
            return self._keys[data_key]

    def _seal(self, user_arn: str, record_uid: str, passwords: list[Secret]) -> Sealed:
        data_key, cipher = self._sealing_key()
        nonce = os.urandom(12)
        plaintext = json.dumps({"passwords": [p.reveal() for p in passwords]}).encode()
        return Sealed(data_key, nonce, cipher.encrypt(nonce, plaintext, _associated_data(user_arn, record_uid)))

    def passwords(self, entry: Entry) -> list[Secret]:
        """Decrypt the entry's passwords (oldest first; the last is the one being applied)."""
        if entry.sealed is None:
            raise JournalError("the entry holds no sealed passwords (dataKey, nonce, secret)")
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - loaded with the key, see _cipher

        cipher = self._opening_key(entry.sealed.data_key)
        try:
            plaintext = cipher.decrypt(
                entry.sealed.nonce, entry.sealed.ciphertext, _associated_data(entry.user_arn, entry.record_uid)
            )
        except InvalidTag:
            raise JournalError("the entry's passwords do not decrypt for this user and record") from None
        return [Secret(p) for p in json.loads(plaintext)["passwords"]]

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def open(
        self, user_arn: str, record_uid: str, password: Secret, owner: str, lease_seconds: float, adopt: bool = False
    ) -> Entry:
        """Create the entry holding `password` and take its lease.

        LeaseHeld when an entry is already open: the caller then decides between "locked" (live lease) and recovery
        (`find`, `take_over`). OwnedElsewhere when the user's last rotation came from another record, unless
        `adopt`: the caller decides whether that record still names the user.
        """
        now = self._clock()
        entry = Entry(user_arn, record_uid, PENDING, owner, now + lease_seconds)
        entry.sealed = self._seal(user_arn, record_uid, [password])
        closed = "#s = :closed" if adopt else "(#s = :closed AND recordUid = :uid)"
        values: dict[str, Any] = {":closed": {"S": CLOSED}} | ({} if adopt else {":uid": {"S": record_uid}})
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=self._item(entry, now),
                ConditionExpression=f"attribute_not_exists(userArn) OR {closed}",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=values,
            )
        except (ClientError, BotoCoreError) as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise JournalError(f"DynamoDB PutItem failed: {_code(error)}") from None
            current = self._get(user_arn)
            if current is None or current.open or current.record_uid == record_uid:
                raise LeaseHeld(user_arn) from None
            raise OwnedElsewhere(current.record_uid) from None
        return entry

    def find(self, user_arn: str) -> Entry | None:
        """The open entry for this user, if any."""
        entry = self._get(user_arn)
        return entry if entry and entry.open else None

    def owner_of(self, user_arn: str) -> str | None:
        """The record that last rotated this user (open or closed entry), if the journal remembers one."""
        entry = self._get(user_arn)
        return entry.record_uid if entry else None

    def _get(self, user_arn: str) -> Entry | None:
        try:
            item = self._ddb.get_item(TableName=self._table, Key=_key(user_arn), ConsistentRead=True).get("Item")
        except (ClientError, BotoCoreError) as error:
            raise JournalError(f"DynamoDB GetItem failed: {_code(error)}") from None
        return Entry.from_item(item) if item else None

    def take_over(self, entry: Entry, owner: str, lease_seconds: float) -> Entry:
        """Claim an entry whose lease ran out (its invocation died); LeaseHeld if it is still alive."""
        now = self._clock()
        if entry.lease_until > now:
            raise LeaseHeld(entry.user_arn)
        claimed = Entry(entry.user_arn, entry.record_uid, entry.state, owner, now + lease_seconds, entry.sealed)
        self._write(claimed, expected_owner=entry.owner, now=now, extra="AND leaseUntil <= :now")
        return claimed

    def replace_passwords(self, entry: Entry, passwords: list[Secret]) -> None:
        """Journal a new set of passwords for the entry, only while we still own it."""
        entry.sealed = self._seal(entry.user_arn, entry.record_uid, passwords)
        self._write(entry, expected_owner=entry.owner, now=self._clock())

    def close(self, entry: Entry, rotated: bool = False) -> None:
        """IAM now holds Keeper's committed password: drop the secret, keep a history item (with the time, when
        `rotated`: the password changed and Keeper committed it)."""
        entry.state, entry.sealed = CLOSED, None
        if rotated:
            entry.rotated_at = self._clock()
        self._write(entry, expected_owner=entry.owner, now=self._clock())

    def open_entries(self) -> Iterator[Entry]:
        yield from self.entries(
            FilterExpression="#s <> :closed",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":closed": {"S": CLOSED}},
        )

    def entries(self, **scan: Any) -> Iterator[Entry]:
        """Every item (open entries and history), in one Scan: what the scheduled run reads once."""
        try:
            for page in self._ddb.get_paginator("scan").paginate(TableName=self._table, ConsistentRead=True, **scan):
                yield from (Entry.from_item(item) for item in page.get("Items", []))
        except (ClientError, BotoCoreError) as error:
            raise JournalError(f"DynamoDB Scan failed: {_code(error)}") from None

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _item(self, entry: Entry, now: float) -> dict[str, Any]:
        item: dict[str, Any] = {
            **_key(entry.user_arn),
            "recordUid": {"S": entry.record_uid},
            "state": {"S": entry.state},
            "owner": {"S": entry.owner},
            "leaseUntil": {"N": f"{entry.lease_until:.3f}"},
            "updatedAt": {"N": f"{now:.3f}"},
        }
        if entry.sealed:
            item |= entry.sealed.to_item()
        if entry.rotated_at:
            item["rotatedAt"] = {"N": f"{entry.rotated_at:.3f}"}
        if entry.state == CLOSED:
            item["expiresAt"] = {"N": str(int(now + HISTORY_SECONDS))}
        return item

    def _write(self, entry: Entry, expected_owner: str, now: float, extra: str = "") -> None:
        values: dict[str, Any] = {":owner": {"S": expected_owner}}
        if extra:
            values[":now"] = {"N": f"{now:.3f}"}
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=self._item(entry, now),
                ConditionExpression=f"#o = :owner {extra}".strip(),
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=values,
            )
        except (ClientError, BotoCoreError) as error:
            if _code(error) == "ConditionalCheckFailedException":
                raise LeaseHeld(entry.user_arn) from None
            raise JournalError(f"DynamoDB PutItem failed: {_code(error)}") from None


def _key(user_arn: str) -> dict[str, Any]:
    return {"userArn": {"S": user_arn}}


def _cipher(data_key: bytes) -> AESGCM:
    """AES-GCM under a data key. cryptography loads on first use: a run with nothing to journal never needs it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    return AESGCM(data_key)


def _associated_data(user_arn: str, record_uid: str) -> bytes:
    return json.dumps({"userArn": user_arn, "recordUid": record_uid}, sort_keys=True).encode()


def _code(error: ClientError | BotoCoreError) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__
