"""Which Keeper the rotator may talk to: the KSM config is pinned to Keeper's own hosts and server keys.

The function writes every new password wherever its KSM config points, and the KSM SDK trusts whatever the config
says: its `hostname` and its `serverPublicKey`. Whoever can write the config secret could otherwise aim the rotator
at a server of their own. So before a vault is built, the config must name the host of the deployment's Keeper
region (KeeperRegion: the SDK's own table of Keeper hosts) and either no server key (the SDK then uses Keeper's
built-in keys) or one of Keeper's published keys (the SDK's table again). Anything else is refused
(`ksm_config_untrusted`) before any Keeper call.

The sandbox (the KSM emulator on loopback) is let in by one test-only setting, SANDBOX_KEEPER_HOST, honoured only on
a loopback address and only outside a real Lambda (there AWS_LAMBDA_FUNCTION_NAME is set and AWS_SAM_LOCAL is not;
`sam local invoke` sets AWS_SAM_LOCAL). template.yaml never sets it (tests/test_steering_template.py).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
from collections.abc import Mapping
from typing import Any, Final

from .errors import KsmConfigUnavailableError, KsmConfigUntrustedError

SANDBOX_HOST_VARIABLE: Final = "SANDBOX_KEEPER_HOST"
HTTPS_PORT: Final = ":443"


def keeper_hosts() -> dict[str, str]:
    """Keeper's regions and their hosts, as the KSM SDK knows them (US, EU, AU, GOV, JP, CA, IL5)."""
    from keeper_secrets_manager_core.keeper_globals import keeper_servers  # noqa: PLC0415 - loads the SDK

    return dict(keeper_servers)


def keeper_public_keys() -> set[str]:
    """Keeper's published server public keys (url-safe base64, padding dropped), as the KSM SDK knows them."""
    from keeper_secrets_manager_core.keeper_globals import keeper_public_keys as keys  # noqa: PLC0415

    return {key.rstrip("=") for key in keys.values()}


def require_trusted(config: str, region: str | None, env: Mapping[str, str] | None = None) -> str:
    """The Keeper host the config makes the SDK talk to, if it is trusted: `region`'s host (None: any Keeper
    region's, what the CLI accepts when it does not know the deployment's region) with Keeper's keys, or the
    sandbox's loopback host where that is allowed. KsmConfigUntrustedError otherwise; the message names hosts and
    regions, never the config."""
    env = os.environ if env is None else env
    parsed = _parse(config)
    host = effective_host(parsed, env)
    sandbox = sandbox_host(env)
    if sandbox is not None and host == sandbox:
        return host
    hosts = keeper_hosts()
    if region is not None and region not in hosts:
        raise KsmConfigUntrustedError(f"KEEPER_REGION {region[:20]!r} is not a Keeper region ({', '.join(hosts)})")
    allowed = {hosts[region]} if region is not None else set(hosts.values())
    if host not in allowed:
        where = f"Keeper's {region} host {hosts[region]}" if region is not None else "a Keeper host"
        raise KsmConfigUntrustedError(f"the KSM config points at {host[:100]!r}, not {where}")
    key = parsed.get("serverPublicKey")
    if key and str(key).rstrip("=") not in keeper_public_keys():
        raise KsmConfigUntrustedError("the KSM config carries a server public key that is not one of Keeper's")
    return host


def effective_host(parsed: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The host the SDK will send requests to (helpers.get_server: KSM_HOSTNAME, the config's hostname, US; a region
    name stands for its host; a URL for its network location), lower-cased, without a default HTTPS port."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    named = env.get("KSM_HOSTNAME") or str(parsed.get("hostname") or "") or "US"
    hosts = keeper_hosts()
    if named in hosts:
        return hosts[named]
    netloc = urlsplit(named if "http" in named else f"https://{named}").netloc.lower().rstrip(".")
    return netloc.removesuffix(HTTPS_PORT)


def sandbox_host(env: Mapping[str, str]) -> str | None:
    """SANDBOX_KEEPER_HOST, when it may be honoured: outside a real Lambda, and a loopback address."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    value = env.get(SANDBOX_HOST_VARIABLE, "").strip().lower()
    in_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME")) and not env.get("AWS_SAM_LOCAL")
    if not value or in_lambda:
        return None
    name = urlsplit(f"https://{value}").hostname or ""
    try:
        return value if name == "localhost" or ipaddress.ip_address(name).is_loopback else None
    except ValueError:
        return None


def _parse(config: str) -> dict[str, Any]:
    """The config's JSON (it is stored as JSON or as base64 of it); KsmConfigUnavailableError when it is neither."""
    text = config.strip()
    if not text.startswith("{"):
        try:
            text = base64.b64decode(text, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise KsmConfigUnavailableError("the KSM config is neither JSON nor base64 of JSON") from None
    try:
        parsed = json.loads(text)
    except ValueError:
        raise KsmConfigUnavailableError("the KSM config is not JSON") from None
    if not isinstance(parsed, dict):
        raise KsmConfigUnavailableError("the KSM config is not a JSON object")
    return parsed
