"""The rotator's Keeper transport (keeper.py `_Transport`, urllib3) against the emulator: the same answers, errors and
TLS checks and proxy settings as the SDK's stock `requests` transport, over one keep-alive connection."""

import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from keeper_iam_rotator.errors import KeeperCallError, KeeperThrottledError
from keeper_iam_rotator.keeper import KeeperVault
from keeper_iam_rotator.sensitive import Secret

from .conftest import ALICE_UID, BOB_UID

ARN = "arn:aws:iam::123456789012:user/alice"


@pytest.fixture
def vault(emulator) -> KeeperVault:
    return KeeperVault(emulator.client_config(), timeout=2.0)


def rotate(vault: KeeperVault, password: str) -> None:
    user = vault.fetch([ALICE_UID])[ALICE_UID]
    vault.stage(user, Secret(password), "123456789012", ARN)
    vault.commit(ALICE_UID)


def test_calls_share_one_keep_alive_connection(emulator, vault):
    for n in range(3):
        rotate(vault, f"Rotated-{n}-password!")

    assert emulator.vault.committed(ALICE_UID)["fields"][1]["value"] == ["Rotated-2-password!"]
    assert emulator.vault.calls == {"get_secret": 3, "update_secret": 3, "finalize_secret_update": 3}
    (pool_manager,) = vault._sm.post_function._pools.values()
    assert pool_manager.connection_from_url(emulator.url).num_connections == 1  # nine calls, one TLS handshake


def test_a_json_error_is_the_sdks_keeper_error(emulator, vault):
    emulator.vault.inject_fault("get_secret", status=503)

    with pytest.raises(KeeperCallError, match="service_unavailable"):
        vault.fetch([ALICE_UID])
    assert set(vault.fetch([ALICE_UID, BOB_UID])) == {ALICE_UID, BOB_UID}


def test_a_text_error_is_an_http_error_with_its_status(emulator, vault):
    emulator.vault.inject_fault("get_secret", status=502, body="<html>bad gateway</html>")

    with pytest.raises(KeeperCallError, match=r"HTTPError: Status Code: 502, Reason: Bad Gateway"):
        vault.fetch([ALICE_UID])


def test_a_throttle_is_raised_at_once_instead_of_sleeping_in_the_sdk(emulator, vault):
    """The SDK would sleep 11 s doubling, five times; the transport answers the throttle itself, after one request."""
    emulator.vault.inject_fault("get_secret", kind="throttle", times=1, seconds=30)

    started = time.monotonic()
    with pytest.raises(KeeperThrottledError, match="Keeper throttled get_secret for client device"):
        vault.fetch([ALICE_UID])
    assert time.monotonic() - started < 5  # not the SDK's 11 s first retry
    assert emulator.vault.calls["get_secret"] == 1
    assert set(vault.fetch([ALICE_UID])) == {ALICE_UID}


def test_a_dropped_connection_is_a_connection_error_and_changes_nothing(emulator, vault):
    user = vault.fetch([ALICE_UID])[ALICE_UID]
    emulator.vault.inject_fault("update_secret", kind="drop")

    with pytest.raises(KeeperCallError, match="ConnectionError"):
        vault._call("stage update", vault._sm.save, user.record)
    assert emulator.vault.revision(ALICE_UID) == 1
    rotate(vault, "After-the-drop-password!")  # the pool replaces the dead connection
    assert emulator.vault.revision(ALICE_UID) == 2


def test_a_slow_answer_times_out_instead_of_waiting_for_it(emulator, vault):
    emulator.vault.inject_fault("get_secret", kind="delay", seconds=5)

    with pytest.raises(KeeperCallError, match="ReadTimeout"):  # without the timeout the answer would come, late
        vault.fetch([ALICE_UID])


def test_an_untrusted_certificate_is_refused(emulator, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # certifi's bundle does not know the emulator's CA
    vault = KeeperVault(emulator.client_config(), timeout=2.0)

    with pytest.raises(KeeperCallError, match="SSLError"):
        vault.fetch([ALICE_UID])
    assert emulator.vault.calls == {}


def test_curl_ca_bundle_is_honoured_like_requests_does(emulator, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("CURL_CA_BUNDLE", emulator.ca_file)

    assert set(KeeperVault(emulator.client_config()).fetch([ALICE_UID])) == {ALICE_UID}


def test_ksm_skip_verify_turns_certificate_checks_off_as_the_sdk_documents(emulator, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.setenv("KSM_SKIP_VERIFY", "true")  # the SDK's switch; it warns, and so does urllib3

    with pytest.warns(Warning):
        assert set(KeeperVault(emulator.client_config()).fetch([ALICE_UID])) == {ALICE_UID}


def test_a_refused_connection_is_a_connection_error_not_a_timeout(emulator):
    config = emulator.client_config()
    emulator.close()  # nothing listens on the emulator's port any more

    with pytest.raises(KeeperCallError, match=r"read records: ConnectionError: cannot connect to https://127\.0\.0\.1"):
        KeeperVault(config, timeout=2.0).fetch([ALICE_UID])


class _ConnectProxy(socketserver.ThreadingTCPServer):
    """An HTTPS proxy on loopback: answers CONNECT, then relays bytes both ways; remembers each CONNECT target."""

    daemon_threads = True

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        super().__init__(("127.0.0.1", 0), _Tunnel)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Tunnel(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        target = self.rfile.readline().split()[1].decode()  # CONNECT host:port HTTP/1.1
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        self.server.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as upstream:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            sockets = [self.connection, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 5)
                if not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is self.connection else self.connection).sendall(data)


@pytest.fixture
def proxy(monkeypatch) -> Iterator[_ConnectProxy]:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = _ConnectProxy()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_https_proxy_from_the_environment_carries_the_calls(emulator, proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)

    rotate(KeeperVault(emulator.client_config()), "Through-the-proxy-pw1!")

    assert emulator.vault.committed(ALICE_UID)["fields"][1]["value"] == ["Through-the-proxy-pw1!"]
    assert proxy.tunnels == [emulator.url.removeprefix("https://")]  # one tunnel, kept alive for all three calls


def test_no_proxy_exempts_the_keeper_host(emulator, proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    rotate(KeeperVault(emulator.client_config()), "Around-the-proxy-pw1!")

    assert emulator.vault.committed(ALICE_UID)["fields"][1]["value"] == ["Around-the-proxy-pw1!"]
    assert proxy.tunnels == []
