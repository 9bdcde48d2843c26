"""`fleet --devices 2` end to end on a few records: the handler gets both config secrets, both client devices serve
rotations, and the run's figures come out: Keeper requests per rotation, throttled answers, deferred per scheduled
run, the DLQ, every IAM password equal to its Keeper record."""

from __future__ import annotations

import re

from ksm_emulator.throttle import BurstLimit
from rotator_sandbox.fleet import run_fleet
from rotator_sandbox.stack import KeeperLimits


def figure(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if line.strip().startswith(name))
    return line.strip()[len(name) :].strip()


def test_a_fleet_over_two_devices_rotates_every_record_through_both(capsys, monkeypatch):
    # At most 20 requests per device and endpoint without a 1 s pause; the handler paces at 15 and 2 s (the user's
    # variables win over the function's defaults), so each device must pause once for its 20 rotations.
    limits = KeeperLimits(throttle=BurstLimit(20, 1.0), rate_limit=None)
    monkeypatch.setenv("KEEPER_BURST_LIMIT", "15")
    monkeypatch.setenv("KEEPER_QUIET_SECONDS", "2")
    assert run_fleet(records=40, accounts=2, workers=2, inline_limit=5, plain=True, limits=limits, devices=2) == 0

    output = capsys.readouterr().out
    assert figure(output, "Keeper throttled answers") == "0"
    assert figure(output, "every IAM password = its Keeper record") == "yes"
    assert figure(output, "DLQ empty") == "yes"
    assert figure(output, "deferred per scheduled run").split(", ")[-1] == "0"
    per_device = re.fullmatch(r"(\d+)-(\d+) over 2 device\(s\)", figure(output, "Keeper requests per device (min-max)"))
    assert per_device is not None and int(per_device[1]) > 0  # both devices served requests
    assert float(figure(output, "Keeper requests per rotation")) < 2.5  # + reads per batch and device: few records
    assert figure(output, "update_secret") == figure(output, "finalize_secret_update") == "1.000"
