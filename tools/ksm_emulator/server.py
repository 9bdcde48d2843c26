"""HTTPS server on loopback that hosts the KSM routes and the control endpoint."""

import ipaddress
import json
import logging
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from ksm_emulator import crypto, tls
from ksm_emulator.control import CONTROL_PREFIX, handle_control
from ksm_emulator.protocol import KSM_PREFIX, KsmProtocol, Response, error_response
from ksm_emulator.state import Seed, Vault
from ksm_emulator.throttle import BurstLimit, RateLimit

SERVER_PUBLIC_KEY_ID = "10"
CONNECTION_TIMEOUT = 30.0
POLL_INTERVAL = 0.05  # how fast close() takes effect; serve_forever() only checks between polls

logger = logging.getLogger("ksm_emulator")


def require_loopback(host: str) -> None:
    """Refuse anything but an IPv4 loopback literal: the emulator must never be reachable off-host."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not isinstance(address, ipaddress.IPv4Address) or not address.is_loopback:
        raise ValueError(f"host must be an IPv4 loopback address such as 127.0.0.1, not {host!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service behind its load balancer
    timeout = CONNECTION_TIMEOUT
    server: "_HttpServer"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        response = self.server.emulator.dispatch(method, urlsplit(self.path).path, dict(self.headers), body)
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: "EmulatorServer") -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up or distrust the certificate are routine here, not tracebacks on stderr.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class EmulatorServer:
    """A KSM service for one application on ``https://127.0.0.1:PORT``, served from a daemon thread.

    ``throttle`` and ``rate_limit`` switch on Keeper's throttling models (off by default, so no test meets them by
    accident); ``vault.set_throttle`` / ``vault.set_rate_limit`` change them at run time.
    """

    def __init__(
        self,
        seed: Seed = None,
        pending_policy: str = "replace",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        throttle: BurstLimit | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        require_loopback(host)
        self.vault = Vault(seed, pending_policy, throttle=throttle, rate_limit=rate_limit)
        server_key = crypto.new_ec_key()
        self.server_public_key = crypto.urlsafe_b64(crypto.public_point(server_key))
        self._protocol = KsmProtocol(self.vault, server_key)
        self._tmp = tempfile.TemporaryDirectory(prefix="ksm-emulator-")
        cert_path, key_path = tls.write_certificate(Path(self._tmp.name), host)
        self.ca_file = str(cert_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self._httpd = _HttpServer((host, port), self)
        # Handshake lazily in the handler thread so one stuck client cannot block accept().
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.host = f"{host}:{self._httpd.server_address[1]}"
        self.url = f"https://{self.host}"
        self._closed = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(POLL_INTERVAL,), name="ksm-emulator", daemon=True
        )
        self._thread.start()
        logger.info("KSM emulator listening on %s", self.url)

    def dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        """Route one HTTP request to the control endpoint or the KSM protocol."""
        if path.startswith(CONTROL_PREFIX):
            return handle_control(method, path, body, self)
        if path.startswith(KSM_PREFIX):
            if method != "POST":
                return error_response(405, "method_not_allowed", "Secrets Manager endpoints accept POST only.")
            return self._protocol.handle(path, headers, body)
        return error_response(404, "not_found", "Not found.")

    def client_config(self, json_form: bool = False) -> str:
        """Register a new bound client and return its KSM config (base64 of the JSON, or the JSON)."""
        client_id, private_key_der = self.vault.new_client()
        config = {
            "hostname": self.host,
            "clientId": client_id,
            "privateKey": crypto.b64(private_key_der),
            "appKey": crypto.b64(self.vault.app_key),
            "serverPublicKeyId": SERVER_PUBLIC_KEY_ID,
            "serverPublicKey": self.server_public_key,
            "appOwnerPublicKey": crypto.b64(self.vault.owner_public_key),
        }
        text = json.dumps(config)
        return text if json_form else crypto.b64(text.encode())

    def one_time_token(self) -> str:
        """A fresh single-use token for an unbound client (redeem with ``hostname=`` and ``server_public_key=``)."""
        return self.vault.new_token()

    def close(self) -> None:
        """Stop serving, close the socket and delete the certificate files; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._tmp.cleanup()
        logger.info("KSM emulator on %s stopped", self.url)

    def __enter__(self) -> "EmulatorServer":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
