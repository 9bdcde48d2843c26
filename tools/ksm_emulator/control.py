"""Plain-JSON control endpoint under ``/_emulator/`` (like moto's ``/moto-api/``) for out-of-process tests.

No authentication: the server only ever listens on loopback. Bodies are the keyword arguments of the ``Vault``
method of the same name (``POST throttle {"burst": 100, "quiet": 10}`` is ``vault.set_throttle(burst=100, quiet=10)``;
``{"burst": null}`` turns it off). ``GET throttle`` answers both models' settings and, by client device then endpoint,
the requests the limits saw and the throttled answers they gave (``throttled_total`` sums them).
"""

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol

from ksm_emulator.protocol import Response, error_response, json_response
from ksm_emulator.state import KsmError, Vault

CONTROL_PREFIX = "/_emulator/"


class Controlled(Protocol):
    """What the control endpoint drives: the server's vault and its client provisioning."""

    vault: Vault

    def client_config(self, json_form: bool = False) -> str: ...

    def one_time_token(self) -> str: ...


def handle_control(method: str, path: str, body: bytes, target: Controlled) -> Response:
    """Answer one control call; the body (if any) is a JSON object of keyword arguments."""
    vault = target.vault
    routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
        ("GET", "state"): lambda _: vault.dump(),
        ("GET", "calls"): lambda _: dict(vault.calls),
        ("POST", "reset-calls"): lambda _: vault.reset_calls(),
        ("GET", "throttle"): lambda _: vault.throttle_state(),
        ("POST", "throttle"): lambda args: vault.set_throttle(**args),
        ("POST", "rate-limit"): lambda args: vault.set_rate_limit(**args),
        ("POST", "reset"): lambda args: vault.reset(**args),
        ("POST", "faults"): lambda args: vault.inject_fault(**args),
        ("POST", "latency"): lambda args: vault.set_latency(args["seconds"]),
        ("POST", "pending-policy"): lambda args: setattr(vault, "pending_policy", args["policy"]),
        ("POST", "clients"): lambda _: {"config": target.client_config()},
        ("POST", "tokens"): lambda _: {"token": target.one_time_token()},
        ("POST", "records"): lambda args: {"uid": vault.add_record(**args)},
        ("POST", "links"): lambda args: vault.set_links(**args),
        ("POST", "pam-rotation"): lambda args: {"resource_uid": vault.set_pam_rotation(**args)},
    }
    name = path.removeprefix(CONTROL_PREFIX)
    handler = routes.get((method, name))
    if handler is None:
        known = {route for _, route in routes}
        if name in known:
            return error_response(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"{method} not allowed")
        return error_response(HTTPStatus.NOT_FOUND, "not_found", "Unknown emulator control endpoint.")
    try:
        args = json.loads(body) if body.strip() else {}
        if not isinstance(args, dict):
            raise TypeError("the body must be a JSON object")
        result = handler(args)
    except (ValueError, TypeError, KeyError) as err:
        return error_response(HTTPStatus.BAD_REQUEST, "bad_request", f"{type(err).__name__}: {err}")
    except KsmError as err:
        return error_response(err.status, err.error, err.message)
    return json_response(HTTPStatus.OK, {"ok": True} if result is None else result)
