"""The rotation queue, locally: moto SQS holds the messages a scheduled run sends, and a driver does what Lambda's
event source mapping does — receive up to a batch (25), hand them to the handler as an SQS event, delete the ones the
handler did not report in `batchItemFailures` (the rest come back after the visibility timeout, then go to the
dead-letter queue after `max_receives`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keeper_iam_rotator.queue_worker import MAX_BATCH

QUEUE_NAME = "keeper-iam-rotator-rotations"
DLQ_NAME = "keeper-iam-rotator-rotations-dlq"


@dataclass
class LocalQueue:
    sqs: Any
    url: str = ""
    arn: str = ""
    dlq_url: str = ""
    visibility_timeout: int = 0  # 0: a failed message is visible again at once (the sandbox does not wait)
    max_receives: int = 5

    def create(self) -> LocalQueue:
        """What template.yaml creates: the queue and its dead-letter queue (redrive after `max_receives`)."""
        self.dlq_url = self.sqs.create_queue(QueueName=DLQ_NAME)["QueueUrl"]
        dlq_arn = self._arn(self.dlq_url)
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_receives)})
        attributes = {"VisibilityTimeout": str(self.visibility_timeout), "RedrivePolicy": redrive}
        self.url = self.sqs.create_queue(QueueName=QUEUE_NAME, Attributes=attributes)["QueueUrl"]
        self.arn = self._arn(self.url)
        return self

    def _arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def depth(self, url: str | None = None) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def receive_event(self, batch_size: int = MAX_BATCH) -> dict[str, Any] | None:
        """Up to `batch_size` messages as the SQS event Lambda would deliver (its poller gathers several receives of
        at most 10), or None when the queue is empty."""
        messages: dict[str, dict[str, Any]] = {}  # by id: a queue without a visibility timeout hands them out again
        while len(messages) < batch_size:
            received = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=min(10, batch_size - len(messages)),
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            new = {message["MessageId"]: message for message in received if message["MessageId"] not in messages}
            if not new:
                break
            messages |= new
        if not messages:
            return None
        return {"Records": [self._record(message) for message in messages.values()]}

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": "us-east-1",
        }

    def settle(self, event: dict[str, Any], response: dict[str, Any] | None) -> list[str]:
        """Delete what the handler finished; a crashed handler (no response) finished nothing. Returns the ids of
        the messages left on the queue."""
        if response is None:
            return [record["messageId"] for record in event["Records"]]
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [record for record in event["Records"] if record["messageId"] not in failed]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": r["receiptHandle"]} for n, r in enumerate(done[start : start + 10])
            ]
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
        return sorted(failed)

    def drain(self, handle: Callable[[dict[str, Any]], dict[str, Any] | None], rounds: int = 10_000) -> int:
        """Work the queue until it is empty (the event source mapping, one batch at a time); returns batches run."""
        batches = 0
        while batches < rounds and (event := self.receive_event()) is not None:
            self.settle(event, handle(event))
            batches += 1
        return batches
