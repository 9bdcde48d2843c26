"""Envelope encryption of the passwords a journal entry holds while a rotation is unfinished.

One KMS GenerateDataKey per invocation (on its first seal), AES-GCM locally for every entry, with the user ARN and
record uid as associated data, so an entry cannot be decrypted as another user's or record's. Opening an entry
(recovery only) costs one KMS Decrypt per distinct data key.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .errors import AWS_ERRORS, JournalUnavailableError, aws_error_code
from .sensitive import Secret

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEY_CONTEXT: Final = {"purpose": "keeper-iam-rotator-journal"}  # KMS encryption context of every data key
NONCE_BYTES: Final = 12


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


class Sealer:
    """Seals and opens journal passwords; one per invocation, shared by every record's thread."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id
        self._ciphers: dict[bytes, AESGCM] = {}  # KMS-encrypted data key -> its cipher, for this invocation
        self._data_key = b""  # the encrypted data key this invocation seals with (made on first use)
        self._lock = threading.Lock()

    def seal(self, user_arn: str, record_uid: str, passwords: list[Secret]) -> Sealed:
        data_key, cipher = self._sealing_key()
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps({"passwords": [p.reveal() for p in passwords]}).encode()
        return Sealed(data_key, nonce, cipher.encrypt(nonce, plaintext, _associated_data(user_arn, record_uid)))

    def open(self, sealed: Sealed, user_arn: str, record_uid: str) -> list[Secret]:
        """The sealed passwords, oldest first; JournalUnavailableError if they were sealed for another user or
        record, or KMS refuses the data key."""
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - loaded with the key, see _cipher

        cipher = self._opening_key(sealed.data_key)
        try:
            plaintext = cipher.decrypt(sealed.nonce, sealed.ciphertext, _associated_data(user_arn, record_uid))
        except InvalidTag:
            raise JournalUnavailableError("the entry's passwords do not decrypt for this user and record") from None
        return [Secret(p) for p in json.loads(plaintext)["passwords"]]

    def _sealing_key(self) -> tuple[bytes, AESGCM]:
        """This invocation's data key: one GenerateDataKey, on the first seal."""
        with self._lock:
            if not self._data_key:
                try:
                    generated = self._kms.generate_data_key(
                        KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=DATA_KEY_CONTEXT
                    )
                except AWS_ERRORS as error:
                    raise JournalUnavailableError(f"KMS GenerateDataKey failed: {aws_error_code(error)}") from None
                self._data_key = generated["CiphertextBlob"]
                self._ciphers[self._data_key] = _cipher(generated["Plaintext"])
            return self._data_key, self._ciphers[self._data_key]

    def _opening_key(self, data_key: bytes) -> AESGCM:
        """The cipher for an entry's data key: ours, one already decrypted, or one KMS Decrypt (recovery only)."""
        with self._lock:
            if data_key not in self._ciphers:
                try:
                    plaintext = self._kms.decrypt(  # KeyId: a data key sealed under any other KMS key is refused
                        CiphertextBlob=data_key, KeyId=self._key_id, EncryptionContext=DATA_KEY_CONTEXT
                    )
                except AWS_ERRORS as error:
                    raise JournalUnavailableError(f"KMS Decrypt failed: {aws_error_code(error)}") from None
                self._ciphers[data_key] = _cipher(plaintext["Plaintext"])
            return self._ciphers[data_key]


def _cipher(data_key: bytes) -> AESGCM:
    """AES-GCM under a data key. cryptography loads on first use: a run with nothing to journal never needs it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    return AESGCM(data_key)


def _associated_data(user_arn: str, record_uid: str) -> bytes:
    return json.dumps({"userArn": user_arn, "recordUid": record_uid}, sort_keys=True).encode()
