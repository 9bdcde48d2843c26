"""Several KSM client devices (KsmConfigSecretArn lists one secret per device): `init --add-device` and `check`'s
capacity line.

Keeper throttles each client device on its own, so a fleet grows its Keeper capacity by adding devices (of the same
KSM application or another). A device added here gets the same resource policy as the stack's first config secret
(only the function reads it; only the admin role writes it, when the stack names one): the stack itself can only put
its policy on one secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from keeper_iam_rotator import budget
from keeper_iam_rotator.errors import AWS_ERRORS, KeeperCallError
from keeper_iam_rotator.keeper import KeeperVault, PamUser, RecordType
from keeper_iam_rotator.settings import Settings

from .aws import aws_error, stack_outputs
from .errors import EXIT_FAILED, CliError
from .resolve import ConfigSource, Target
from .steering import keeper_host
from .verdicts import Check, Verdict

RECOMMENDED_RECORDS: Final = 500  # Keeper's advice: at most 500 records per KSM application
DAY: Final = 86400


@dataclass(frozen=True)
class DeviceList:
    """The stack's config secrets (one per client device), before a new one is added."""

    stack: str
    secrets: tuple[str, ...]

    @classmethod
    def of_stack(cls, cloudformation: Any, stack: str) -> DeviceList:
        listed = stack_outputs(cloudformation, stack).get("ConfigSecretArn", "")
        secrets = tuple(part.strip() for part in listed.split(",") if part.strip())
        if not secrets:
            raise CliError(f"stack {stack} has no ConfigSecretArn output: deploy it first, then add devices")
        return cls(stack, secrets)

    def require_new(self, secret_name: str) -> None:
        """Checked before the token is spent: the new device's secret must not be one already listed."""
        if any(secret_name in (arn, _name_of(arn)) for arn in self.secrets):
            raise CliError(f"{secret_name} is already one of the stack's config secrets: give a new --secret-name")

    def protect(self, secretsmanager: Any, arn: str) -> None:
        """Put the first secret's resource policy on the new one (never weaker than the stack's)."""
        try:
            policy = secretsmanager.get_resource_policy(SecretId=self.secrets[0]).get("ResourcePolicy")
            if policy:
                secretsmanager.put_resource_policy(SecretId=arn, ResourcePolicy=policy, BlockPublicPolicy=True)
        except AWS_ERRORS as error:
            raise CliError(
                f"{aws_error('Secrets Manager resource policy', error)}: the new device's secret {arn} is stored but "
                f"not yet protected like {self.secrets[0]}: copy that resource policy onto it before deploying",
                EXIT_FAILED,
            ) from None

    def with_device(self, arn: str) -> str:
        return ",".join((*self.secrets, arn))


def _name_of(arn: str) -> str:
    """A secret ARN's name, without the 6-character suffix Secrets Manager adds."""
    name = arn.split(":secret:", 1)[-1]
    return name[:-7] if len(name) > 7 and name[-7] == "-" else name


def device_checks(target: Target, own: list[PamUser], settings: Settings) -> list[Check]:
    """One line per client device the deployment lists: the records it sees (warn above 500), or why they are not
    counted here; then the capacity of them all against the fleet's need."""
    seen = {user.uid for user in own}
    checks = [device_check(1, target.config.label, len(own))]
    others = [secret for secret in target.devices if secret != target.config.secret_id]
    for number, secret in enumerate(others, start=2):
        check, users = _other_device(number, secret, target, settings)
        checks.append(check)
        seen |= {user.uid for user in users}
    return [*checks, capacity(settings, max(len(target.devices), 1), len(seen))]


def device_check(number: int, label: str, records: int) -> Check:
    many = records > RECOMMENDED_RECORDS
    detail = f"{label}: sees {records} pamUser record(s)" + (
        f"; Keeper recommends at most {RECOMMENDED_RECORDS} per KSM application" if many else ""
    )
    return Check(f"keeper-device {number}", Verdict.WARN if many else Verdict.PASS, detail)


def _other_device(number: int, secret: str, target: Target, settings: Settings) -> tuple[Check, list[PamUser]]:
    """A listed device besides the CLI's own: read only if this caller may read its secret (the stack's resource
    policy lets only the function), and only from a Keeper the function would talk to."""
    name = f"keeper-device {number}"
    try:
        config = ConfigSource(secret_id=secret).read(target.clients)
    except CliError as error:  # the usual case: the stack's resource policy lets only the function read it
        return Check(name, Verdict.SKIP, f"its records are not counted here: {error.message}"), []
    host = keeper_host(config, target.keeper_region)
    if host.result is not Verdict.PASS:
        return Check(name, Verdict.FAIL, f"secret {secret}: {host.detail}"), []
    try:
        users = KeeperVault(config, settings.keeper_timeout).fetch_all(settings.folder_uids)
    except KeeperCallError as error:
        return Check(name, Verdict.FAIL, f"secret {secret}: cannot read records: {error}"), []
    pam_users = [user for user in users if user.type == RecordType.PAM_USER]
    return device_check(number, f"secret {secret}", len(pam_users)), pam_users


def capacity(settings: Settings, devices: int, records: int) -> Check:
    """Keeper capacity (rotations per day, at the pace the function keeps) against the fleet's need (records ÷
    RotationPeriodDays): `devices` listed client devices, `records` the pamUser records they see."""
    limits = settings.keeper_limits
    per_device = limits.rotations_per_second() * DAY * (1 - budget.HEADROOM)
    need = records / settings.rotation_period_days
    pace = f"burst {limits.burst} per {limits.quiet:g} s per endpoint"
    if limits.per_minute:
        pace += f", {limits.per_minute} requests per minute"
    detail = (
        f"{devices} client device(s), each paced at {pace}: about {per_device * devices:,.0f} rotations/day "
        f"({per_device:,.0f} per device, 25% kept for the API and recovery); the fleet needs {need:,.1f}/day "
        f"({records} records every {settings.rotation_period_days} days)"
    )
    if need > per_device * devices:
        detail += "; more than the devices can rotate: add devices (init --add-device) or lengthen the period"
        return Check("keeper-capacity", Verdict.WARN, detail)
    return Check("keeper-capacity", Verdict.PASS, detail)


def protect_message(arn: str, devices: DeviceList) -> list[str]:
    return [
        f"Added client device {len(devices.secrets) + 1} to stack {devices.stack}: {arn}",
        "It has the resource policy of the stack's first config secret.",
        "Deploy with:",
        f"  .venv-sam/bin/sam deploy --parameter-overrides KsmConfigSecretArn={devices.with_device(arn)}",
    ]
