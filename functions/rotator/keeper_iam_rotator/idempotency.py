"""A retried request returns the first answer instead of rotating again (Powertools idempotency on DynamoDB).

The key is the caller's when given (API header `Idempotency-Key`, invoke field `idempotencyKey`), else the id a
platform retry keeps: the EventBridge event id for the schedule and the Lambda request id for a direct invoke
(asynchronous retries reuse it). API calls without a key are not deduplicated: API Gateway does not retry them.
The journal already makes a repeated rotation safe; this makes it not happen.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Powertools' idempotency loads on the first request that needs it: a recovery run never does
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from aws_lambda_powertools.utilities.typing import LambdaContext

from .errors import IdempotencyKeyReusedError, RequestInProgressError

RESULT_TTL_SECONDS = 3600


@lru_cache(maxsize=2)
def _store(table: str, dynamodb: Any) -> DynamoDBPersistenceLayer:
    """On the function's own DynamoDB client: Powertools' default builds a second boto3 session (~0.2 s cold)."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer  # noqa: PLC0415

    return DynamoDBPersistenceLayer(table_name=table, boto3_client=dynamodb)


def once(
    key: str | None,
    request: dict[str, Any],
    table: str,
    dynamodb: Any,
    context: LambdaContext,
    work: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Run `work` once per (key, request) within an hour; without a table or a key, just run it. Raises
    RequestInProgressError while the first attempt is still in flight (or died and its deadline has not passed),
    and IdempotencyKeyReusedError for a key that came with another request."""
    if not table or not key:
        return work()
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function  # noqa: PLC0415
    from aws_lambda_powertools.utilities.idempotency.exceptions import (  # noqa: PLC0415
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    config = IdempotencyConfig(
        event_key_jmespath="key", payload_validation_jmespath="request", expires_after_seconds=RESULT_TTL_SECONDS
    )
    config.register_lambda_context(context)

    def rotate_once(call: dict[str, Any]) -> dict[str, Any]:
        return work()

    once_per_key = idempotent_function(
        rotate_once, data_keyword_argument="call", config=config, persistence_store=_store(table, dynamodb)
    )
    try:
        answer: dict[str, Any] = once_per_key(call={"key": key, "request": request})
        return answer
    except IdempotencyAlreadyInProgressError:
        raise RequestInProgressError(key) from None
    except IdempotencyValidationError:
        raise IdempotencyKeyReusedError(key) from None
