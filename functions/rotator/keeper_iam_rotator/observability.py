"""Powertools Logger and Metrics for the function, Tracer only when asked for, and the per-record report (log line +
metrics).

Logs and metrics carry uids, names, statuses and codes, never secrets. Loggers of the libraries that can print
request bodies (botocore at DEBUG logs UpdateLoginProfile's Password) are held at INFO whatever LOG_LEVEL says, and
every log record is redacted as it is created (`guard_logs`), so a level changed later cannot print a secret either.
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from .results import RECOVERY_PENDING_CODES, TAMPERING_CODES, RecordResult, Status
from .sensitive import redact, redact_value
from .settings import flag

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "KeeperIamRotator")
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "keeper-iam-rotator")
WITHHELD = "(log record withheld: it could not be checked for secrets)"
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
    if not flag(os.environ, "TRACE_CALLS", False):
        return handler
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - imports the X-Ray SDK: only when tracing is on

    return cast(Handler, Tracer(service=SERVICE).capture_lambda_handler(handler, capture_response=False))


def quiet_chatty_loggers() -> None:
    """Never let a library's DEBUG output (which includes request parameters) reach the log."""
    for name in CHATTY_LOGGERS:
        chatty = logging.getLogger(name)
        if chatty.level < logging.INFO:  # NOTSET would inherit a DEBUG root logger set later
            chatty.setLevel(logging.INFO)


def report(result: RecordResult, seconds: float) -> None:
    """One structured log line and the metrics for one record's outcome."""
    log = logger.warning if result.status is Status.FAILED else logger.info
    changed = result.binding_changed and result.status is Status.ROTATED
    log(
        "rotation result",
        extra={**result.to_dict(), "durationMs": round(seconds * 1000)} | ({"bindingChanged": True} if changed else {}),
    )
    metrics.add_metric(name=STATUS_METRIC[result.status], unit=MetricUnit.Count, value=1)
    if changed:  # a user's first binding, or its ownership moved to another record: someone may have aimed it
        metrics.add_metric(name="BindingChanged", unit=MetricUnit.Count, value=1)
    if result.status is Status.ROTATED:
        metrics.add_metric(name="RotationDuration", unit=MetricUnit.Milliseconds, value=seconds * 1000)
    if result.code in RECOVERY_PENDING_CODES:
        metrics.add_metric(name="RecoveryRequired", unit=MetricUnit.Count, value=1)
    if result.drift:  # a password changed (or console access removed) outside the rotator: DriftAlarm
        metrics.add_metric(name="DriftDetected", unit=MetricUnit.Count, value=1)
    if result.code in TAMPERING_CODES:
        metrics.add_metric(name="TamperingDetected", unit=MetricUnit.Count, value=1)
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


def signal(metric: str, count: int) -> None:
    """A run-level count metric (with the `service` dimension only, like every other): StaleOpenEntries."""
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=count)


def publish_metrics(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Powertools' `log_metrics`, except that an invocation that reported nothing (a bad request, an idempotent
    replay, an idle recovery run) does not flush (Powertools would warn "No application metrics to publish"), and
    every invocation ends with the per-invocation metric state (dimensions, metadata) cleared for the next one."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        try:
            return handler(event, context)
        finally:
            if metrics.metric_set:
                metrics.flush_metrics()
            metrics.clear_metrics()  # flushing keeps the state when POWERTOOLS_METRICS_DISABLED is set

    return wrapper


def guard_logs() -> None:
    """Redact secrets from every log record as it is created, whatever logger, level or handler emits it.

    A record factory rather than a handler filter: botocore's records reach the root logger's handlers, Powertools
    writes through its own handler, and `boto3.set_stream_logger` attaches yet another; the factory sees them all.
    Once per process; a record that cannot be checked is replaced, never passed on.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            _redact(record)
        except Exception:
            record.msg, record.args, record.exc_info = WITHHELD, (), None
        return record

    redacting_factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)


def _redact(record: logging.LogRecord) -> None:
    if isinstance(record.msg, dict | list) and not record.args:  # Powertools logs structured messages as they are
        record.msg = redact_value(record.msg)
    else:
        record.msg, record.args = redact(record.getMessage()), ()
    if record.exc_info and record.exc_info[1] is not None:
        trace = "".join(traceback.format_exception(*record.exc_info))
        if (clean := redact(trace)) != trace:  # the exception's text carries a secret: log the masked text only
            record.msg, record.exc_info = f"{record.msg}\n{clean}", None
