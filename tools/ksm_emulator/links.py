"""Record links as ``get_secret`` returns them when the client asks (``requestLinks: true``).

How KeeperPAM shows a KSM client that it rotates a record. Checked against keeper-secrets-manager-core 17.3
(``dto/dtos.py`` ``KeeperRecordLink`` and its tests of the live backend's shapes):

- each record in ``records[]`` and ``folders[].records[]`` carries ``links``: a list of
  ``{"recordUid": str, "data": str | null, "path": str | null}``; the SDK keeps it raw in ``record.links`` and
  ``record.get_links()`` skips entries without a string ``recordUid``;
- ``data`` is **standard, padded** base64 (the SDK decodes it with ``base64.b64decode`` without ``validate``: url-safe
  ``-``/``_`` would be silently dropped and missing padding fails) of plain JSON for the ``meta`` self-link and for
  credential links (``path`` null), and of AES-256-GCM (iv ‖ ciphertext ‖ tag) under the **owning record's key** for
  ``ai_settings`` / ``jit_settings``. The SDK only parses data whose decoded text starts with ``{`` or ``[`` as plain
  JSON, and reads booleans strictly: ``"true"`` as a string is False;
- ``meta`` (``recordUid`` = the record itself): ``allowedSettings`` {``rotation``, ``connections``, ...},
  ``rotateOnTermination``, ``version``, ``no_update_services`` → ``allows_rotation()``, ``rotates_on_termination()``;
- credential link (``recordUid`` = the resource or PAM configuration the user belongs to): ``is_admin``,
  ``is_launch_credential``, ``is_iam_user``, ``belongs_to``, ``rotation_settings`` {``schedule``, ``pwd_complexity``,
  ``disabled``, ``noop``, ``saas_record_uid_list``} → ``is_iam_user()``, ``get_rotation_settings()``.

So ``allows_rotation()`` and ``get_rotation_settings()`` are answered by two different links of one record.
``pwd_complexity`` is opaque to the SDK; Commander writes it as AES-GCM(record key, JSON rule list ``{"length",
"caps", "lowercase", "digits", "special", "specialChars"}``), which is what :func:`pam_rotation_links` sends (std
base64), or ``""`` when no rule is given. The schedule is passed through as given (``""`` = on demand, the SDK
fixture's live value).
"""

import json
from collections.abc import Mapping
from typing import Any

from ksm_emulator import crypto

ENCRYPTED_PATHS = ("ai_settings", "jit_settings")
META_PATH = "meta"
# The AWS PAM configuration record an IAM user's credential link points at, unless a test names another.
DEFAULT_PAM_CONFIG_UID = "PamAwsConfigRec0rdUid1"


def normalize_link(link: Mapping[str, Any]) -> dict[str, Any]:
    """A link as the vault stores it: ``recordUid``, ``path`` and ``data`` — a JSON value (encoded when served), a
    str (sent verbatim, to try the SDK on malformed data) or None (a pure reference)."""
    if not isinstance(link, Mapping):
        raise TypeError(f"a link must be a JSON object, not {type(link).__name__}")
    unknown = set(link) - {"recordUid", "path", "data"}
    if unknown:
        raise ValueError(f"unknown link keys {sorted(unknown)}: use recordUid, path, data")
    return {"recordUid": link.get("recordUid"), "path": link.get("path"), "data": link.get("data")}


def encode(link: Mapping[str, Any], record_key: bytes) -> dict[str, Any]:
    """The wire form of one stored link (see the module docstring)."""
    data = link["data"]
    if data is not None and not isinstance(data, str):
        plain = json.dumps(data).encode()
        data = crypto.b64(crypto.encrypt(plain, record_key) if link["path"] in ENCRYPTED_PATHS else plain)
    return {"recordUid": link["recordUid"], "data": data, "path": link["path"]}


def pam_rotation_links(
    uid: str,
    record_key: bytes,
    *,
    enabled: bool = True,
    allowed: bool = True,
    iam_user: bool = True,
    admin: bool = False,
    resource_uid: str = DEFAULT_PAM_CONFIG_UID,
    schedule: Any = "",
    pwd_complexity: Mapping[str, Any] | None = None,
    noop: bool = False,
    rotate_on_termination: bool = False,
) -> list[dict[str, Any]]:
    """The ``meta`` self-link and the credential link KeeperPAM keeps for a pamUser it may rotate.

    ``allowed`` is the record's PAM setting "rotation" (``allows_rotation()``); ``enabled`` is the user's rotation
    itself (``rotation_settings.disabled`` is its negation), the switch KeeperPAM's UI flips.
    """
    meta = {
        "allowedSettings": {
            "rotation": allowed,
            "connections": False,
            "portForwards": False,
            "sessionRecording": False,
            "typescriptRecording": False,
            "remoteBrowserIsolation": False,
            "aiEnabled": False,
            "aiSessionTerminate": False,
        },
        "rotateOnTermination": rotate_on_termination,
        "version": 1,
        "no_update_services": False,
    }
    complexity = ""
    if pwd_complexity is not None:
        complexity = crypto.b64(crypto.encrypt(json.dumps(dict(pwd_complexity)).encode(), record_key))
    credential = {
        "is_admin": admin,
        "is_launch_credential": False,
        "is_iam_user": iam_user,
        "belongs_to": True,
        "rotation_settings": {
            "schedule": schedule,
            "pwd_complexity": complexity,
            "disabled": not enabled,
            "noop": noop,
            "saas_record_uid_list": [],
        },
    }
    return [
        {"recordUid": uid, "path": META_PATH, "data": meta},
        {"recordUid": resource_uid, "path": None, "data": credential},
    ]


def is_rotation_link(link: Mapping[str, Any], uid: str, resource_uid: str) -> bool:
    """Whether a stored link is one that :func:`pam_rotation_links` would replace."""
    self_meta = link.get("recordUid") == uid and link.get("path") == META_PATH
    credential = link.get("recordUid") == resource_uid and link.get("path") is None
    return self_meta or credential
