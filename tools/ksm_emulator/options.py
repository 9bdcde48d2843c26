"""Command-line options for Keeper's throttling models, shared by ``python -m ksm_emulator`` and the sandbox."""

import argparse
from collections.abc import Callable

from ksm_emulator.throttle import BurstLimit, RateLimit


def add_limit_options(
    parser: argparse.ArgumentParser, throttle_default: BurstLimit | None = None
) -> argparse._MutuallyExclusiveGroup:
    """Add ``--throttle`` and ``--rate-limit``; returns the group ``--throttle`` is in, so a caller whose default is
    on can add an exclusive way to turn it off."""
    default = f" (default {throttle_default})" if throttle_default else " (default off)"
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--throttle",
        type=_parsed(BurstLimit),
        default=throttle_default,
        metavar="burst=N,quiet=Q",
        help="the SDK's throttling model: more than N requests per client device to one endpoint without a Q-second "
        "pause answer 403 throttled; every request, a throttled one too, restarts the Q-second timer; "
        f"Keeper's values are burst=100,quiet=10{default}",
    )
    parser.add_argument(
        "--rate-limit",
        type=_parsed(RateLimit),
        metavar="N/S",
        help="at most N requests per S seconds per client device, all endpoints together (Keeper's documented "
        "default is 10/60; 10/6 compresses time tenfold); refused requests take no slot (default off)",
    )
    return group


def _parsed(kind: type[BurstLimit] | type[RateLimit]) -> Callable[[str], BurstLimit | RateLimit]:
    """An argparse ``type`` whose error message says what the value should look like."""

    def parse(spec: str) -> BurstLimit | RateLimit:
        try:
            return kind.parse(spec)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err

    return parse
