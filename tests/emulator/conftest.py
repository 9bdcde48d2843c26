"""Fixtures for the KSM emulator tests: a seeded server and stock SDK clients pointed at it."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from keeper_secrets_manager_core import SecretsManager
from keeper_secrets_manager_core.storage import InMemoryKeyValueStorage

from ksm_emulator import EmulatorServer

FOLDER_UID = "Fq2UWJh7n9eXy8Pp0ZbJ1g"
ALICE_UID = "A1ic3Rec0rdUid00000001"
BOB_UID = "B0bRec0rdUid0000000002"
APP_TITLE = "Rotation App"

SEED: dict[str, Any] = {
    "app": {"title": APP_TITLE},
    "folders": [{"uid": FOLDER_UID, "name": "IAM users"}],
    "records": [
        {
            "uid": ALICE_UID,
            "folder": None,
            "type": "pamUser",
            "title": "alice",
            "fields": [{"type": "login", "value": ["alice"]}, {"type": "password", "value": ["alice-old"]}],
            "custom": [],
        },
        {
            "uid": BOB_UID,
            "folder": FOLDER_UID,
            "type": "pamUser",
            "title": "bob",
            "fields": [{"type": "login", "value": ["bob"]}, {"type": "password", "value": ["bob-old"]}],
            "custom": [{"type": "text", "label": "note", "value": ["x"]}],
        },
    ],
}

# Variables the SDK or requests read that would point a client somewhere else.
_KSM_ENV = ("KSM_CONFIG", "KSM_TOKEN", "KSM_HOSTNAME", "KSM_SKIP_VERIFY", "CURL_CA_BUNDLE")


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """A seeded emulator whose certificate requests trusts for the duration of the test."""
    for name in _KSM_ENV:
        monkeypatch.delenv(name, raising=False)
    with EmulatorServer(seed=SEED) as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
        yield server


@pytest.fixture
def make_client(emulator: EmulatorServer) -> Callable[[], SecretsManager]:
    """Build a stock SDK client from a fresh bound config of the emulator's app."""

    def make() -> SecretsManager:
        return SecretsManager(config=InMemoryKeyValueStorage(emulator.client_config()))

    return make


@pytest.fixture
def ksm(make_client: Callable[[], SecretsManager]) -> SecretsManager:
    return make_client()
