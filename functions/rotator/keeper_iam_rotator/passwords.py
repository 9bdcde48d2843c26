"""IAM account password policy and a generator that always satisfies it.

moto does not enforce password policies, so compliance is this module's job (and its tests' job, with an independent
checker). Symbols come only from the set IAM counts for `RequireSymbols`, so a symbol we add always counts.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

from .sensitive import Secret

IAM_SYMBOLS = "!@#$%^&*()_+-=[]{}|'"
CHARACTER_CLASSES = (string.ascii_uppercase, string.ascii_lowercase, string.digits, IAM_SYMBOLS)
IAM_MAX_LENGTH = 128


@dataclass(frozen=True)
class PasswordPolicy:
    """The parts of GetAccountPasswordPolicy a generated password must meet.

    `custom=False` is AWS's default policy (no custom policy set): at least 8 characters and three of the four
    character classes.
    """

    minimum_length: int = 8
    require_uppercase: bool = False
    require_lowercase: bool = False
    require_numbers: bool = False
    require_symbols: bool = False
    custom: bool = False

    @classmethod
    def from_iam(cls, policy: dict[str, Any]) -> PasswordPolicy:
        return cls(
            minimum_length=int(policy.get("MinimumPasswordLength", 6)),
            require_uppercase=bool(policy.get("RequireUppercaseCharacters")),
            require_lowercase=bool(policy.get("RequireLowercaseCharacters")),
            require_numbers=bool(policy.get("RequireNumbers")),
            require_symbols=bool(policy.get("RequireSymbols")),
            custom=True,
        )


def generate_password(policy: PasswordPolicy, length: int = 32) -> Secret:
    """A password of max(length, policy minimum) characters (at most 128) with one character of every class.

    Using all four classes satisfies any Require* combination and the default policy's "three of four" rule at
    once; `secrets` supplies the randomness and the placement of the guaranteed characters.
    """
    size = min(IAM_MAX_LENGTH, max(length, policy.minimum_length, len(CHARACTER_CLASSES)))
    alphabet = "".join(CHARACTER_CLASSES)
    chars = [secrets.choice(group) for group in CHARACTER_CLASSES]
    chars += [secrets.choice(alphabet) for _ in range(size - len(chars))]
    for i in range(len(chars) - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return Secret("".join(chars))
