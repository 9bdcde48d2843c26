"""Powertools Logger and Metrics for the function, Tracer only when asked for, and the per-record report (log line +
metrics).

Logs and metrics carry uids, names, statuses and codes, never secrets. Loggers of the libraries that can print
request bodies (botocore at DEBUG logs UpdateLoginProfile's Password) are held at INFO whatever LOG_LEVEL says.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from .results import RECOVERY_PENDING_CODES, RecordResult, Status
from .settings import _flag

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KeeperIamRotator")
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "keeper-iam-rotator")
CHATTY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "ksm", "requests")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
SERVICE_DIMENSION = {"service": SERVICE}  # the one dimension every metric carries (template.yaml's alarms select it)
Handler = TypeVar("Handler", bound=Callable[..., object])

STATUS_METRIC = {
    Status.ROTATED: "RotationSucceeded",
    Status.FAILED: "RotationFailed",
    Status.SKIPPED: "RotationSkipped",
    Status.PLANNED: "RotationPlanned",
    Status.QUEUED: "RotationQueued",
}


def traced(handler: Handler) -> Handler:
    """With TRACE_CALLS=true, Powertools' Tracer adds X-Ray subsegments for every AWS and Keeper call. Off by
    default: the X-Ray SDK costs ~0.3 s of every cold start and CPU on every call, and Lambda's `Tracing: Active`
    records the function's own segments without it."""
    if not _flag(os.environ, "TRACE_CALLS", False):
        return handler
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - imports the X-Ray SDK: only when tracing is on

    return Tracer(service=SERVICE).capture_lambda_handler(handler, capture_response=False)


def quiet_chatty_loggers() -> None:
    """Never let a library's DEBUG output (which includes request parameters) reach the log."""
    for name in CHATTY_LOGGERS:
        chatty = logging.getLogger(name)
        if chatty.level < logging.INFO:  # NOTSET would inherit a DEBUG root logger set later
            chatty.setLevel(logging.INFO)


def report(result: RecordResult, seconds: float) -> None:
    """One structured log line and the metrics for one record's outcome."""
    level = logging.WARNING if result.status is Status.FAILED else logging.INFO
    logger.log(level, "rotation result", extra={**result.to_dict(), "durationMs": round(seconds * 1000)})
    metrics.add_metric(name=STATUS_METRIC[result.status], unit=MetricUnit.Count, value=1)
    if result.status is Status.ROTATED:
        metrics.add_metric(name="RotationDuration", unit=MetricUnit.Milliseconds, value=seconds * 1000)
    if result.code in RECOVERY_PENDING_CODES:
        metrics.add_metric(name="RecoveryRequired", unit=MetricUnit.Count, value=1)
    if result.status is Status.FAILED and result.code:
        # {code, service} whatever the environment: single_metric adds `service` only from POWERTOOLS_SERVICE_NAME.
        with single_metric(
            name="RotationFailedByCode",
            unit=MetricUnit.Count,
            value=1,
            namespace=NAMESPACE,
            default_dimensions=SERVICE_DIMENSION,
        ) as m:
            m.add_dimension(name="code", value=str(result.code))
