"""The emulated vault: one KSM application, its clients, shared folders and records.

Everything a test wants to arrange or inspect lives here, behind one lock, so the HTTP threads and
the test thread can touch it at the same time. Records keep their committed JSON (what readers see)
apart from a staged ("transactionType") update, which only finalize makes visible.
"""

import copy
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ksm_emulator import crypto
from ksm_emulator.links import DEFAULT_PAM_CONFIG_UID, is_rotation_link, normalize_link, pam_rotation_links
from ksm_emulator.throttle import BurstLimit, Limiter, RateLimit

KSM_PATHS = ("get_secret", "update_secret", "finalize_secret_update", "rollback_secret_update")
FAULT_KINDS = ("error", "throttle", "drop", "drop_after", "delay")
PENDING_POLICIES = ("replace", "refuse")
DEFAULT_APP_TITLE = "KSM Emulator"

Seed = Mapping[str, Any] | str | Path | None


class KsmError(Exception):
    """A refusal the service answers with a plain JSON error body and a non-200 status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.status = status
        self.error = error
        self.message = message


INVALID_REVISION = (
    HTTPStatus.BAD_REQUEST,
    "invalid_revision",
    "The record revision is out of date. Re-fetch the record and try again.",
)


@dataclass
class Client:
    """A device of the application; ``public_key`` is None until its one-time token is redeemed."""

    client_id: str
    public_key: bytes | None = None
    client_key: bytes | None = None


@dataclass
class Folder:
    uid: str
    name: str
    key: bytes


@dataclass
class Record:
    uid: str
    folder: str | None
    key: bytes
    committed: dict[str, Any]
    staged: dict[str, Any] | None = None
    revision: int = 1
    links: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Fault:
    path: str
    kind: str
    remaining: int
    status: int
    body: Any
    seconds: float


@dataclass
class ReadView:
    """Copies of what one ``get_secret`` call may return, taken under the lock."""

    app_title: str
    direct: list[Record] = field(default_factory=list)
    folders: list[tuple[Folder, list[Record]]] = field(default_factory=list)


def load_seed(seed: Seed) -> dict[str, Any]:
    """Accept a seed as a dict, a JSON file path or None (an empty vault)."""
    if seed is None:
        return {}
    if isinstance(seed, str | Path):
        return json.loads(Path(seed).read_text(encoding="utf-8"))
    return copy.deepcopy(dict(seed))


class Vault:
    """Thread-safe state of one KSM application as the service would hold it."""

    def __init__(
        self,
        seed: Seed = None,
        pending_policy: str = "replace",
        *,
        throttle: BurstLimit | None = None,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.RLock()
        self.app_key = crypto.new_key()
        self.owner_public_key = crypto.public_point(crypto.new_ec_key())
        self._clients: dict[str, Client] = {}
        self._seed = load_seed(seed)
        self._initial_policy = pending_policy
        self._initial_limits = (throttle, rate_limit)
        self._limiter = Limiter(clock=clock)
        self.reset()

    # --- setup and inspection -------------------------------------------------------------------

    def reset(self, seed: Seed = None) -> None:
        """Back to ``seed``, or to the construction seed when None; clients and keys survive.

        The throttle settings go back to the construction's (like the pending policy), with fresh counters.
        """
        data = self._seed if seed is None else load_seed(seed)
        with self._lock:
            self.app_title = data.get("app", {}).get("title", DEFAULT_APP_TITLE)
            self._folders: dict[str, Folder] = {}
            self._records: dict[str, Record] = {}
            self._faults: list[Fault] = []
            self._calls: Counter[str] = Counter()
            self._latency = 0.0
            self.pending_policy = self._initial_policy
            self._limiter.set_burst(self._initial_limits[0])
            self._limiter.set_rate(self._initial_limits[1])
            self._limiter.reset_counts()
            for folder in data.get("folders", []):
                self.add_folder(uid=folder.get("uid"), name=folder.get("name", ""))
            for record in data.get("records", []):
                self._seed_record(record)

    def _seed_record(self, record: Mapping[str, Any]) -> None:
        """One seed entry: the record, its raw ``links`` and/or a ``pam_rotation`` (set_pam_rotation's arguments)."""
        uid = self.add_record(
            uid=record.get("uid"),
            type=record.get("type", "pamUser"),
            title=record.get("title", ""),
            fields=record.get("fields", []),
            custom=record.get("custom", []),
            folder=record.get("folder"),
            links=record.get("links"),
        )
        if record.get("pam_rotation") is not None:
            self.set_pam_rotation(uid, **record["pam_rotation"])

    @property
    def pending_policy(self) -> str:
        return self._pending_policy

    @pending_policy.setter
    def pending_policy(self, policy: str) -> None:
        if policy not in PENDING_POLICIES:
            raise ValueError(f"pending_policy must be one of {PENDING_POLICIES}, not {policy!r}")
        self._pending_policy = policy

    def add_folder(self, uid: str | None = None, name: str = "") -> str:
        """Create a shared folder of the app (or rename an existing one); returns its uid."""
        uid = uid or crypto.new_uid()
        with self._lock:
            existing = self._folders.get(uid)
            if existing is None:
                self._folders[uid] = Folder(uid, name, crypto.new_key())
            elif name:
                existing.name = name
        return uid

    def add_record(
        self,
        uid: str | None = None,
        *,
        type: str = "pamUser",
        title: str = "",
        fields: list[dict[str, Any]] | None = None,
        custom: list[dict[str, Any]] | None = None,
        folder: str | None = None,
        links: list[Mapping[str, Any]] | None = None,
    ) -> str:
        """Add a record shared directly to the app (``folder=None``) or in a shared folder, with ``links`` (see
        ``ksm_emulator.links``) that ``get_secret`` returns only when the client requests links."""
        uid = uid or crypto.new_uid()
        data = {
            "title": title,
            "type": type,
            "fields": copy.deepcopy(fields or []),
            "custom": copy.deepcopy(custom or []),
        }
        stored_links = [normalize_link(link) for link in links or []]
        with self._lock:
            if folder is not None and folder not in self._folders:
                self.add_folder(uid=folder)
            self._records[uid] = Record(uid, folder, crypto.new_key(), data, links=stored_links)
        return uid

    def set_links(self, uid: str, links: list[Mapping[str, Any]]) -> None:
        """Replace a record's links (``{"recordUid", "path", "data"}``; ``data`` as JSON, encoded when served)."""
        stored = [normalize_link(link) for link in links]
        with self._lock:
            self._get(uid).links = stored

    def links(self, uid: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._get(uid).links)

    def set_pam_rotation(self, uid: str, **settings: Any) -> str:
        """Mark a record as one KeeperPAM rotates (``enabled=True``) or knows but does not (``enabled=False``):
        its ``meta`` self-link and its credential link to the PAM configuration, replacing earlier ones. Keyword
        arguments are ``ksm_emulator.links.pam_rotation_links``'s; returns the credential link's ``recordUid``."""
        resource_uid = settings.setdefault("resource_uid", DEFAULT_PAM_CONFIG_UID)
        with self._lock:
            record = self._get(uid)
            new_links = pam_rotation_links(uid, record.key, **settings)
            kept = [link for link in record.links if not is_rotation_link(link, uid, resource_uid)]
            record.links = kept + new_links
        return str(resource_uid)

    def committed(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(uid)
            return copy.deepcopy(record.committed) if record else None

    def staged(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(uid)
            return copy.deepcopy(record.staged) if record else None

    def revision(self, uid: str) -> int:
        with self._lock:
            return self._get(uid).revision

    def dump(self) -> dict[str, Any]:
        """JSON-safe snapshot for tests and the control endpoint (contains secrets: never log it)."""
        with self._lock:
            return {
                "app": {"title": self.app_title},
                "pending_policy": self.pending_policy,
                "folders": [{"uid": f.uid, "name": f.name} for f in self._folders.values()],
                "records": [
                    {
                        "uid": r.uid,
                        "folder": r.folder,
                        "revision": r.revision,
                        "committed": copy.deepcopy(r.committed),
                        "staged": copy.deepcopy(r.staged),
                        "links": copy.deepcopy(r.links),
                    }
                    for r in self._records.values()
                ],
            }

    # --- faults, latency, call counts --------------------------------------------------------

    def inject_fault(
        self,
        path: str,
        kind: str = "error",
        *,
        times: int = 1,
        status: int = 500,
        body: Any = None,
        seconds: float = 0.0,
    ) -> None:
        """Make the next ``times`` calls to ``path`` ("*" for any) misbehave.

        A throttle's ``seconds`` becomes ``retry_after``; at 0 the SDK falls back to its own 11 s backoff.
        """
        if path != "*" and path not in KSM_PATHS:
            raise ValueError(f"path must be '*' or one of {KSM_PATHS}, not {path!r}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, not {kind!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(Fault(path, kind, times, status, body, seconds))

    def clear_faults(self) -> None:
        """Drop every pending fault (the records and their revisions stay as they are)."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        """Consume one use of the first fault matching ``path``."""
        with self._lock:
            for fault in self._faults:
                if fault.path in (path, "*"):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return copy.copy(fault)
        return None

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    def count_call(self, path: str) -> None:
        with self._lock:
            self._calls[path] += 1

    @property
    def calls(self) -> Counter[str]:
        """KSM requests received per path, faulted ones included (a copy)."""
        with self._lock:
            return Counter(self._calls)

    def reset_calls(self) -> None:
        """Zero the per-path calls and the per-device request and throttle counts (not the limits' state)."""
        with self._lock:
            self._calls.clear()
            self._limiter.reset_counts()

    # --- throttling ----------------------------------------------------------------------------------

    def set_throttle(self, burst: int | None, quiet: float = 10.0) -> None:
        """The SDK's model: beyond ``burst`` requests to one endpoint per device without a ``quiet``-second pause,
        answer 403 throttled (Keeper: 100 and 10). ``burst=None`` turns it off."""
        limit = None if burst is None else BurstLimit(int(burst), float(quiet))
        with self._lock:
            self._limiter.set_burst(limit)

    def set_rate_limit(self, requests: int | None, seconds: float = 60.0) -> None:
        """At most ``requests`` per ``seconds`` per device, all endpoints together (Keeper's page: 10 per 60).
        ``requests=None`` turns it off."""
        limit = None if requests is None else RateLimit(int(requests), float(seconds))
        with self._lock:
            self._limiter.set_rate(limit)

    def admit(self, client_id: str, route: str) -> float | None:
        """Count one authenticated request; None to serve it, else the ``retry_after`` of a throttled answer."""
        with self._lock:
            return self._limiter.admit(client_id, route)

    def throttle_state(self) -> dict[str, Any]:
        """JSON-safe: both models' settings, requests and throttled answers by device and endpoint, and the total."""
        with self._lock:
            return {**self._limiter.settings(), **self._limiter.counts()}

    @property
    def throttled_total(self) -> int:
        """How many throttled answers the limits gave since the last reset (injected throttle faults not included)."""
        with self._lock:
            return sum(self._limiter.throttled.values())

    # --- clients ---------------------------------------------------------------------------------

    def new_client(self) -> tuple[str, bytes]:
        """Register a bound client; returns its clientId and PKCS8 DER private key."""
        private_key = crypto.new_ec_key()
        client_id = crypto.client_id_for(crypto.new_key())
        with self._lock:
            self._clients[client_id] = Client(client_id, public_key=crypto.public_point(private_key))
        return client_id, crypto.private_key_der(private_key)

    def new_token(self) -> str:
        """Register an unbound client and return its one-time token (url-safe base64 client key)."""
        client_key = crypto.new_key()
        client_id = crypto.client_id_for(client_key)
        with self._lock:
            self._clients[client_id] = Client(client_id, client_key=client_key)
        return crypto.urlsafe_b64(client_key)

    def client(self, client_id: str) -> Client | None:
        with self._lock:
            client = self._clients.get(client_id)
            return copy.copy(client) if client else None

    def bind(self, client_id: str, public_key: bytes) -> bool:
        """Redeem a one-time token; False when the client is unknown or already bound."""
        with self._lock:
            client = self._clients.get(client_id)
            if client is None or client.public_key is not None:
                return False
            client.public_key = public_key
            return True

    # --- what the routes do -----------------------------------------------------------------

    def read(self, record_uids: list[str] | None, folder_uids: list[str] | None) -> ReadView:
        """Committed records visible to one get_secret call, with the same filters as the service."""

        def wanted(record: Record) -> bool:
            if record_uids and record.uid not in record_uids:
                return False
            return not folder_uids or record.folder in folder_uids

        with self._lock:
            view = ReadView(self.app_title)
            chosen = [copy.deepcopy(r) for r in self._records.values() if wanted(r)]
            view.direct = [r for r in chosen if r.folder is None]
            for folder in self._folders.values():
                members = [r for r in chosen if r.folder == folder.uid]
                listed = folder_uids and folder.uid in folder_uids
                if members or listed or not (record_uids or folder_uids):
                    view.folders.append((copy.copy(folder), members))
            return view

    def record_key(self, uid: str) -> bytes:
        with self._lock:
            return self._get(uid).key

    def update(self, uid: str, data: dict[str, Any], revision: Any, transactional: bool) -> None:
        """Apply (or stage, when ``transactional``) a full record update at ``revision``."""
        with self._lock:
            record = self._get(uid)
            if revision != record.revision:
                raise KsmError(*INVALID_REVISION)
            if record.staged is not None and self.pending_policy == "refuse":
                raise KsmError(
                    HTTPStatus.CONFLICT,
                    "transaction_pending",
                    "A transaction is already pending for this record. Finalize or roll it back first.",
                )
            if transactional:
                record.staged = data
            else:
                record.committed, record.staged = data, None
                record.revision += 1

    def finalize(self, uid: str) -> None:
        with self._lock:
            record, staged = self._pending(uid)
            record.committed, record.staged = staged, None
            record.revision += 1

    def rollback(self, uid: str) -> None:
        with self._lock:
            record, _ = self._pending(uid)
            record.staged = None

    def _get(self, uid: str) -> Record:
        record = self._records.get(uid)
        if record is None:
            raise KsmError(HTTPStatus.NOT_FOUND, "record_not_found", "The record is not shared with the application.")
        return record

    def _pending(self, uid: str) -> tuple[Record, dict[str, Any]]:
        record = self._get(uid)
        if record.staged is None:
            raise KsmError(HTTPStatus.BAD_REQUEST, "no_pending_transaction", "There is no pending transaction.")
        return record, record.staged
