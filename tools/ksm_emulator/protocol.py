"""The KSM REST routes as a pure request → response function (no sockets).

Request: ``TransmissionKey`` header (the AES key wrapped for the server key), body = AES-GCM under
that key, ``Authorization: Signature`` by the client's key over wrapped key ‖ body. Success replies
are encrypted with the same transmission key; errors are plain JSON, as the real service does.
"""

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec

from ksm_emulator import crypto
from ksm_emulator.links import encode as encode_link
from ksm_emulator.state import KSM_PATHS, Fault, KsmError, Record, Vault

KSM_PREFIX = "/api/rest/sm/v1/"
APP_TYPE = "general"
SIGNATURE_SCHEME = "Signature "

logger = logging.getLogger("ksm_emulator")

# What a request that fails to decrypt, parse or authenticate raises on its way to a 403.
_MALFORMED = (ValueError, KeyError, TypeError, InvalidTag)


@dataclass(frozen=True)
class Response:
    """What to answer; ``drop`` means close the connection without answering at all."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    drop: bool = False


@dataclass
class _Request:
    client_id: str
    transmission_key: bytes
    payload: dict[str, Any]
    binding_key: bytes | None  # the client's public key when this call redeems a one-time token
    bound_client_key: bytes | None = None  # set once the token is redeemed


class _AccessDenied(Exception):
    pass


def json_response(status: int, document: Any) -> Response:
    return Response(int(status), json.dumps(document).encode())


def error_response(status: int, error: str, message: str) -> Response:
    return json_response(status, {"error": error, "message": message})


def _access_denied(route: str, message: str) -> Response:
    return json_response(
        HTTPStatus.FORBIDDEN,
        {
            "path": KSM_PREFIX + route,
            "additional_info": "",
            "location": "default exception manager - api validation exception",
            "error": "access_denied",
            "message": message,
        },
    )


def throttled_response(retry_after: float) -> Response:
    """What the SDK retries by itself: 403 ``{"error": "throttled", "retry_after": seconds}``."""
    return json_response(
        HTTPStatus.FORBIDDEN,
        {"error": "throttled", "message": "Too many requests, slow down.", "retry_after": retry_after},
    )


def _fault_response(fault: Fault) -> Response:
    if fault.kind == "throttle":
        return throttled_response(fault.seconds)
    if fault.body is None:
        phrase = HTTPStatus(fault.status).phrase
        return error_response(fault.status, phrase.lower().replace(" ", "_"), phrase)
    if isinstance(fault.body, str | bytes):
        body = fault.body.encode() if isinstance(fault.body, str) else fault.body
        return Response(fault.status, body, "text/plain")
    return json_response(fault.status, fault.body)


class KsmProtocol:
    """Answers KSM calls for one vault, holding the server's transmission key pair."""

    def __init__(self, vault: Vault, server_key: ec.EllipticCurvePrivateKey) -> None:
        self.vault = vault
        self._server_key = server_key
        self._routes: dict[str, Callable[[_Request], dict[str, Any] | None]] = {
            "get_secret": self._get_secret,
            "update_secret": self._update_secret,
            "finalize_secret_update": self._finalize,
            "rollback_secret_update": self._rollback,
        }

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one POST to ``path``, applying latency and any injected fault first."""
        route = path.removeprefix(KSM_PREFIX) if path.startswith(KSM_PREFIX) else ""
        if route not in KSM_PATHS:
            return error_response(HTTPStatus.NOT_FOUND, "not_found", "Unknown Secrets Manager endpoint.")
        self.vault.count_call(route)
        if latency := self.vault.latency:
            time.sleep(latency)
        fault = self.vault.take_fault(route)
        if fault is not None:
            logger.info("fault %s on %s", fault.kind, route)
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            elif fault.kind == "drop":
                return Response(0, drop=True)
            elif fault.kind != "drop_after":
                return _fault_response(fault)
        response = self._answer(route, headers, body)
        logger.info("%s -> %d", route, response.status)
        if fault is not None and fault.kind == "drop_after":
            return Response(0, drop=True)
        return response

    def _answer(self, route: str, headers: Mapping[str, str], body: bytes) -> Response:
        try:
            request = self._open(headers, body)
            # Throttled before any effect: a redeemed token must not be spent on a request the client will retry.
            if (retry_after := self.vault.admit(request.client_id, route)) is not None:
                logger.info("%s throttled, retry after %.3fs", route, retry_after)
                return throttled_response(retry_after)
            self._bind(request)
        except _AccessDenied as denied:
            return _access_denied(route, str(denied))
        try:
            reply = self._routes[route](request)
        except KsmError as err:
            return error_response(err.status, err.error, err.message)
        except _MALFORMED:
            return error_response(HTTPStatus.BAD_REQUEST, "bad_request", "The request payload is malformed.")
        if reply is None:
            return Response(HTTPStatus.OK, content_type="application/octet-stream")
        encrypted = crypto.encrypt(json.dumps(reply).encode(), request.transmission_key)
        return Response(HTTPStatus.OK, encrypted, "application/octet-stream")

    def _open(self, headers: Mapping[str, str], body: bytes) -> _Request:
        """Unwrap, decrypt and authenticate (a one-time token's signature by the key the payload carries)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            wrapped = base64.b64decode(lowered["transmissionkey"], validate=True)
            authorization = lowered["authorization"]
            if not authorization.startswith(SIGNATURE_SCHEME):
                raise ValueError("not a signature")
            signature = base64.b64decode(authorization.removeprefix(SIGNATURE_SCHEME), validate=True)
            transmission_key = crypto.unwrap_transmission_key(self._server_key, wrapped)
            payload = json.loads(crypto.decrypt(body, transmission_key))
            client_id = payload["clientId"]
            binding_key = base64.b64decode(payload["publicKey"]) if payload.get("publicKey") else None
        except _MALFORMED as err:
            raise _AccessDenied("Signature is invalid") from err
        client = self.vault.client(client_id) if isinstance(client_id, str) else None
        if client is None:
            raise _AccessDenied("Client not found")
        if binding_key is not None and client.public_key is not None:
            raise _AccessDenied("The one-time token has already been used")
        public_key = binding_key or client.public_key
        if public_key is None or not crypto.signature_valid(public_key, wrapped + body, signature):
            raise _AccessDenied("Signature is invalid")
        return _Request(client_id, transmission_key, payload, binding_key)

    def _bind(self, request: _Request) -> None:
        """Redeem the one-time token the request carries a key for, if any."""
        if request.binding_key is None:
            return
        if not self.vault.bind(request.client_id, request.binding_key):
            raise _AccessDenied("The one-time token has already been used")
        client = self.vault.client(request.client_id)
        request.bound_client_key = client.client_key if client else None
        logger.info("client bound by one-time token")

    def _get_secret(self, request: _Request) -> dict[str, Any]:
        view = self.vault.read(request.payload.get("requestedRecords"), request.payload.get("requestedFolders"))
        app_key = self.vault.app_key
        with_links = request.payload.get("requestLinks") is True  # the SDK sends it only when asked, as true
        app_data = json.dumps({"title": view.app_title, "type": APP_TYPE}).encode()
        reply: dict[str, Any] = {
            "appData": crypto.urlsafe_b64(crypto.encrypt(app_data, app_key)),
            "records": [_record_json(record, app_key, with_links) for record in view.direct],
            "folders": [
                {
                    "folderUid": folder.uid,
                    "folderKey": crypto.b64(crypto.encrypt(folder.key, app_key)),
                    "records": [_record_json(record, folder.key, with_links) for record in records],
                }
                for folder, records in view.folders
            ],
        }
        if request.bound_client_key is not None:
            reply["encryptedAppKey"] = crypto.urlsafe_b64(crypto.encrypt(app_key, request.bound_client_key))
            reply["appOwnerPublicKey"] = crypto.urlsafe_b64(self.vault.owner_public_key)
        return reply

    def _update_secret(self, request: _Request) -> None:
        uid = request.payload["recordUid"]
        key = self.vault.record_key(uid)
        try:
            data = json.loads(crypto.decrypt(base64.b64decode(request.payload["data"]), key))
        except _MALFORMED as err:
            raise KsmError(HTTPStatus.BAD_REQUEST, "invalid_record_data", "The record data does not decrypt.") from err
        transactional = bool(request.payload.get("transactionType"))
        self.vault.update(uid, data, request.payload.get("revision"), transactional)
        logger.info("update_secret %s %s", uid, "staged" if transactional else "applied")

    def _finalize(self, request: _Request) -> None:
        self.vault.finalize(request.payload["recordUid"])

    def _rollback(self, request: _Request) -> None:
        self.vault.rollback(request.payload["recordUid"])


def _record_json(record: Record, wrapping_key: bytes, with_links: bool) -> dict[str, Any]:
    """One record as the service sends it; the record key is wrapped by the app or folder key. ``links`` only when
    the client asked for them."""
    document: dict[str, Any] = {
        "recordUid": record.uid,
        "recordKey": crypto.b64(crypto.encrypt(record.key, wrapping_key)),
        "data": crypto.b64(crypto.encrypt(json.dumps(record.committed).encode(), record.key)),
        "revision": record.revision,
        "isEditable": True,
        "files": [],
    }
    if with_links:
        document["links"] = [encode_link(link, record.key) for link in record.links]
    return document
