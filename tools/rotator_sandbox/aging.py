"""What time does to the journal, done at once: last rotations moved into the past so records fall due again.

The journal's items carry an integrity MAC (keeper_iam_rotator/integrity.py), so an aged item is signed again with
the journal's MAC key, which the sandbox's moto lets anyone use (in AWS the key policy lets only the function). No
moto import here: the handler subprocess (rotator_sandbox.invoke) uses it too.
"""

from __future__ import annotations

from typing import Any

from keeper_iam_rotator.integrity import Integrity


def age_rotations(dynamodb: Any, kms: Any, table: str, mac_key: str, days: float, record_uid: str = "") -> int:
    """Move every item's `rotatedAt` (only `record_uid`'s, when given) `days` back; returns how many moved."""
    integrity = Integrity(kms, mac_key)
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, FilterExpression="attribute_exists(rotatedAt)")
    aged = 0
    for item in (item for page in pages for item in page["Items"]):
        if record_uid and item.get("recordUid", {}).get("S") != record_uid:
            continue
        earlier = float(item["rotatedAt"]["N"]) - days * 86400
        dynamodb.put_item(TableName=table, Item=integrity.sign(item | {"rotatedAt": {"N": f"{earlier:.3f}"}}))
        aged += 1
    return aged
