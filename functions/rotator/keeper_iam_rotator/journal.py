"""The rotation journal: a DynamoDB item per IAM user that is both a lease (lock) and a durable, encrypted copy of
every password IAM might hold that Keeper has not committed yet (sealed by sealing.py).

Item (partition key `userArn`):
  recordUid, state ("pending" | "closed"), owner (invocation id), leaseUntil (epoch s), openedAt (epoch s, when the
  rotation began), updatedAt, expiresAt (TTL, set only on closed items), rotatedAt (epoch s of the last successful
  rotation: kept on the closed item, read by "rotation when due"), passwordSetFrom/passwordSetUntil (epoch s: when
  that rotation's UpdateLoginProfile was sent and answered, read by drift.py), while pending the sealed passwords
  (dataKey, nonce, secret), and the integrity MACs `mac` and `ownerMac` (integrity.py).
"pending": IAM holds Keeper's committed password or one of the sealed passwords.
"closed": IAM holds Keeper's committed password; the item is history (no secret) and expires by TTL.

Every item read is verified. A tampered one (its MAC does not match) is reported and never used: not to skip a
record, not to hand a user to another record, not to rotate. An unsigned one (no MAC: written by the version before
the MAC, or stripped) is trusted for nothing but what its sealed passwords prove: closed, it counts as absent (the
user's next rotation re-signs it, a first binding); open, it is recovered only if its AES-GCM opens for its user and
record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from .errors import (
    AWS_ERRORS,
    AwsErrorCode,
    JournalTamperedError,
    JournalUnavailableError,
    LeaseHeldError,
    NotDueError,
    OwnedElsewhereError,
    aws_error_code,
    is_aws_error,
)
from .integrity import Integrity, Verdict
from .sealing import Sealed, Sealer
from .sensitive import Secret

HISTORY_SECONDS: Final = 400 * 86400  # closed items outlive the longest rotation period (365 days) with rotatedAt
log = logging.getLogger(__name__)


class EntryState(StrEnum):
    PENDING = "pending"
    CLOSED = "closed"


@dataclass
class Entry:
    user_arn: str
    record_uid: str
    state: EntryState
    owner: str
    lease_until: float
    sealed: Sealed | None = field(repr=False, default=None)
    rotated_at: float = 0.0
    password_set: tuple[float, float] | None = None  # when IAM took the last rotation's password: (sent, answered)
    opened_at: float = 0.0
    integrity: Verdict = Verdict.VERIFIED  # what the journal found when it read the item (integrity.py)
    previous_owner: str | None = None  # set by `open`: the record the journal named as the user's owner before

    @classmethod
    def from_item(cls, item: dict[str, Any], integrity: Verdict = Verdict.UNSIGNED) -> Entry:
        return cls(
            user_arn=item["userArn"]["S"],
            record_uid=item.get("recordUid", {}).get("S", ""),
            state=EntryState.CLOSED if item.get("state", {}).get("S") == EntryState.CLOSED else EntryState.PENDING,
            owner=item.get("owner", {}).get("S", ""),
            lease_until=float(item.get("leaseUntil", {}).get("N", "0")),
            sealed=Sealed.from_item(item),
            rotated_at=float(item.get("rotatedAt", {}).get("N", "0")),
            password_set=_window(item),
            opened_at=float(item.get("openedAt", item.get("updatedAt", {})).get("N", "0")),
            integrity=integrity,
        )

    @property
    def open(self) -> bool:
        return self.state is not EntryState.CLOSED

    @property
    def trusted_history(self) -> bool:
        """Its owner and last rotation may be used (verified); an unsigned or tampered item's may not."""
        return self.integrity is Verdict.VERIFIED


class Journal:
    def __init__(
        self,
        dynamodb: Any,
        kms: Any,
        table: str,
        key_id: str,
        mac_key_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = dynamodb
        self._table = table
        self._sealer = Sealer(kms, key_id)
        self._integrity = Integrity(kms, mac_key_id)
        self._clock = clock

    def passwords(self, entry: Entry) -> list[Secret]:
        """Decrypt the entry's passwords (oldest first; the last is the one being applied)."""
        if entry.sealed is None:
            raise JournalUnavailableError("the entry holds no sealed passwords (dataKey, nonce, secret)")
        return self._sealer.open(entry.sealed, entry.user_arn, entry.record_uid)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def open(
        self,
        user_arn: str,
        record_uid: str,
        password: Secret,
        owner: str,
        lease_seconds: float,
        adopt: str | None = None,
        rotated_before: float | None = None,
    ) -> Entry:
        """Create the entry holding `password` and take its lease.

        LeaseHeldError when an entry is already open: the caller then decides between "locked" (live lease) and
        recovery (`find`, `take_over`). OwnedElsewhereError when the user's last rotation came from another record,
        unless `adopt` names that record: the caller decided it no longer names the user. NotDueError when this
        record last rotated the user after `rotated_before`. JournalTamperedError when the item fails its integrity
        check. Ownership and due are checked inside the conditional write (`ownerMac`, `rotatedAt`): no extra call.
        """
        now = self._clock()
        entry = Entry(user_arn, record_uid, EntryState.PENDING, owner, now + lease_seconds, opened_at=now)
        entry.sealed = self._sealer.seal(user_arn, record_uid, [password])
        owner_mac = self._integrity.owner_mac(user_arn, adopt or record_uid)
        owned_by: dict[str, Any] = {":closed": {"S": EntryState.CLOSED}, ":mac": {"B": owner_mac}}
        condition = "#s = :closed AND ownerMac = :mac"
        if rotated_before is not None and adopt is None:
            condition += " AND (attribute_not_exists(rotatedAt) OR rotatedAt <= :before)"
            owned_by[":before"] = {"N": f"{rotated_before:.3f}"}
        replaced = self._put_new(entry, now, condition, owned_by)
        if replaced is not None:
            entry.previous_owner = adopt or (record_uid if replaced else None)
            return entry
        current = self._get(user_arn)
        if current is not None and current.integrity is Verdict.UNSIGNED and not current.open:
            return self._replace_unsigned(entry, now)
        raise self._refusal(current, record_uid, rotated_before)

    def _put_new(self, entry: Entry, now: float, condition: str, values: dict[str, Any]) -> dict[str, Any] | None:
        """Write a new entry where none is, or where `condition` holds: the item it replaced ({} when none), or
        None when the condition failed."""
        try:
            answer = self._ddb.put_item(
                TableName=self._table,
                Item=self._item(entry, now),
                ConditionExpression=f"attribute_not_exists(userArn) OR ({condition})",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",  # the item this one replaced, in the same call
            )
        except AWS_ERRORS as error:
            if not is_aws_error(error, AwsErrorCode.CONDITIONAL_CHECK_FAILED):
                raise JournalUnavailableError(f"DynamoDB PutItem failed: {aws_error_code(error)}") from None
            return None
        old: dict[str, Any] = answer.get("Attributes") or {}
        return old

    def _replace_unsigned(self, entry: Entry, now: float) -> Entry:
        """A closed item without a MAC: its owner and last rotation cannot be trusted, so it counts as absent (the
        user's first binding) and this rotation re-signs it: the one-time upgrade from the version before the MAC."""
        log.warning(
            "journal item without an integrity MAC (an earlier version's, or stripped): its owner and last rotation "
            "are ignored and this rotation re-signs it",
            extra={"user_arn": entry.user_arn},
        )
        closed = {":closed": {"S": EntryState.CLOSED}}
        if self._put_new(entry, now, "#s = :closed AND attribute_not_exists(mac)", closed) is None:
            raise LeaseHeldError(entry.user_arn)  # changed since we read it: another run is at it
        entry.previous_owner = None
        return entry

    @staticmethod
    def _refusal(current: Entry | None, record_uid: str, rotated_before: float | None) -> Exception:
        """Why `open` was refused, from the item as it is now."""
        if current is not None and current.integrity is Verdict.TAMPERED:
            return JournalTamperedError(current.user_arn)
        if current is None or current.open:
            return LeaseHeldError(current.user_arn if current else "")
        if current.record_uid != record_uid:
            return OwnedElsewhereError(current.record_uid)
        if rotated_before is not None and current.rotated_at > rotated_before:
            return NotDueError(current.rotated_at)
        return LeaseHeldError(current.user_arn)  # changed between the write and the read: another run is at it

    def find(self, user_arn: str) -> Entry | None:
        """The open entry for this user, if any; JournalTamperedError when its item fails its integrity check."""
        entry = self._get(user_arn)
        if entry is not None and entry.integrity is Verdict.TAMPERED:
            raise JournalTamperedError(user_arn)
        return entry if entry and entry.open else None

    def owner_of(self, user_arn: str) -> str | None:
        """The record that last rotated this user (open or closed entry), if the journal remembers one it can trust;
        JournalTamperedError when the item fails its integrity check."""
        entry = self._get(user_arn)
        if entry is not None and entry.integrity is Verdict.TAMPERED:
            raise JournalTamperedError(user_arn)
        return entry.record_uid if entry and entry.trusted_history else None

    def latest(self, user_arn: str) -> Entry | None:
        """The user's item, open or closed, when its history can be trusted: which record rotated the user last,
        and when (an unsigned item's is not known); JournalTamperedError when it fails its integrity check."""
        entry = self._get(user_arn)
        if entry is not None and entry.integrity is Verdict.TAMPERED:
            raise JournalTamperedError(user_arn)
        return entry if entry and entry.trusted_history else None

    def take_over(self, entry: Entry, owner: str, lease_seconds: float) -> Entry:
        """Claim an entry whose lease ran out (its invocation died); LeaseHeldError if it is still alive."""
        now = self._clock()
        if entry.lease_until > now:
            raise LeaseHeldError(entry.user_arn)
        claimed = Entry(
            entry.user_arn,
            entry.record_uid,
            entry.state,
            owner,
            now + lease_seconds,
            entry.sealed,
            rotated_at=entry.rotated_at,
            opened_at=entry.opened_at or now,
        )
        self._write(claimed, expected_owner=entry.owner, now=now, lease_expired=True)
        return claimed

    def replace_passwords(self, entry: Entry, passwords: list[Secret]) -> None:
        """Journal a new set of passwords for the entry, only while we still own it."""
        entry.sealed = self._sealer.seal(entry.user_arn, entry.record_uid, passwords)
        self._write(entry, expected_owner=entry.owner, now=self._clock())

    def close(self, entry: Entry, rotated: bool = False, password_set: tuple[float, float] | None = None) -> None:
        """IAM now holds Keeper's committed password: drop the secret, keep a history item (with the time, when
        `rotated`: the password changed and Keeper committed it, and when IAM took it, when this run set it)."""
        entry.state, entry.sealed = EntryState.CLOSED, None
        if rotated:
            entry.rotated_at, entry.password_set = self._clock(), password_set
        self._write(entry, expected_owner=entry.owner, now=self._clock())

    def open_entries(self) -> Iterator[Entry]:
        yield from self.entries(
            FilterExpression="#s <> :closed",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":closed": {"S": EntryState.CLOSED}},
        )

    def entries(self, **scan: Any) -> Iterator[Entry]:
        """Every item (open entries and history), in one Scan: what the scheduled run reads once. Each is verified
        (see Entry.integrity); the callers decide what an unsigned or tampered item may still be used for."""
        try:
            for page in self._ddb.get_paginator("scan").paginate(TableName=self._table, ConsistentRead=True, **scan):
                yield from (self._entry(item) for item in page.get("Items", []))
        except AWS_ERRORS as error:
            raise JournalUnavailableError(f"DynamoDB Scan failed: {aws_error_code(error)}") from None

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _get(self, user_arn: str) -> Entry | None:
        try:
            item = self._ddb.get_item(TableName=self._table, Key=_key(user_arn), ConsistentRead=True).get("Item")
        except AWS_ERRORS as error:
            raise JournalUnavailableError(f"DynamoDB GetItem failed: {aws_error_code(error)}") from None
        return self._entry(item) if item else None

    def _entry(self, item: dict[str, Any]) -> Entry:
        return Entry.from_item(item, self._integrity.verify(item))

    def _item(self, entry: Entry, now: float) -> dict[str, Any]:
        """The entry as a signed DynamoDB item."""
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
        if entry.opened_at:
            item["openedAt"] = {"N": f"{entry.opened_at:.3f}"}
        if entry.rotated_at:
            item["rotatedAt"] = {"N": f"{entry.rotated_at:.3f}"}
        if entry.password_set:
            item["passwordSetFrom"] = {"N": f"{entry.password_set[0]:.3f}"}
            item["passwordSetUntil"] = {"N": f"{entry.password_set[1]:.3f}"}
        if entry.state is EntryState.CLOSED:
            item["expiresAt"] = {"N": str(int(now + HISTORY_SECONDS))}
        return self._integrity.sign(item)

    def _write(self, entry: Entry, expected_owner: str, now: float, lease_expired: bool = False) -> None:
        """Write the entry only if `expected_owner` still holds it (and, taking it over, its lease has run out)."""
        values: dict[str, Any] = {":owner": {"S": expected_owner}}
        condition = "#o = :owner"
        if lease_expired:
            values[":now"] = {"N": f"{now:.3f}"}
            condition += " AND leaseUntil <= :now"
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=self._item(entry, now),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=values,
            )
        except AWS_ERRORS as error:
            if is_aws_error(error, AwsErrorCode.CONDITIONAL_CHECK_FAILED):
                raise LeaseHeldError(entry.user_arn) from None
            raise JournalUnavailableError(f"DynamoDB PutItem failed: {aws_error_code(error)}") from None


def _window(item: dict[str, Any]) -> tuple[float, float] | None:
    if "passwordSetFrom" not in item or "passwordSetUntil" not in item:
        return None
    return float(item["passwordSetFrom"]["N"]), float(item["passwordSetUntil"]["N"])


def _key(user_arn: str) -> dict[str, Any]:
    return {"userArn": {"S": user_arn}}
