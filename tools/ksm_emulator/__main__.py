"""``python -m ksm_emulator``: serve a KSM emulator until SIGINT/SIGTERM."""

import argparse
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ksm_emulator.server import EmulatorServer, require_loopback
from ksm_emulator.state import PENDING_POLICIES
from ksm_emulator.throttle import BurstLimit, RateLimit

WAKE_INTERVAL = 0.2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ksm_emulator",
        description="Keeper Secrets Manager emulator speaking the real KSM wire protocol over HTTPS on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument(
        "--seed",
        "--state",
        type=Path,
        help="JSON seed file with the initial state: app, folders, records (each may carry links or pam_rotation)",
    )
    parser.add_argument(
        "--pending-policy",
        choices=PENDING_POLICIES,
        default="replace",
        help="what a second staged update of a record does (default replace)",
    )
    add_limit_options(parser)
    parser.add_argument(
        "--write-config",
        type=Path,
        metavar="FILE",
        help="write a base64 KSM client config for a new bound client here (mode 0600)",
    )
    parser.add_argument(
        "--write-ca", type=Path, metavar="FILE", help="copy the server certificate here, for REQUESTS_CA_BUNDLE"
    )
    return parser


def add_limit_options(parser: argparse.ArgumentParser, throttle_default: BurstLimit | None = None) -> None:
    """``--throttle`` and ``--rate-limit``, shared with the sandbox's commands (which pass them on)."""
    default = f" (default {throttle_default})" if throttle_default else " (default off)"
    parser.add_argument(
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


def _parsed(kind: type[BurstLimit] | type[RateLimit]) -> Callable[[str], BurstLimit | RateLimit]:
    """An argparse ``type`` whose error message says what the value should look like."""

    def parse(spec: str) -> BurstLimit | RateLimit:
        try:
            return kind.parse(spec)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err

    return parse


def _write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read: the config carries the client's private key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        require_loopback(args.host)
    except ValueError as err:
        parser.error(str(err))

    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    with EmulatorServer(
        seed=args.seed,
        pending_policy=args.pending_policy,
        host=args.host,
        port=args.port,
        throttle=args.throttle,
        rate_limit=args.rate_limit,
    ) as server:
        written = []
        if args.write_config:
            _write_private(args.write_config, server.client_config())
            written.append(f"config={args.write_config}")
        if args.write_ca:
            shutil.copyfile(server.ca_file, args.write_ca)
            written.append(f"ca={args.write_ca}")
        print(" ".join([f"ksm_emulator serving {server.url}", *written]), flush=True)
        while not stop.wait(WAKE_INTERVAL):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
