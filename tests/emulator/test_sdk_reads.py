"""Reads through the stock SDK over HTTPS: what get_secret returns and how it filters."""

from keeper_secrets_manager_core.dto.payload import QueryOptions

from .conftest import ALICE_UID, APP_TITLE, BOB_UID, FOLDER_UID


def test_get_all_returns_direct_and_folder_records(ksm):
    response = ksm.get_secrets(full_response=True)

    by_uid = {record.uid: record for record in response.records}
    assert set(by_uid) == {ALICE_UID, BOB_UID}
    assert by_uid[ALICE_UID].get_standard_field_value("password", single=True) == "alice-old"
    assert by_uid[ALICE_UID].type == "pamUser"
    assert by_uid[ALICE_UID].folder_uid == ""
    assert by_uid[BOB_UID].folder_uid == FOLDER_UID
    assert by_uid[BOB_UID].get_custom_field_value("note", single=True) == "x"
    assert {record.revision for record in response.records} == {1}
    assert all(record.is_editable for record in response.records)
    assert [folder.uid for folder in response.folders] == [FOLDER_UID]
    assert response.appData.title == APP_TITLE
    assert response.bad_records == []
    assert response.bad_folders == []


def test_get_by_uid_finds_records_wherever_they_live(ksm):
    assert [record.uid for record in ksm.get_secrets([ALICE_UID])] == [ALICE_UID]
    (bob,) = ksm.get_secrets([BOB_UID])
    assert bob.get_standard_field_value("login", single=True) == "bob"
    assert bob.folder_uid == FOLDER_UID


def test_get_by_folder_returns_only_that_folder(emulator, ksm):
    other = emulator.vault.add_record(title="carol", folder="OtherFolderUid00000000")

    records = ksm.get_secrets_with_options(QueryOptions(records_filter=None, folders_filter=[FOLDER_UID]))

    assert [record.uid for record in records] == [BOB_UID]
    assert {record.uid for record in ksm.get_secrets()} == {ALICE_UID, BOB_UID, other}


def test_unknown_uid_is_simply_absent(ksm):
    assert ksm.get_secrets(["NoSuchRecordUid0000000"]) == []
    assert [record.uid for record in ksm.get_secrets(["NoSuchRecordUid0000000", BOB_UID])] == [BOB_UID]


def test_new_records_get_keeper_style_uids(emulator, ksm):
    uid = emulator.vault.add_record(title="dave", fields=[{"type": "login", "value": ["dave"]}])

    assert len(uid) == 22
    assert "=" not in uid
    (dave,) = ksm.get_secrets([uid])
    assert dave.title == "dave"
