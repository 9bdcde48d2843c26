"""Keeping secret strings out of logs, reprs, tracebacks and results.

`Secret` masks itself wherever it is printed. Libraries see the revealed values, though (botocore logs
UpdateLoginProfile's parameters at DEBUG), so every secret value this process has held is also remembered (the
passwords, the KSM config, each AssumeRole credential, the ExternalId), and `redact` removes remembered values and
anything under a secret-looking name from text a log record is about to carry: `Password=…` (query bodies),
`'Password': '…'` and `"Password": "…"` (parameter dumps, JSON), `<SecretAccessKey>…</SecretAccessKey>` (STS's XML
answers, which botocore logs before the caller sees them), headers such as `Authorization: …`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections import OrderedDict
from typing import Any

MASK = "***"
MIN_REMEMBERED_CHARS = 4  # shorter values would mask ordinary words; IAM passwords are at least 6
MAX_REMEMBERED = 1024  # recent passwords; each rotation re-remembers the ones it uses
MAX_REDACTED_DEPTH = 16  # a structured log message (the API event) is masked this deep, cut below
KSM_CONFIG_SECRETS = ("privateKey", "appKey", "clientKey")
_NAMES = (
    r"password|oldpassword|newpassword|authorization|x-amz-security-token|x-amz-signature|signature|"
    r"securitytoken|sessiontoken|secretaccesskey|secretstring|secretbinary|plaintext|privatekey|appkey|clientkey|"
    r"transmissionkey|externalid"
)
SECRET_NAME = re.compile(rf"(?i)(?:{_NAMES})")
# a quoted value ends at an unescaped quote; `\\+.` also skips JSON escaped once more (JSON in a bytes repr)
_QUOTED = re.compile(rf"""(?i)(?P<key>(["'])(?:{_NAMES})\2\s*:\s*b?)(?P<q>["'])(?:\\+.|(?!(?P=q)).)*(?P=q)""")
_ASSIGNED = re.compile(rf"""(?i)(?<![\w-])(?P<key>(?:{_NAMES})=)[^&\s,'"]+""")
_HEADER = re.compile(rf"""(?i)(?<![\w-])(?P<key>(?:{_NAMES})[ \t]*:[ \t]*)[^\s'"][^\r\n]*""")
_XML = re.compile(rf"""(?i)(?P<open><(?P<tag>{_NAMES})>)[^<]*(?P<close></(?P=tag)>)""")

_lock = threading.Lock()
_recent: OrderedDict[str, None] = OrderedDict()
_pinned: set[str] = set()  # the KSM config and its keys: used for the life of the process


class Secret:
    """Holds a secret string; only `reveal()` gives it back.

    `str()`/`repr()` show a mask, so a secret that slips into an f-string, a log field or an exception message
    prints as `***` instead of the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        remember(value)

    def reveal(self) -> str:
        remember(self._value)  # in use again: keep it among the recent values
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


def remember(value: str, pinned: bool = False) -> None:
    """Mask `value` in every log record from now on (`pinned`: for good, else among the most recent values)."""
    if len(value) < MIN_REMEMBERED_CHARS:
        return
    with _lock:
        if pinned:
            _pinned.add(value)
            return
        _recent[value] = None
        _recent.move_to_end(value)
        if len(_recent) > MAX_REMEMBERED:
            _recent.popitem(last=False)


def remember_ksm_config(config: str) -> None:
    """The config as stored (base64 or JSON), its JSON text and its keys."""
    remember(config, pinned=True)
    text = config
    try:
        text = base64.b64decode(config, validate=True).decode()
        remember(text, pinned=True)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    try:
        parsed = json.loads(text)
    except ValueError:
        return
    for name in KSM_CONFIG_SECRETS:
        if isinstance(parsed, dict) and isinstance(parsed.get(name), str):
            remember(parsed[name], pinned=True)


def redact(text: str) -> str:
    """`text` without remembered secrets and without the values of secret-looking names."""
    with _lock:
        known = [*_pinned, *_recent]
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    text = _XML.sub(rf"\g<open>{MASK}\g<close>", text)
    text = _QUOTED.sub(rf"\g<key>\g<q>{MASK}\g<q>", text)
    text = _ASSIGNED.sub(rf"\g<key>{MASK}", text)
    return _HEADER.sub(rf"\g<key>{MASK}", text)


def redact_value(value: Any, depth: int = 0) -> Any:
    """A copy of a JSON-like structure with `redact` applied to strings and secret-looking names masked."""
    if isinstance(value, str):
        return redact(value)
    if not isinstance(value, dict | list | tuple):
        return value
    if depth >= MAX_REDACTED_DEPTH:
        return "(nested too deep to log)"
    if isinstance(value, dict):
        return {
            key: MASK if isinstance(key, str) and SECRET_NAME.fullmatch(key) else redact_value(item, depth + 1)
            for key, item in value.items()
        }
    return [redact_value(item, depth + 1) for item in value]
