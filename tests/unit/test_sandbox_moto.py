"""The sandbox's moto server behaves like the services where the rotator's correctness depends on it."""

from __future__ import annotations

import threading
import time

from rotator_sandbox.stack import AtomicDynamoDB


def test_the_sandbox_serves_one_dynamodb_call_at_a_time_as_dynamodb_applies_a_conditional_write():
    """moto checks a condition and writes with no lock: AtomicDynamoDB keeps two pacing grants from both passing."""
    running, most = [0], [0]
    guard = threading.Lock()

    def slow_app(environ: dict, start_response: object) -> list[bytes]:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1
        return [b"{}"]

    app = AtomicDynamoDB(slow_app)

    def call_all(target: str) -> int:
        most[0] = 0
        calls = [threading.Thread(target=app, args=({"HTTP_X_AMZ_TARGET": target}, None)) for _ in range(4)]
        for call in calls:
            call.start()
        for call in calls:
            call.join()
        return most[0]

    assert call_all("DynamoDB_20120810.UpdateItem") == 1
    assert call_all("AmazonSQS.ReceiveMessage") > 1  # other services stay concurrent
