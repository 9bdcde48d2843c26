"""Server-side half of the KSM cryptography.

The SDK's ``CryptoUtils`` already holds the primitives; this module adds the inverse operations the
server needs (unwrapping the transmission key, verifying client signatures) and the encodings the
SDK expects for each field.
"""

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from keeper_secrets_manager_core.crypto import CryptoUtils
from keeper_secrets_manager_core.utils import generate_uid_bytes

CLIENT_ID_HASH_INPUT = b"KEEPER_SECRETS_MANAGER_CLIENT_ID"


def b64(data: bytes) -> str:
    """Standard, padded base64: what the SDK decodes with ``base64_to_bytes``."""
    return base64.b64encode(data).decode()


def urlsafe_b64(data: bytes) -> str:
    """URL-safe base64 without padding: what the SDK decodes with ``url_safe_str_to_bytes``."""
    return CryptoUtils.bytes_to_url_safe_str(data)


def new_uid() -> str:
    """A Keeper-style uid: 22 url-safe base64 characters of 16 random bytes."""
    return urlsafe_b64(generate_uid_bytes())


def new_key() -> bytes:
    """A random AES-256 key (app, folder, record, transmission and client keys are all this)."""
    return os.urandom(32)


def encrypt(data: bytes, key: bytes) -> bytes:
    """AES-256-GCM, returned as iv(12) ‖ ciphertext ‖ tag, exactly like ``CryptoUtils.encrypt_aes``."""
    return CryptoUtils.encrypt_aes(data, key)


def decrypt(data: bytes, key: bytes) -> bytes:
    """Inverse of :func:`encrypt`; raises ``cryptography.exceptions.InvalidTag`` on a wrong key."""
    return CryptoUtils.decrypt_aes(data, key)


def client_id_for(client_key: bytes) -> str:
    """The clientId a client derives from its one-time token (see ``SecretsManager._init``)."""
    return b64(hmac.new(client_key, CLIENT_ID_HASH_INPUT, hashlib.sha512).digest())


def public_point(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 65-byte uncompressed P-256 point, the form every KSM public key travels in."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def private_key_der(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS8 DER, the form of ``privateKey`` in a KSM config."""
    return private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key pair."""
    return ec.generate_private_key(ec.SECP256R1())


def unwrap_transmission_key(server_key: ec.EllipticCurvePrivateKey, wrapped: bytes) -> bytes:
    """Inverse of ``CryptoUtils.public_encrypt``: ephemeral point(65) ‖ iv(12) ‖ AES-GCM(SHA-256(ECDH x))."""
    return CryptoUtils.decrypt_ec(server_key, wrapped)


def signature_valid(public_point_bytes: bytes, signed: bytes, signature: bytes) -> bool:
    """Check an ECDSA P-256/SHA-256 DER signature made by ``CryptoUtils.sign``."""
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_point_bytes)
        key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
