"""Writes through the stock SDK: revisions, staged transactions and the pending policy."""

import pytest
from keeper_secrets_manager_core.exceptions import KeeperError

from .conftest import ALICE_UID, BOB_UID


def _password(record):
    return record.get_standard_field_value("password", single=True)


def _committed_password(emulator, uid):
    fields = emulator.vault.committed(uid)["fields"]
    return next(field["value"][0] for field in fields if field["type"] == "password")


def _stage(ksm, uid, password):
    (record,) = ksm.get_secrets([uid])
    record.set_standard_field_value("password", password)
    ksm.save(record, transaction_type="rotation")


@pytest.mark.parametrize("uid", [ALICE_UID, BOB_UID])
def test_plain_save_applies_and_bumps_revision(emulator, ksm, make_client, uid):
    (record,) = ksm.get_secrets([uid])
    record.set_standard_field_value("password", "fresh")

    ksm.save(record)

    assert emulator.vault.revision(uid) == 2
    (reread,) = make_client().get_secrets([uid])
    assert _password(reread) == "fresh"
    assert reread.revision == 2


def test_stale_revision_is_rejected(emulator, ksm):
    (record,) = ksm.get_secrets([ALICE_UID])
    record.set_standard_field_value("password", "first")
    ksm.save(record)
    record.set_standard_field_value("password", "second")

    with pytest.raises(KeeperError, match="invalid_revision"):
        ksm.save(record)

    assert _committed_password(emulator, ALICE_UID) == "first"
    assert emulator.vault.revision(ALICE_UID) == 2


def test_staged_update_is_invisible_until_finalized(emulator, ksm, make_client):
    reader = make_client()
    _stage(ksm, BOB_UID, "rotated")

    assert _password(reader.get_secrets([BOB_UID])[0]) == "bob-old"
    assert emulator.vault.revision(BOB_UID) == 1
    assert emulator.vault.staged(BOB_UID)["fields"][1]["value"] == ["rotated"]

    ksm.complete_transaction(BOB_UID)

    (after,) = reader.get_secrets([BOB_UID])
    assert _password(after) == "rotated"
    assert after.revision == 2
    assert emulator.vault.staged(BOB_UID) is None


def test_rollback_discards_the_staged_update(emulator, ksm):
    _stage(ksm, ALICE_UID, "rotated")

    ksm.complete_transaction(ALICE_UID, rollback=True)

    assert emulator.vault.staged(ALICE_UID) is None
    assert _committed_password(emulator, ALICE_UID) == "alice-old"
    assert emulator.vault.revision(ALICE_UID) == 1


def test_replace_policy_lets_a_new_staged_update_replace_the_old(emulator, ksm):
    _stage(ksm, ALICE_UID, "first")
    _stage(ksm, ALICE_UID, "second")

    ksm.complete_transaction(ALICE_UID)

    assert _committed_password(emulator, ALICE_UID) == "second"
    assert emulator.vault.revision(ALICE_UID) == 2


def test_refuse_policy_keeps_the_first_staged_update(emulator, ksm):
    emulator.vault.pending_policy = "refuse"
    _stage(ksm, ALICE_UID, "first")

    with pytest.raises(KeeperError, match="transaction_pending"):
        _stage(ksm, ALICE_UID, "second")
    (record,) = ksm.get_secrets([ALICE_UID])
    with pytest.raises(KeeperError, match="transaction_pending"):
        ksm.save(record)

    assert emulator.vault.staged(ALICE_UID)["fields"][1]["value"] == ["first"]
    assert _committed_password(emulator, ALICE_UID) == "alice-old"


def test_plain_save_in_replace_mode_applies_and_drops_the_staged_update(emulator, ksm):
    _stage(ksm, ALICE_UID, "staged")
    (record,) = ksm.get_secrets([ALICE_UID])
    record.set_standard_field_value("password", "direct")

    ksm.save(record)

    assert emulator.vault.staged(ALICE_UID) is None
    assert _committed_password(emulator, ALICE_UID) == "direct"
    with pytest.raises(KeeperError, match="no_pending_transaction"):
        ksm.complete_transaction(ALICE_UID)


@pytest.mark.parametrize("rollback", [False, True])
def test_completing_without_a_pending_update_fails(emulator, ksm, rollback):
    with pytest.raises(KeeperError, match="no_pending_transaction"):
        ksm.complete_transaction(BOB_UID, rollback=rollback)
    assert emulator.vault.revision(BOB_UID) == 1


def test_update_of_a_record_that_is_gone_fails(emulator, ksm):
    (record,) = ksm.get_secrets([ALICE_UID])
    emulator.vault.reset({})

    with pytest.raises(KeeperError, match="record_not_found"):
        ksm.save(record)
