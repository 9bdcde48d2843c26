"""KeeperPAM's own rotation: never be the second rotator of a record.

KeeperPAM (Keeper's gateway) can rotate a pamUser itself, IAM users included. Two rotators of one record take turns,
each overwriting the other's password, so a record KeeperPAM rotates is skipped (`managed_by_keeperpam`) unless the
operator opts in for that record (custom field `keeper_iam_rotator` = `rotate`; `check` then reports the record as
rotated by both, a misconfiguration to resolve).

A KSM client sees KeeperPAM's rotation only through the record's links (`QueryOptions(request_links=True)`, which
keeper.py asks for on the reads that lead to a rotation): a credential link whose `rotation_settings` is neither
`disabled` nor `noop` (noop runs KeeperPAM's scripts without changing the password), unless the record's own `meta`
link says its PAM settings do not allow rotation.
"""

from __future__ import annotations

from typing import Any, Final

from .errors import skip
from .keeper import PamUser
from .results import Code

OPT_IN_FIELD: Final = "keeper_iam_rotator"
OPT_IN_VALUE: Final = "rotate"
META_PATH: Final = "meta"


def rotates(user: PamUser) -> bool:
    """Whether KeeperPAM rotates this record's password itself (False when its links were not read)."""
    links: list[Any] = user.record.get_links() if hasattr(user.record, "get_links") else []
    if any(link.path == META_PATH and link.record_uid == user.uid and not link.allows_rotation() for link in links):
        return False
    return any(_enabled(link.get_rotation_settings()) for link in links if link.path is None)


def _enabled(settings: Any) -> bool:
    return isinstance(settings, dict) and settings.get("disabled") is not True and settings.get("noop") is not True


def opted_in(user: PamUser) -> bool:
    """The operator asked this rotator to rotate the record although KeeperPAM does too."""
    return user.custom(OPT_IN_FIELD).lower() == OPT_IN_VALUE


def require_not_keeperpam(user: PamUser) -> None:
    """Step 1's refusal of a record KeeperPAM rotates. (A rotation this rotator already began is always finished:
    recovery binds through binding.bind_unfinished, which does not ask; the journal may hold the password IAM has.)"""
    if rotates(user) and not opted_in(user):
        raise skip(
            Code.MANAGED_BY_KEEPERPAM,
            "KeeperPAM rotates this record itself (its rotation settings are enabled); two rotators would overwrite "
            f"each other's passwords. Nothing was changed; to rotate it here anyway set its custom field "
            f"{OPT_IN_FIELD} to {OPT_IN_VALUE} and disable KeeperPAM's rotation",
        )
