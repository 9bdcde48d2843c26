"""The CLI's error type and exit codes, and the guard that keeps exception text (which may quote a secret) out of
the output."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from botocore import exceptions as botocore_errors
from botocore.parsers import ResponseParserError

EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and something failed (or was skipped)
EXIT_USAGE = 2  # bad input or configuration: nothing was changed

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A clean, secret-free message for the operator, and the exit code it ends with."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# Configuration the operator must change before anything can run (exit 2); the rest may be transient (exit 1).
SETUP_ERRORS = (
    botocore_errors.NoRegionError,
    botocore_errors.InvalidRegionError,
    botocore_errors.NoCredentialsError,
    botocore_errors.PartialCredentialsError,
    botocore_errors.ProfileNotFound,
)


# What to do next about a failure of the CLI's own AWS setup, by botocore's exception ({where}: the endpoint).
ADVICE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (
        botocore_errors.NoRegionError,
        "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), e.g. export AWS_REGION=us-east-1",
    ),
    (
        botocore_errors.InvalidRegionError,
        "the AWS region is not a region name: correct AWS_REGION / AWS_DEFAULT_REGION",
    ),
    (
        (botocore_errors.NoCredentialsError, botocore_errors.PartialCredentialsError),
        "no usable AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ),
    (botocore_errors.ProfileNotFound, "AWS_PROFILE names a profile your AWS config does not have"),
    (
        (botocore_errors.EndpointConnectionError, botocore_errors.ConnectTimeoutError),
        "cannot reach the AWS endpoint: check AWS_REGION and the network; {where}",
    ),
    (ResponseParserError, "the endpoint did not answer like AWS: check AWS_REGION and AWS_ENDPOINT_URL; {where}"),
)


def botocore_advice(error: BaseException) -> str | None:
    """What to do next about a failure of the CLI's own AWS setup (region, endpoint, credentials); None for others.
    Names only variables and the endpoint, never request parameters."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip()
    where = f"AWS_ENDPOINT_URL is {endpoint}" if endpoint else "AWS_ENDPOINT_URL is not set: AWS's own endpoints"
    return next((advice.format(where=where) for kind, advice in ADVICE if isinstance(error, kind)), None)


def guarded(fn: F) -> F:
    """Run a command so that nothing but our own messages reaches the terminal: CliError prints its message,
    any other exception only its type (its text could quote a config, a token or a password)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except CliError as error:
            click.echo(f"Error: {error.message}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as error:
            advice = botocore_advice(error)
            if advice is not None:  # the operator's AWS setup: say what to change
                click.echo(f"Error: {type(error).__name__}: {advice}", err=True)
                sys.exit(EXIT_USAGE if isinstance(error, SETUP_ERRORS) else EXIT_FAILED)
            click.echo(
                f"Error: unexpected {type(error).__name__} (details withheld: they may contain secrets)", err=True
            )
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


class _NoTraceback(logging.Formatter):
    """Library warnings as one line each; tracebacks (and their exception text) are dropped."""

    def formatException(self, ei: Any) -> str:
        return ""

    def formatStack(self, stack_info: str) -> str:
        return ""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_text = ""
        saved = record.exc_info
        record.exc_info = None
        try:
            return super().format(record)
        finally:
            record.exc_info = saved


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]  # its stream is a property
    """Writes to whatever sys.stderr is now (click's test runner swaps it per invocation)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def quiet_logging() -> None:
    """The rotator logs warnings (with tracebacks for unexpected errors): show them as one line, no traceback.
    Libraries that can log request bodies (botocore at DEBUG logs UpdateLoginProfile's Password) stay at INFO+."""
    handler = _Stderr()
    handler.setFormatter(_NoTraceback("warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    rotator = logging.getLogger("keeper_iam_rotator")
    for old in list(rotator.handlers):
        if isinstance(old, _Stderr):
            rotator.removeHandler(old)
    rotator.addHandler(handler)
    rotator.propagate = False
    for name in ("botocore", "boto3", "urllib3", "requests", "ksm"):
        logging.getLogger(name).setLevel(logging.WARNING)
