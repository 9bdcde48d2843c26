"""Several KSM client devices as one vault: each record is read, staged and committed through one device that sees it.

KSM_CONFIG_SECRET_ID lists one secret per client device (of one KSM application or several). Keeper throttles
each device on its own (pacing.py), so capacity grows with their number when the records are spread over them:
- a record's device is a stable pick among the devices that see it (a hash of its uid), or the device its queue
  message names; it stages and commits the record, so every device carries its share of the writes whichever
  records a worker's batch holds;
- a request's records are read once per KSM application, through the device most of them name: every device of an
  application sees the same records (fanout.py groups hand-offs by application, so a worker's batch is one read);
  a record a read does not return is asked of the other devices (it may be shared with another application only);
- a device whose secret cannot be read, or whose config points elsewhere (trust.py), serves nothing: only the
  records no other device sees fail, naming the secret (never its content).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
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

    @property
    def application(self) -> str:
        """Which KSM application the device belongs to (its devices see the same records)."""
        return self.vault.application if self.vault is not None else self.secret_id


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

    def peers_of(self, index: int) -> tuple[int, ...]:
        """The positions of the usable devices of the same KSM application as device `index` (they see the same
        records): hand-offs among them share a queue batch and its one Keeper read, and may go through any of them."""
        application = self.all[index].application
        peers = tuple(n for n, device in enumerate(self.all) if device.vault and device.application == application)
        return peers or (index,)

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

    def fetch(self, uids: Sequence[str], links: bool = False) -> dict[str, PamUser]:
        """The requested records any usable device sees, by uid. Each application is read once, through the device
        most of its records name; each record is then written through the device it names (same application: it
        sees the record too). Records a read did not return are asked of their next application, and so on."""
        found: dict[str, PamUser] = {}
        asked: dict[str, set[str]] = {uid: set() for uid in uids}
        while wanted := self._next_devices(asked, found):
            by_application: dict[str, list[str]] = {}
            for uid, device in wanted.items():
                by_application.setdefault(device.application, []).append(uid)
                asked[uid].add(device.application)
            for group in by_application.values():
                reader = Counter(self.usable.index(wanted[uid]) for uid in group).most_common(1)[0][0]
                vault = self.usable[reader].vault
                users = vault.fetch(group, links=links) if vault is not None else {}
                with self._lock:
                    self._routes.update({uid: wanted[uid] for uid in users})
                found.update(users)
        return found

    def _next_devices(self, asked: Mapping[str, set[str]], found: Mapping[str, PamUser]) -> dict[str, Device]:
        """Each record not found yet: its first device of an application not asked yet (none left: not listed)."""
        wanted = {}
        for uid, applications in asked.items():
            device = next((d for d in self._candidates(uid) if d.application not in applications), None)
            if uid not in found and device is not None:
                wanted[uid] = device
        return wanted

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
