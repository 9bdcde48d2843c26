"""What time does to the journal, done at once: last rotations moved into the past so records fall due again.

The journal's items carry an integrity MAC (keeper_iam_rotator/integrity.py), so an aged item is signed again with
the journal's MAC key, which the sandbox's moto lets anyone use (in AWS the key policy lets only the function). No
moto import here: the handler subprocess (rotator_sandbox.invoke) uses it too.
"""

from __future__ import annotations

from typing import Any

from keeper_iam_rotator.integrity import Integrity

TIMES = ("rotatedAt", "passwordSetFrom", "passwordSetUntil")


def age_rotations(dynamodb: Any, kms: Any, table: str, mac_key: str, days: float, record_uid: str = "") -> int:
    """Move every item's last rotation (only `record_uid`'s, when given) `days` back: when it closed (`rotatedAt`)
    and when IAM took its password (`passwordSetFrom`, `passwordSetUntil`); returns how many moved."""
    integrity = Integrity(kms, mac_key)
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, FilterExpression="attribute_exists(rotatedAt)")
    aged = 0
    for item in (item for page in pages for item in page["Items"]):
        if record_uid and item.get("recordUid", {}).get("S") != record_uid:
            continue
        moved = {name: {"N": f"{float(item[name]['N']) - days * 86400:.3f}"} for name in TIMES if name in item}
        dynamodb.put_item(TableName=table, Item=integrity.sign(item | moved))
        aged += 1
    return aged
