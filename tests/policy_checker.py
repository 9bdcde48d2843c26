"""An IAM password-policy checker written from AWS's documentation, independent of the generator."""

import string

from keeper_iam_rotator.passwords import PasswordPolicy

IAM_COUNTED_SYMBOLS = set("!@#$%^&*()_+-=[]{}|'")


def violations(password: str, policy: PasswordPolicy) -> list[str]:
    """IAM's rules, restated independently: length 1..128 of [\\t\\n\\r\\x20-\\xFF], the policy's minimum and
    required classes, and without a custom policy at least three of the four classes."""
    found = []
    if not 1 <= len(password) <= 128:
        found.append("length outside 1..128")
    if any(not (c in "\t\n\r" or 0x20 <= ord(c) <= 0xFF) for c in password):
        found.append("character IAM does not accept")
    if len(password) < policy.minimum_length:
        found.append("shorter than the policy minimum")
    classes = {
        "upper": any(c in string.ascii_uppercase for c in password),
        "lower": any(c in string.ascii_lowercase for c in password),
        "digit": any(c in string.digits for c in password),
        "symbol": any(c in IAM_COUNTED_SYMBOLS for c in password),
    }
    for name, required in (
        ("upper", policy.require_uppercase),
        ("lower", policy.require_lowercase),
        ("digit", policy.require_numbers),
        ("symbol", policy.require_symbols),
    ):
        if required and not classes[name]:
            found.append(f"missing required {name}")
    if sum(classes.values()) < 3:
        found.append("fewer than three character classes")
    if any(not c.isalnum() and c not in IAM_COUNTED_SYMBOLS for c in password):
        found.append("a symbol IAM does not count")
    return found
