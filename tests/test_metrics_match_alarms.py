"""Every alarm and dashboard query on the KeeperIamRotator namespace selects a metric the function really emits.

CloudWatch identifies a metric by namespace, name and the exact set of dimensions: an alarm on {service} never sees
a metric emitted with {service, trigger}. So the function runs real rotations (moto + the Keeper emulator) that
succeed, fail, skip and leave a password in the journal; the EMF it prints is parsed, and each alarm's metric and
each dashboard metric / SEARCH is looked up among the (namespace, name, dimensions) it produced.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

import app  # noqa: F401 - imported before capsys replaces stdout, so Powertools binds to pytest's stream
from test_drift import change_event, rotated_earlier, set_out_of_band

from conftest import _clear_caches
from faults import AwsFaults, SimulatedCrash, after_aws_call
from template_tools import translate

NAMESPACE = "KeeperIamRotator"
SEARCH = re.compile(r"SEARCH\('\{([^}]*)\}\s+MetricName=\"([^\"]+)\"")

Emitted = set[tuple[str, str, frozenset[tuple[str, str]]]]


def emitted_metrics(stdout: str) -> Emitted:
    """(namespace, metric name, {dimension: value}) for every metric in the EMF lines printed."""
    found: Emitted = set()
    for line in stdout.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dimensions = frozenset((name, str(blob[name])) for name in dimension_set)
                found |= {(directive["Namespace"], metric["Name"], dimensions) for metric in directive["Metrics"]}
    return found


def run_every_outcome(stack: Any, monkeypatch: Any) -> None:
    """A rotation that succeeds, one IAM refuses, one that ends in the journal, a skip, a dry run, drift, a refused
    KSM config, and a crashed rotation recovery finds hours later."""
    assert stack.rotate(stack.add_pair("ok"))[0]["status"] == "rotated"

    refused = stack.add_pair("refused")
    arm_faults(stack, ("iam", "UpdateLoginProfile", "PasswordPolicyViolation", 0))
    assert stack.rotate(refused)[0]["error"]["code"] == "iam_update_refused"

    stranded = stack.add_pair("stranded")
    stack.keeper.vault.inject_fault("finalize_secret_update", kind="error", status=500, times=10)
    arm_faults(stack, ("iam", "UpdateLoginProfile", "PasswordPolicyViolation", 1))  # the rollback is refused
    assert stack.rotate(stranded)[0]["error"]["code"] == "password_in_journal"

    arm_faults(stack)
    console_less = stack.add_user("console-less", password=None)
    assert stack.rotate(stack.add_record("console-less", dn=console_less))[0]["error"]["code"] == "no_login_profile"
    assert stack.rotate(stack.add_pair("planned"), dry_run=True)[0]["status"] == "planned"

    rotated_earlier(stack, "drifted")  # a password changed outside the rotator: DriftDetected (DriftAlarm)
    set_out_of_band(stack, "drifted")
    assert stack.invoke(change_event(user="drifted"))["results"][0]["drift"] is True
    with monkeypatch.context() as inside_lambda:  # the sandbox's Keeper does not count in a real Lambda
        inside_lambda.setenv("AWS_LAMBDA_FUNCTION_NAME", "keeper-iam-rotator")
        assert stack.rotate(stack.add_pair("untrusted"))[0]["error"]["code"] == "ksm_config_untrusted"

    stale = stack.add_pair("stale")  # a run dies after IAM took the password; recovery looks hours later
    after_aws_call("iam", "UpdateLoginProfile", SimulatedCrash())
    _clear_caches()  # the function's next clients are built on the session that carries the crash
    with pytest.raises(SimulatedCrash):
        stack.rotate(stale)
    arm_faults(stack)
    later = time.time() + 4 * 3600
    with monkeypatch.context() as clock:
        clock.setattr(time, "time", lambda: later)
        stack.invoke({"action": "recover"})  # signals StaleOpenEntries (the lease's own clock is not moved)


def arm_faults(stack: Any, *faults: tuple[str, str, str, int]) -> None:
    """Only these AWS faults from now on (service, operation, error code, calls let through first)."""
    if not faults:
        stack.keeper.vault.clear_faults()
    _clear_caches()  # the function's next clients are built on the session that carries the faults
    aws = AwsFaults()
    for service, operation, code, after in faults:
        aws.fail(service, operation, code, after=after)


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or each MetricStat of its metric math."""
    properties = alarm["Properties"]
    if "MetricName" in properties:
        return [properties]
    return [query["MetricStat"]["Metric"] for query in properties.get("Metrics", []) if "MetricStat" in query]


def dashboard_queries(body: dict[str, Any]) -> list[tuple[str, str, frozenset[Any], bool]]:
    """(namespace, name, dimensions, exact) per dashboard metric: exact = name/value pairs; SEARCH = schema only."""
    queries = []
    for widget in body["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], dict):
                for namespace, *dimensions, name in _searches(row[0].get("expression", "")):
                    queries.append((namespace, name, frozenset(dimensions), False))
            else:
                namespace, name, *rest = [item for item in row if not isinstance(item, dict)]
                queries.append((namespace, name, frozenset(zip(rest[::2], rest[1::2], strict=True)), True))
    return queries


def _searches(expression: str) -> list[list[str]]:
    return [[*(part.strip() for part in schema.split(",")), name] for schema, name in SEARCH.findall(expression)]


def test_alarms_and_dashboard_select_the_metrics_the_function_emits(stack, capsys, monkeypatch):
    run_every_outcome(stack, monkeypatch)
    emitted = emitted_metrics(capsys.readouterr().out)
    template = translate()

    alarms = [
        metric
        for alarm in template.resources("AWS::CloudWatch::Alarm").values()
        for metric in alarm_metrics(alarm)
        if metric["Namespace"] == NAMESPACE
    ]
    body = json.loads(template.resource("Dashboard")["Properties"]["DashboardBody"])
    queries = [query for query in dashboard_queries(body) if query[0] == NAMESPACE]

    assert {name for _, name, _ in emitted} >= {"RotationSucceeded", "RotationFailed", "RecoveryRequired"}
    assert len(alarms) >= 2 and len(queries) >= 6, "the template's alarms or dashboard were not found"
    for metric in alarms:
        dimensions = frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
        assert (NAMESPACE, metric["MetricName"], dimensions) in emitted, f"alarm selects nothing: {metric}"
    schemas = {(namespace, name, frozenset(d for d, _ in dims)) for namespace, name, dims in emitted}
    for namespace, name, dimensions, exact in queries:
        found = (namespace, name, dimensions) in (emitted if exact else schemas)
        assert found, f"dashboard selects nothing: {name} {sorted(dimensions)}"
