"""The rotation journal: a DynamoDB item per IAM user that is both a lease (lock) and a durable, KMS-encrypted copy
of every password IAM might hold that Keeper has not committed yet.

Item (partition key `userArn`):
  recordUid, state ("pending" | "applied" | "closed"), secret (KMS ciphertext of {"passwords": [...]}),
  owner (invocation id), leaseUntil (epoch s), updatedAt, expiresAt (TTL, set only on closed items).
"pending": IAM holds Keeper's committed password or one of `passwords`. "applied": IAM holds `passwords[-1]`.
"closed": IAM holds Keeper's committed password; the item is history (no secret) and expires by TTL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .sensitive import Secret

PENDING, APPLIED, CLOSED = "pending", "applied", "closed"
HISTORY_SECONDS = 30 * 86400


class JournalError(Exception):
    """The journal could not be read or written (DynamoDB or KMS)."""


class LeaseHeld(Exception):
    """Another invocation holds this user's lease."""


class OwnedElsewhere(Exception):
    """The user was last rotated from another Keeper record."""

    def __init__(self, record_uid: str) -> None:
        super().__init__(record_uid)
        self.record_uid = record_uid


@dataclass
class Entry:
    user_arn: str
    record_uid: str
    state: str
    owner: str
    lease_until: float
    ciphertext: bytes = field(repr=False, default=b"")

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Entry:
        secret = item.get("secret")
        return cls(
            user_arn=item["userArn"]["S"],
            record_uid=item.get("recordUid", {}).get("S", ""),
            state=item.get("state", {}).get("S", CLOSED),
            owner=item.get("owner", {}).get("S", ""),
            lease_until=float(item.get("leaseUntil", {}).get("N", "0")),
            ciphertext=secret["B"] if secret else b"",
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

    # -- secrets -------------------------------------------------------------------------------------------------
    def _seal(self, user_arn: str, record_uid: str, passwords: list[Secret]) -> bytes:
        plaintext = json.dumps({"passwords": [p.reveal() for p in passwords]}).encode()
        try:
            return self._kms.encrypt(
                KeyId=self._key_id, Plaintext=plaintext, EncryptionContext=_context(user_arn, record_uid)
            )["CiphertextBlob"]
        except (ClientError, BotoCoreError) as error:
            raise JournalError(f"KMS Encrypt failed: {_code(error)}") from None

    def passwords(self, entry: Entry) -> list[Secret]:
        """Decrypt the entry's passwords (oldest first; the last is the one being applied)."""
        try:
            plaintext = self._kms.decrypt(
                CiphertextBlob=entry.ciphertext, EncryptionContext=_context(entry.user_arn, entry.record_uid)
            )["Plaintext"]
        except (ClientError, BotoCoreError) as error:
            raise JournalError(f"KMS Decrypt failed: {_code(error)}") from None
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
        entry.ciphertext = self._seal(user_arn, record_uid, [password])
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
        claimed = Entry(entry.user_arn, entry.record_uid, entry.state, owner, now + lease_seconds, entry.ciphertext)
        self._write(claimed, expected_owner=entry.owner, now=now, extra="AND leaseUntil <= :now")
        return claimed

    def update(self, entry: Entry, state: str, passwords: list[Secret] | None = None) -> None:
        """Move the entry to `state` (and replace its passwords), only while we still own it."""
        if passwords is not None:
            entry.ciphertext = self._seal(entry.user_arn, entry.record_uid, passwords)
        entry.state = state
        self._write(entry, expected_owner=entry.owner, now=self._clock())

    def close(self, entry: Entry) -> None:
        """IAM now holds Keeper's committed password: drop the secret, keep a short history item."""
        entry.state, entry.ciphertext = CLOSED, b""
        self._write(entry, expected_owner=entry.owner, now=self._clock())

    def open_entries(self) -> Iterator[Entry]:
        try:
            for page in self._ddb.get_paginator("scan").paginate(
                TableName=self._table,
                FilterExpression="#s <> :closed",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":closed": {"S": CLOSED}},
                ConsistentRead=True,
            ):
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
        if entry.ciphertext:
            item["secret"] = {"B": entry.ciphertext}
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


def _context(user_arn: str, record_uid: str) -> dict[str, str]:
    return {"userArn": user_arn, "recordUid": record_uid}


def _code(error: ClientError | BotoCoreError) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__
