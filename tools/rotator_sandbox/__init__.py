"""Local sandbox for keeper-iam-rotator: moto server (AWS) + the KSM emulator (Keeper) on loopback, and the real
Lambda handler run in a separate process against them.

    with Sandbox(users=3) as sb:
        code, result, out, err = sb.invoke({"records": [sb.users[0].uid]})
        assert sb.iam_password(sb.users[0].name) == sb.keeper_password(sb.users[0].uid)

`python -m rotator_sandbox demo` and `python -m rotator_sandbox bench` drive it from the command line.

The names below load lazily: the handler process (`python -m rotator_sandbox.invoke`) must not import moto.
"""

from typing import Any

__all__ = ["Invocation", "Sandbox", "SeededUser", "fingerprint"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rotator_sandbox import stack  # noqa: PLC0415 - lazy on purpose, see above

        return getattr(stack, name)
    raise AttributeError(f"module 'rotator_sandbox' has no attribute {name!r}")
