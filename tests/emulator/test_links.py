"""Record links (how KeeperPAM's own rotation shows to a KSM client), read back through the stock SDK."""

import json

import pytest
import requests
from keeper_secrets_manager_core import SecretsManager, utils
from keeper_secrets_manager_core.crypto import CryptoUtils
from keeper_secrets_manager_core.dto.dtos import KeeperRecordLink
from keeper_secrets_manager_core.dto.payload import QueryOptions
from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

from ksm_emulator import EmulatorServer
from ksm_emulator.links import DEFAULT_PAM_CONFIG_UID

from .conftest import ALICE_UID, BOB_UID, SEED

RULE = {"length": 24, "caps": 2, "lowercase": 2, "digits": 2, "special": 2, "specialChars": "!@#$%^&*()"}


def read(ksm: SecretsManager, uid: str, request_links: bool | None = True):
    (record,) = ksm.get_secrets_with_options(
        QueryOptions(records_filter=[uid], folders_filter=None, request_links=request_links)
    )
    return record


def by_path(record) -> dict[str | None, KeeperRecordLink]:
    return {link.path: link for link in record.get_links()}


def test_enabled_rotation_reads_back_through_the_sdk(emulator, ksm):
    resource = emulator.vault.set_pam_rotation(ALICE_UID, enabled=True, iam_user=True, pwd_complexity=RULE)
    record = read(ksm, ALICE_UID)

    links = by_path(record)
    meta, credential = links["meta"], links[None]
    assert meta.record_uid == ALICE_UID
    assert meta.allows_rotation() is True
    assert meta.rotates_on_termination() is False
    assert meta.get_link_data_version() == 1
    assert credential.record_uid == resource == DEFAULT_PAM_CONFIG_UID
    assert credential.is_iam_user() is True
    assert credential.belongs_to() is True
    settings = credential.get_rotation_settings()
    assert (settings["disabled"], settings["noop"], settings["schedule"]) == (False, False, "")
    complexity = CryptoUtils.decrypt_aes(utils.base64_to_bytes(settings["pwd_complexity"]), record.record_key_bytes)
    assert json.loads(complexity) == RULE


def test_disabled_rotation_in_a_shared_folder(emulator, ksm):
    emulator.vault.set_pam_rotation(BOB_UID, enabled=False, rotate_on_termination=True, schedule={"type": "ON_DEMAND"})
    record = read(ksm, BOB_UID)

    assert record.folder_uid == SEED["folders"][0]["uid"]
    links = by_path(record)
    assert links[None].get_rotation_settings()["disabled"] is True
    assert links[None].get_rotation_settings()["schedule"] == {"type": "ON_DEMAND"}
    assert links[None].get_rotation_settings()["pwd_complexity"] == ""
    assert links["meta"].allows_rotation() is True  # the resource still allows it; the user's rotation is off
    assert links["meta"].rotates_on_termination() is True


def test_links_only_when_requested(emulator, ksm, monkeypatch):
    emulator.vault.set_pam_rotation(ALICE_UID)
    replies: list[dict] = []
    post_query = SecretsManager._post_query

    def recording(self, path, payload):
        reply = post_query(self, path, payload)
        replies.append(json.loads(reply))
        return reply

    monkeypatch.setattr(SecretsManager, "_post_query", recording)

    assert ksm.get_secrets([ALICE_UID])[0].get_links() == []
    assert read(ksm, ALICE_UID, request_links=None).links == []
    assert "links" not in replies[0]["records"][0]
    assert len(read(ksm, ALICE_UID).get_links()) == 2
    assert [link["path"] for link in replies[-1]["records"][0]["links"]] == ["meta", None]


def test_setting_rotation_again_replaces_its_links(emulator, ksm):
    emulator.vault.set_pam_rotation(ALICE_UID, enabled=True)
    emulator.vault.set_pam_rotation(ALICE_UID, enabled=False)

    record = read(ksm, ALICE_UID)
    assert len(record.get_links()) == 2
    assert by_path(record)[None].get_rotation_settings()["disabled"] is True


def test_raw_links_encrypted_paths_and_references(emulator, ksm):
    jit = {"createEphemeral": True, "elevate": True, "elevationMethod": "group"}
    emulator.vault.set_links(
        ALICE_UID,
        [
            {"recordUid": ALICE_UID, "path": "jit_settings", "data": jit},
            {"recordUid": "ReferencedRec0rdUid001", "path": None, "data": None},
            {"recordUid": "ReferencedRec0rdUid002", "path": None, "data": "!!! not base64 !!!"},
            {"path": None, "data": None},  # no recordUid: kept raw, skipped by get_links()
        ],
    )
    record = read(ksm, ALICE_UID)

    assert len(record.links) == 4
    jit_link, reference, garbage = record.get_links()
    assert jit_link.might_be_encrypted()
    assert jit_link.get_link_data() is None  # encrypted under the record key: nothing without it
    assert jit_link.get_jit_settings_data(record.record_key_bytes) == jit
    assert reference.get_link_data() is None
    assert garbage.get_link_data() is None
    assert emulator.vault.links(ALICE_UID)[0]["data"] == jit


def test_seed_file_carries_links_and_rotation(tmp_path, monkeypatch):
    seed = json.loads(json.dumps(SEED))
    seed["records"][0]["pam_rotation"] = {"enabled": False, "iam_user": True}
    seed["records"][1]["links"] = [
        {"recordUid": BOB_UID, "path": "meta", "data": {"allowedSettings": {"rotation": False}}}
    ]
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))

    with EmulatorServer(seed=path) as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
        ksm = SecretsManager(config=InMemoryKeyValueStorage(server.client_config()))
        alice, bob = read(ksm, ALICE_UID), read(ksm, BOB_UID)
        assert by_path(alice)[None].get_rotation_settings()["disabled"] is True
        assert by_path(bob)["meta"].allows_rotation() is False
        assert [r["links"] for r in server.vault.dump()["records"] if r["uid"] == BOB_UID] == [
            seed["records"][1]["links"]
        ]

        server.vault.set_links(BOB_UID, [])
        server.vault.reset()  # back to the seed, links included
        assert by_path(read(ksm, BOB_UID))["meta"].allows_rotation() is False


@pytest.fixture
def control(emulator):
    session = requests.Session()
    session.verify = emulator.ca_file

    def call(name, body):
        return session.post(f"{emulator.url}/_emulator/{name}", json=body, timeout=5)

    yield call
    session.close()


def test_control_endpoint_sets_links_and_rotation(control, ksm):
    answer = control("pam-rotation", {"uid": ALICE_UID, "enabled": False, "resource_uid": "PamMachineRec0rdUid001"})
    assert answer.json() == {"resource_uid": "PamMachineRec0rdUid001"}
    assert by_path(read(ksm, ALICE_UID))[None].get_rotation_settings()["disabled"] is True

    link = {"recordUid": BOB_UID, "path": "meta", "data": {"allowedSettings": {"rotation": True}}}
    assert control("links", {"uid": BOB_UID, "links": [link]}).json() == {"ok": True}
    assert by_path(read(ksm, BOB_UID))["meta"].allows_rotation() is True

    uid = control("records", {"title": "carol", "links": [link]}).json()["uid"]
    assert len(read(ksm, uid).get_links()) == 1


@pytest.mark.parametrize(
    ("name", "body", "status", "error"),
    [
        ("pam-rotation", {"uid": "NoSuchRec0rdUid0000001"}, 404, "record_not_found"),
        ("pam-rotation", {"uid": ALICE_UID, "colour": "red"}, 400, "bad_request"),
        ("links", {"uid": ALICE_UID, "links": ["not an object"]}, 400, "bad_request"),
        ("links", {"uid": ALICE_UID, "links": [{"recordUid": "x", "extra": 1}]}, 400, "bad_request"),
    ],
)
def test_control_endpoint_refuses_bad_links(control, name, body, status, error):
    response = control(name, body)

    assert response.status_code == status
    assert response.json()["error"] == error
