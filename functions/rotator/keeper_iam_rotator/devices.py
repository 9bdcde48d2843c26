"""Several KSM client devices as one vault: each record is read, staged and committed through one device that sees it.

KSM_CONFIG_SECRET_ID lists one secret per client device (of one KSM application or several). Keeper throttles
each device on its own (pacing.py), so capacity grows with their number when the records are spread over them:
- a record's device is a stable pick among the devices that see it (a hash of its uid), or the device its queue
  message names (fanout.py groups hand-offs by device, so a worker's batch is one device and one read);
- a request's records are read from their devices, one read per device; a record a device does not return is
  asked of the others (it may be shared with another application only);
- a device whose secret cannot be read, or whose config points elsewhere (trust.py), serves nothing: only the
  records no other device sees fail, naming the secret (never its content).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .keeper import KeeperVault, PamUser
from .results import Code
from .sensitive import Secret


@dataclass(frozen=True)
class Device:
    """One configured client device: its secret, and its vault or why it has none (`code`, `problem`)."""

    secret_id: str
    vault: KeeperVault | None = None
    code: Code | None = None
    problem: str = ""


def _spread(uid: str, count: int) -> int:
    """A stable index in [0, count) per record."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big") % count


class Devices:
    """The vault interface of keeper.KeeperVault over every usable device, routing each record to one of them."""

    def __init__(self, devices: Sequence[Device], hints: Mapping[str, int] | None = None) -> None:
        self.all = list(devices)
        self.usable = [device for device in devices if device.vault is not None]
        self._hints = {uid: n for uid, n in (hints or {}).items() if 0 <= n < len(devices) and devices[n].vault}
        self._routes: dict[str, Device] = {}
        self._lock = threading.Lock()

    @property
    def unusable(self) -> list[Device]:
        return [device for device in self.all if device.vault is None]

    def index_of(self, uid: str) -> int:
        """The position in KSM_CONFIG_SECRET_ID of the device the record goes through (what a hand-off names)."""
        return self.all.index(self._device(uid))

    def _candidates(self, uid: str) -> list[Device]:
        """The usable devices in the order a record asks them: its hint or its spread pick first."""
        usable = self.usable
        first = self._hints.get(uid)
        start = usable.index(self.all[first]) if first is not None else _spread(uid, len(usable))
        return usable[start:] + usable[:start]

    def _device(self, uid: str) -> Device:
        with self._lock:
            return self._routes.get(uid) or self._candidates(uid)[0]

    def _vault(self, uid: str) -> KeeperVault:
        vault = self._device(uid).vault
        if vault is None:  # only usable devices are ever routed to
            raise LookupError("no usable client device")
        return vault

    def vaults(self) -> list[KeeperVault]:
        return [device.vault for device in self.usable if device.vault is not None]

    def _remember(self, device: Device, users: Iterable[PamUser]) -> None:
        with self._lock:
            self._routes.update({user.uid: device for user in users})

    def fetch(self, uids: Sequence[str], links: bool = False) -> dict[str, PamUser]:
        """The requested records any usable device sees, by uid: one read per device, then the ones a device did
        not return asked of the next."""
        found: dict[str, PamUser] = {}
        pending = list(dict.fromkeys(uids))
        for attempt in range(len(self.usable)):
            groups: dict[int, list[str]] = {}
            for uid in pending:
                groups.setdefault(id(self._candidates(uid)[attempt]), []).append(uid)
            for device in self.usable:
                if id(device) in groups and device.vault is not None:
                    users = device.vault.fetch(groups[id(device)], links=links)
                    self._remember(device, users.values())
                    found.update(users)
            pending = [uid for uid in pending if uid not in found]
            if not pending:
                break
        return found

    def fetch_all(self, folder_uids: Sequence[str] = (), links: bool = False) -> list[PamUser]:
        """Every record (in the folders, if given) any usable device sees; each through one of the devices that
        see it, spread by its uid."""
        seen: dict[str, list[tuple[Device, PamUser]]] = {}
        for device in self.usable:
            for user in device.vault.fetch_all(folder_uids, links=links) if device.vault else ():
                seen.setdefault(user.uid, []).append((device, user))
        chosen = [copies[_spread(uid, len(copies))] for uid, copies in seen.items()]
        with self._lock:
            self._routes.update({user.uid: device for device, user in chosen})
        return [user for _, user in chosen]

    def committed_password(self, uid: str) -> Secret | None:
        return self._vault(uid).committed_password(uid)

    def stage(self, user: PamUser, password: Secret, account_id: str, user_arn: str) -> None:
        self._vault(user.uid).stage(user, password, account_id, user_arn)

    def commit(self, uid: str) -> None:
        self._vault(uid).commit(uid)

    def rollback(self, uid: str) -> None:
        self._vault(uid).rollback(uid)

    def unreadable_note(self) -> str:
        """What a record no usable device returned may be missing for: the secrets that could not be used."""
        if not self.unusable:
            return ""
        names = ", ".join(device.secret_id for device in self.unusable)
        return f"; the KSM config secret(s) {names} could not be used, and a record they alone see is not reachable"
