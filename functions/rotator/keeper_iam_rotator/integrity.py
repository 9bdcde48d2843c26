"""The journal's integrity MAC: whoever can write the journal table must not be able to steer the rotator with it.

A journal item decides who owns a user (`recordUid`: the duplicate rule), whether a record is due (`rotatedAt`),
whether a password change was the rotation's own (`passwordSet*`, drift.py), whether a rotation is unfinished
(`state`) and whose lease it is (`owner`, `leaseUntil`). The sealed passwords are
already bound to their user and record by AES-GCM (sealing.py); every other field is covered by an HMAC-SHA256 the
function computes under a key only it can derive: KMS GenerateMac on the journal MAC key (an HMAC_256 KMS key whose
key policy lets only the function's role use it) over a fixed message. One GenerateMac per invocation that reads or
writes a journal item; verifying thousands of items of a scheduled run's Scan is local HMAC (microseconds each).

Each item carries `mac` (all those fields) and `ownerMac` (user ARN and record uid only): the journal's conditional
writes compare `ownerMac` with the value this record would have, so a forged owner is refused inside the write
itself, at no extra call.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from enum import StrEnum
from typing import Any, Final

from .errors import AWS_ERRORS, JournalUnavailableError, aws_error_code

DERIVATION_MESSAGE: Final = b"keeper-iam-rotator journal integrity v1"
SIGNED_FIELDS: Final = (
    "userArn",
    "recordUid",
    "state",
    "owner",
    "leaseUntil",
    "openedAt",
    "rotatedAt",
    "passwordSetFrom",  # drift.py: when IAM took the last rotation's password
    "passwordSetUntil",
)


class Verdict(StrEnum):
    VERIFIED = "verified"  # written by this rotator, unchanged since
    UNSIGNED = "unsigned"  # no MAC: written by an earlier version, or stripped; its fields are not trusted
    TAMPERED = "tampered"  # a MAC that does not match: changed by someone else; reported, never used


class Integrity:
    """Signs and verifies journal items; one per invocation (the derived key lives as long as it does)."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id
        self._key = b""
        self._lock = threading.Lock()

    def sign(self, item: dict[str, Any]) -> dict[str, Any]:
        """The item with its `mac` and `ownerMac`."""
        owner_mac = self.owner_mac(item["userArn"]["S"], item["recordUid"]["S"])
        return item | {"mac": {"B": self._mac(_message(item))}, "ownerMac": {"B": owner_mac}}

    def verify(self, item: dict[str, Any]) -> Verdict:
        mac, owner_mac = item.get("mac", {}).get("B"), item.get("ownerMac", {}).get("B")
        if mac is None and owner_mac is None:
            return Verdict.UNSIGNED
        if mac is None or owner_mac is None:
            return Verdict.TAMPERED
        expected_owner = self.owner_mac(item["userArn"]["S"], item.get("recordUid", {}).get("S", ""))
        genuine = hmac.compare_digest(bytes(mac), self._mac(_message(item)))
        return (
            Verdict.VERIFIED if genuine and hmac.compare_digest(bytes(owner_mac), expected_owner) else Verdict.TAMPERED
        )

    def owner_mac(self, user_arn: str, record_uid: str) -> bytes:
        """What a journal item owned by `record_uid` carries as `ownerMac`: conditional writes compare it."""
        return self._mac(b"owner\n" + user_arn.encode() + b"\n" + record_uid.encode())

    def _mac(self, message: bytes) -> bytes:
        return hmac.new(self._derived_key(), message, hashlib.sha256).digest()

    def _derived_key(self) -> bytes:
        """KMS GenerateMac of a fixed message under the journal MAC key: the same key in every invocation, known
        only to those the key policy lets use the KMS key."""
        with self._lock:
            if not self._key:
                try:
                    answer = self._kms.generate_mac(
                        KeyId=self._key_id, MacAlgorithm="HMAC_SHA_256", Message=DERIVATION_MESSAGE
                    )
                except AWS_ERRORS as error:
                    raise JournalUnavailableError(f"KMS GenerateMac failed: {aws_error_code(error)}") from None
                self._key = bytes(answer["Mac"])
            return self._key


def _message(item: dict[str, Any]) -> bytes:
    """The signed fields as the item stores them (DynamoDB's own strings: no float round trips)."""
    values = []
    for name in SIGNED_FIELDS:
        value = item.get(name) or {}
        values.append(f"{name}={value.get('S', value.get('N', ''))}")
    return "\n".join(["v1", *values]).encode()
