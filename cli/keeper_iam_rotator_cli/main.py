"""`keeper-iam-rotator`: the operator CLI. This module only wires click options to the command modules."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import aws
from .checks import Preflight
from .devices import DeviceList
from .errors import guarded, quiet_logging
from .init import initialise, read_token
from .invoke import call_deployed, choose_endpoint
from .render import show_checks, show_results
from .resolve import parse_pairs, resolve_target
from .rotate import check_uids, run_local


def _target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Where the KSM config and the journal are (shared by rotate and check)."""
    options = [
        click.option(
            "--config-secret", metavar="ID", help="Secrets Manager secret (name or ARN) holding the KSM config."
        ),
        click.option(
            "--config-file",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="PATH",
            help="Local KSM config file (base64 or JSON). Default: env KSM_CONFIG, then the stack's secret.",
        ),
        click.option("--journal-table", metavar="NAME", help="Journal DynamoDB table (default: the stack's)."),
        click.option("--journal-key", metavar="ID", help="Journal KMS key id/ARN/alias (default: the stack's)."),
        click.option("--stack", metavar="NAME", help="Read the secret, table and key from this SAM stack's outputs."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="keeper-iam-rotator")
def cli() -> None:
    """Operate keeper-iam-rotator: rotate IAM console passwords into Keeper PAM User records.

    AWS credentials and region are boto3's (AWS_PROFILE, AWS_REGION or AWS_DEFAULT_REGION, ...).
    """
    quiet_logging()


@cli.command(short_help="Rotate now, locally, with your AWS credentials.")
@click.option("--record", "records", multiple=True, metavar="UID", help="Record to rotate (repeatable).")
@click.option("--folder", "folders", multiple=True, metavar="UID", help="Without --record: only this shared folder.")
@click.option(
    "--all", "rotate_all", is_flag=True, help="Without --record: every record in scope, due or not (default: due ones)."
)
@click.option("--dry-run", is_flag=True, help="Plan only: check every record and generate, change nothing.")
@click.option(
    "--bind",
    is_flag=True,
    help="With --record: also bind records that have only a login (writes the IAM user's ARN into the record).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the Lambda's answer exactly: results and summary.")
@_target_options
@guarded
def rotate(
    records: tuple[str, ...],
    folders: tuple[str, ...],
    rotate_all: bool,
    dry_run: bool,
    bind: bool,
    as_json: bool,
    config_secret: str | None,
    config_file: Path | None,
    journal_table: str | None,
    journal_key: str | None,
    stack: str | None,
) -> None:
    """Rotate now, locally: the same code as the Lambda, with your AWS credentials.

    With --record, those records are rotated, due or not, like a direct invoke; a record with only a login (no
    distinguishedName) is skipped (not_bound) unless --bind: pamUser records also hold AD, Linux and database
    accounts. Without --record, the pamUser records the KSM application sees (or those in --folder) that are due
    are rotated, like the scheduled run; records rotated within their rotation period are left alone and counted,
    unless --all. Exit 0 only if every record was rotated (or planned, with --dry-run) or left alone as not due; 1
    otherwise; 2 for bad input or configuration (then nothing was changed).
    """
    uids = check_uids(records)
    if folders and uids:
        raise click.UsageError("--folder selects records when no --record is given; do not combine them")
    if rotate_all and uids:
        raise click.UsageError("--all selects every record in scope; named --record ones are rotated anyway")
    if bind and not uids:
        raise click.UsageError("--bind binds the records named with --record; the schedule never binds")
    check_uids(folders, "--folder")
    target = resolve_target(aws.clients(), config_secret, config_file, journal_table, journal_key, stack)
    document = run_local(target, uids, folders, dry_run, rotate_all, bind)
    sys.exit(show_results(document, as_json, "Dry run: planned rotations" if dry_run else "Rotation results"))


@cli.command(short_help="Preflight that changes nothing: config, records, users, policy, journal, permissions.")
@click.option("--record", "records", multiple=True, metavar="UID", help="Record to check (default: all in scope).")
@click.option("--folder", "folders", multiple=True, metavar="UID", help="Without --record: only this shared folder.")
@click.option("--user-path", metavar="/PATH/", help="Require every IAM user to be under this path.")
@click.option(
    "--required-tag",
    "required_tags",
    multiple=True,
    metavar="KEY=VALUE",
    help="Require this user tag (default: the stack's RequiredUserTag).",
)
@click.option(
    "--role-arn",
    metavar="ARN",
    help="Simulate permissions for this role (default: the stack's RotatorRoleArn, else you).",
)
@click.option(
    "--idempotency-table", metavar="NAME", help="Idempotency DynamoDB table to check (default: the stack's, if any)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@_target_options
@guarded
def check(
    records: tuple[str, ...],
    folders: tuple[str, ...],
    user_path: str | None,
    required_tags: tuple[str, ...],
    role_arn: str | None,
    idempotency_table: str | None,
    as_json: bool,
    config_secret: str | None,
    config_file: Path | None,
    journal_table: str | None,
    journal_key: str | None,
    stack: str | None,
) -> None:
    """Preflight that changes nothing: can a rotation run, and would it succeed?

    Checks the KSM config, the records the application sees, each IAM user (exists, has a console password, in
    scope), the password policy, the journal table and KMS key, the idempotency table, and (via
    iam:SimulatePrincipalPolicy) the permissions of the function's role (with --stack) or --role-arn or yours.
    Exit 0 if no check FAILed, 1 otherwise, 2 for bad input.
    """
    uids = check_uids(records)
    check_uids(folders, "--folder")
    if user_path is not None and not (user_path.startswith("/") and user_path.endswith("/")):
        raise click.BadParameter("a user path starts and ends with '/', like /rotatable/", param_hint="--user-path")
    explicit_tags = parse_pairs(required_tags, "--required-tag")
    target = resolve_target(
        aws.clients(), config_secret, config_file, journal_table, journal_key, stack, idempotency_table
    )
    tags = explicit_tags or target.required_user_tag or {}
    preflight = Preflight(target, uids, folders, user_path, tags, role_arn or target.outputs.get("RotatorRoleArn"))
    sys.exit(show_checks(preflight.run(), as_json))


@cli.command(short_help="Redeem a KSM one-time token and store the config in Secrets Manager.")
@click.option(
    "--token", metavar="TOKEN", help="One-time access token (visible in your shell history: prefer a prompt)."
)
@click.option(
    "--token-file", type=click.File("r"), metavar="PATH", help="Read the one-time token from a file ('-' = stdin)."
)
@click.option("--secret-name", required=True, metavar="NAME", help="Secrets Manager secret to create or update.")
@click.option("--kms-key-id", metavar="ID", help="KMS key for a new secret (default: aws/secretsmanager).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag for a new secret (repeatable).")
@click.option(
    "--hostname", metavar="HOST", help="KSM host, for a token without a region prefix (e.g. keepersecurity.com)."
)
@click.option("--server-public-key", metavar="KEY", help="Server public key of an isolated KSM deployment.")
@click.option("--description", default="KSM config for keeper-iam-rotator", show_default=True, help="For a new secret.")
@click.option(
    "--add-device",
    "add_device_to",
    metavar="STACK",
    help="Add the config as one more client device of this deployed stack (more Keeper capacity): a new secret, "
    "given the resource policy of the stack's first config secret; prints the KsmConfigSecretArn list to deploy.",
)
@guarded
def init(
    token: str | None,
    token_file: Any,
    secret_name: str,
    kms_key_id: str | None,
    tags: tuple[str, ...],
    hostname: str | None,
    server_public_key: str | None,
    description: str,
    add_device_to: str | None,
) -> None:
    """Redeem a KSM one-time access token and store the config in Secrets Manager.

    The token (like US:XXXX, or XXXX with --hostname) binds a new client device of the KSM application; the
    resulting config (base64 of its JSON, as Keeper's tools write it) goes into the secret: created, or a new
    version when it exists. Neither the token nor the config is ever printed. Without --token/--token-file the
    token is asked for without echo.
    """
    tag_map = parse_pairs(tags, "--tag")
    clients = aws.clients()
    add_to = DeviceList.of_stack(clients("cloudformation"), add_device_to) if add_device_to else None
    secret_token = read_token(token, token_file)
    stored = initialise(
        clients, secret_token, secret_name, kms_key_id, tag_map, hostname, server_public_key, description, add_to
    )
    stored.show()


@cli.command(short_help="Rotate now through the deployed function (Lambda invoke or the IAM-signed API).")
@click.option("--record", "records", multiple=True, required=True, metavar="UID", help="Record to rotate (repeatable).")
@click.option("--dry-run", is_flag=True, help="Plan only: the function checks every record and changes nothing.")
@click.option("--stack", metavar="NAME", help="Use the SAM stack's FunctionName (or ApiUrl with --via api).")
@click.option("--function", "function_name", metavar="NAME", help="Invoke this Lambda function directly.")
@click.option(
    "--api-url", metavar="URL", help="POST to this IAM-authenticated API URL (…/Prod/rotations), SigV4-signed."
)
@click.option("--via", type=click.Choice(["lambda", "api"]), default="lambda", show_default=True, help="With --stack.")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Retry-safe: the same key and records within an hour return the first run's results, not a new rotation.",
)
@click.option(
    "--bind", is_flag=True, help="Ask the function to bind records that have only a login (API: BindCallerArns only)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the function's answer exactly: results and summary.")
@guarded
def invoke(
    records: tuple[str, ...],
    dry_run: bool,
    stack: str | None,
    function_name: str | None,
    api_url: str | None,
    via: str,
    idempotency_key: str | None,
    bind: bool,
    as_json: bool,
) -> None:
    """Rotate now through the deployed function: direct Lambda invoke or the IAM-signed API.

    Prints the results like `rotate`. Exit 0 only if every record was rotated (or planned); 1 otherwise (or when
    the call failed); 2 for bad input.
    """
    uids = check_uids(records)
    endpoint = choose_endpoint(stack, function_name, api_url, via)
    document = call_deployed(endpoint, uids, dry_run, idempotency_key, bind)
    sys.exit(show_results(document, as_json, "Dry run: planned rotations" if dry_run else "Rotation results"))
