"""`make bench` end to end on a few records: it runs, every measured invocation rotates every record again, and its
counters show the steady state the README quotes (4 AWS and 2 Keeper calls per user, 2 KMS calls per invocation:
the journal's data key and its integrity MAC key)."""

from __future__ import annotations

import re

from rotator_sandbox.bench import run_bench


def figure(output: str, name: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.strip().startswith(name))
    return re.findall(r"\d+\.\d+", line[len(name) + 2 :])


def test_bench_rotates_every_record_in_every_measured_invocation(capsys):
    assert run_bench(records=3, keeper_latency=0.0, plain=True) == 0

    output = capsys.readouterr().out
    assert figure(output, "AWS calls per rotated user") == ["4.00"]
    assert figure(output, "KEEPER calls per rotated user") == ["2.00"]
    assert figure(output, "KMS calls per invocation") == ["2.00"]
    warm = output[output.index("Warm calls: CPU ms per call") :]
    for call in ("aws iam:GetLoginProfile", "aws iam:UpdateLoginProfile", "keeper update_secret"):
        cpu_ms, per_record = figure(warm, call)  # CPU varies from run to run; the calls per record do not
        assert float(cpu_ms) > 0 and per_record == "1.00"
    assert figure(warm, "aws dynamodb:PutItem")[1] == f"{2 + 1 / 3:.2f}"  # journal open + close; 1 idempotency record
