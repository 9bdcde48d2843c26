"""`check`'s lines on who can steer the rotator: which Keeper the config names, who may rewrite the config secret,
and whether IAM opts users in (the README's "Who can steer the rotator")."""

from __future__ import annotations

import json
import os
from typing import Any, Final

from keeper_iam_rotator.errors import AWS_ERRORS, KsmConfigUnavailableError, KsmConfigUntrustedError
from keeper_iam_rotator.trust import require_trusted, sandbox_host

from .aws import aws_error
from .verdicts import Check, Verdict

CONFIG_WRITE: Final = "secretsmanager:PutSecretValue"


def keeper_host(config: str, region: str | None) -> Check:
    """The config must name Keeper's host (the deployment's region, when known) and Keeper's keys."""
    try:
        host = require_trusted(config, region)
    except (KsmConfigUntrustedError, KsmConfigUnavailableError) as error:
        return Check("keeper-host", Verdict.FAIL, f"ksm_config_untrusted: {error}; the function refuses this config")
    if host == sandbox_host(os.environ):
        detail = f"the config points at the sandbox's loopback Keeper {host} (SANDBOX_KEEPER_HOST; never in Lambda)"
        return Check("keeper-host", Verdict.PASS, detail)
    where = f"Keeper's {region} host" if region else "a Keeper host"
    return Check("keeper-host", Verdict.PASS, f"the config points at {host} ({where}) with Keeper's server keys")


def config_secret_policy(secretsmanager: Any, secret_id: str) -> Check:
    """The secret's resource policy must deny writing it to all but one administrator role (template.yaml's
    KsmConfigAdminRoleArn): whoever can write it chooses the Keeper application the rotator serves."""
    try:
        text = secretsmanager.get_resource_policy(SecretId=secret_id).get("ResourcePolicy")
    except AWS_ERRORS as error:
        return Check("config-secret-policy", Verdict.WARN, aws_error("Secrets Manager GetResourcePolicy", error))
    writers = _exempt_from_deny(json.loads(text) if text else {}, CONFIG_WRITE)
    if writers is None:
        detail = (
            "no resource policy limits who may write the config: any principal allowed secretsmanager:PutSecretValue "
            "can point the rotator at another Keeper application; deploy with KsmConfigAdminRoleArn"
        )
        return Check("config-secret-policy", Verdict.WARN, detail)
    return Check("config-secret-policy", Verdict.PASS, f"only {', '.join(writers)} may write the config")


def user_scope(required_tag: dict[str, str] | None) -> Check:
    """Two-party scope: IAM opts each user in with a tag, so a Keeper record alone cannot name an administrator.
    `required_tag`: the stack's (RequiredUserTag output), {} when it requires none, None when unknown."""
    if required_tag is None:
        return Check("user-scope", Verdict.SKIP, "not checked: give --stack NAME (its RequiredUserTag output)")
    if not required_tag:
        detail = (
            "UNSAFE: RequiredUserTagValue is empty, so every IAM user with a console password in RotatableUserPath "
            "is in scope and any Keeper folder editor can name one; set it (e.g. managed) and tag the users"
        )
        return Check("user-scope", Verdict.WARN, detail)
    tags = ", ".join(f"{key}={value}" for key, value in required_tag.items())
    return Check("user-scope", Verdict.PASS, f"only users tagged {tags} (IAM enforces it)")


def _exempt_from_deny(policy: dict[str, Any], action: str) -> list[str] | None:
    """The principals a `Deny` of `action` to everyone exempts (aws:PrincipalArn), or None when none denies it."""
    statements = policy.get("Statement") or []
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action") or []
        actions = actions if isinstance(actions, list) else [actions]
        everyone = statement.get("Principal") in ("*", {"AWS": "*"})
        if statement.get("Effect") == "Deny" and everyone and action in actions:
            exempt = statement.get("Condition", {}).get("ArnNotEquals", {}).get("aws:PrincipalArn", [])
            return exempt if isinstance(exempt, list) else [exempt]
    return None
