"""Injected faults and latency, observed through the stock SDK."""

import time

import pytest
import requests
from keeper_secrets_manager_core.exceptions import KeeperError, KeeperThrottleError

from .conftest import ALICE_UID, BOB_UID


def _save_password(ksm, uid, password, transaction_type=None):
    (record,) = ksm.get_secrets([uid])
    record.set_standard_field_value("password", password)
    ksm.save(record, transaction_type=transaction_type)


def test_error_fault_answers_json_error_once(emulator, ksm):
    emulator.vault.inject_fault("get_secret", status=503)

    with pytest.raises(KeeperError, match="service_unavailable"):
        ksm.get_secrets()
    assert len(ksm.get_secrets()) == 2


def test_error_fault_with_text_body_is_an_http_error(emulator, ksm):
    emulator.vault.inject_fault("get_secret", status=502, body="<html>bad gateway</html>")

    with pytest.raises(requests.HTTPError, match="502"):
        ksm.get_secrets()


def test_error_fault_with_json_body_is_passed_through(emulator, ksm):
    emulator.vault.inject_fault("update_secret", status=400, body={"error": "custom", "message": "nope"})

    with pytest.raises(KeeperError, match="Error: custom, message=nope"):
        _save_password(ksm, ALICE_UID, "new")
    assert emulator.vault.revision(ALICE_UID) == 1


def test_error_fault_skips_handling(emulator, ksm):
    emulator.vault.inject_fault("finalize_secret_update")
    _save_password(ksm, BOB_UID, "rotated", transaction_type="rotation")

    with pytest.raises(KeeperError, match="internal_server_error"):
        ksm.complete_transaction(BOB_UID)

    assert emulator.vault.staged(BOB_UID) is not None
    ksm.complete_transaction(BOB_UID)
    assert emulator.vault.revision(BOB_UID) == 2


def test_throttle_is_retried_by_the_sdk(emulator, ksm):
    emulator.vault.inject_fault("get_secret", kind="throttle", times=2, seconds=0.01)

    assert len(ksm.get_secrets()) == 2
    assert emulator.vault.calls["get_secret"] == 3


def test_persistent_throttle_exhausts_the_sdk_retries(emulator, ksm):
    emulator.vault.inject_fault("get_secret", kind="throttle", times=6, seconds=0.01)

    with pytest.raises(KeeperThrottleError):
        ksm.get_secrets()
    assert emulator.vault.calls["get_secret"] == 6


def test_drop_closes_the_connection_without_handling(emulator, ksm):
    (record,) = ksm.get_secrets([ALICE_UID])
    record.set_standard_field_value("password", "lost")
    emulator.vault.inject_fault("update_secret", kind="drop")

    with pytest.raises(requests.ConnectionError):
        ksm.save(record)

    assert emulator.vault.revision(ALICE_UID) == 1
    ksm.save(record)
    assert emulator.vault.revision(ALICE_UID) == 2


def test_drop_after_applies_the_effect_but_loses_the_answer(emulator, ksm):
    (record,) = ksm.get_secrets([ALICE_UID])
    record.set_standard_field_value("password", "applied")
    emulator.vault.inject_fault("update_secret", kind="drop_after")

    with pytest.raises(requests.ConnectionError):
        ksm.save(record)

    assert emulator.vault.revision(ALICE_UID) == 2
    assert emulator.vault.committed(ALICE_UID)["fields"][1]["value"] == ["applied"]
    # The blind retry a client might make now carries a stale revision.
    with pytest.raises(KeeperError, match="invalid_revision"):
        ksm.save(record)


def test_delay_fault_slows_one_call_then_handles_it(emulator, ksm):
    emulator.vault.inject_fault("get_secret", kind="delay", seconds=0.15)

    started = time.monotonic()
    assert len(ksm.get_secrets()) == 2
    assert time.monotonic() - started >= 0.15

    assert emulator.vault.take_fault("get_secret") is None


def test_wildcard_fault_hits_any_path_for_its_count(emulator, ksm):
    emulator.vault.inject_fault("*", times=2)

    with pytest.raises(KeeperError):
        ksm.get_secrets()
    with pytest.raises(KeeperError):
        ksm.complete_transaction(ALICE_UID)
    with pytest.raises(KeeperError, match="no_pending_transaction"):
        ksm.complete_transaction(ALICE_UID)


def test_faults_only_match_their_path(emulator, ksm):
    emulator.vault.inject_fault("rollback_secret_update", kind="drop")

    assert len(ksm.get_secrets()) == 2
    _save_password(ksm, ALICE_UID, "x", transaction_type="rotation")
    with pytest.raises(requests.ConnectionError):
        ksm.complete_transaction(ALICE_UID, rollback=True)
    assert emulator.vault.staged(ALICE_UID) is not None


def test_latency_and_call_counts(emulator, ksm):
    emulator.vault.reset_calls()
    emulator.vault.set_latency(0.1)

    started = time.monotonic()
    _save_password(ksm, ALICE_UID, "x")
    elapsed = time.monotonic() - started

    assert elapsed >= 0.2
    assert emulator.vault.calls == {"get_secret": 1, "update_secret": 1}
    emulator.vault.reset_calls()
    assert emulator.vault.calls == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"path": "get_folders"}, "path"),
        ({"path": "get_secret", "kind": "explode"}, "kind"),
        ({"path": "get_secret", "times": 0}, "times"),
    ],
)
def test_invalid_faults_are_refused(emulator, args, message):
    with pytest.raises(ValueError, match=message):
        emulator.vault.inject_fault(**args)
