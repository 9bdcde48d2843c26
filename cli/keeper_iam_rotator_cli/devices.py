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
from keeper_iam_rotator.errors import AWS_ERRORS
from keeper_iam_rotator.settings import Settings

from .aws import aws_error, stack_outputs
from .errors import EXIT_FAILED, CliError
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


def capacity(settings: Settings, devices: int, records: int) -> Check:
    """Keeper capacity (rotations per day, at the pace the function keeps) against the fleet's need (records ÷
    RotationPeriodDays): `devices` listed client devices, `records` pamUser records one of them sees."""
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
    problems = []
    if need > per_device * devices:
        problems.append("more than the devices can rotate: add devices (init --add-device) or lengthen the period")
    if records > RECOMMENDED_RECORDS:
        problems.append(f"the device sees {records} records; Keeper recommends at most {RECOMMENDED_RECORDS} per app")
    verdict = Verdict.WARN if problems else Verdict.PASS
    return Check("keeper-capacity", verdict, "; ".join([detail, *problems]))


def protect_message(arn: str, devices: DeviceList) -> list[str]:
    return [
        f"Added client device {len(devices.secrets) + 1} to stack {devices.stack}: {arn}",
        "It has the resource policy of the stack's first config secret.",
        "Deploy with:",
        f"  .venv-sam/bin/sam deploy --parameter-overrides KsmConfigSecretArn={devices.with_device(arn)}",
    ]
