"""`PYTHONPATH=tools .venv/bin/python -m sam_local [--base auto|official|standin]`; see `make sam-local`."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from rotator_sandbox.paths import ROOT
from sam_local.run import Options, run


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds: the sandbox stops, leftover containers go, our dockerd stops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sam_local",
        description="Run the arm64 artifact `sam build` made with `sam local invoke` (every shipped event) and "
        "`sam local start-api` (a signed POST) against moto + the KSM emulator on 127.0.0.1, and check after each "
        "step that every IAM password equals its Keeper record. Installs missing Debian packages and starts a "
        "Docker daemon (stopped at the end) when none runs. Exits 1 if any step's answer or state is wrong.",
    )
    parser.add_argument(
        "--base",
        choices=("auto", "official", "standin"),
        default="auto",
        help="Lambda base image: auto (AWS's public.ecr.aws/lambda/python:3.13-arm64 when present locally, else the "
        "stand-in built from Debian packages), official (pull AWS's if absent: needs a registry), standin",
    )
    parser.add_argument("--build-dir", type=Path, default=ROOT / ".aws-sam" / "build", help="sam build's output")
    parser.add_argument("--sam-python", type=Path, default=ROOT / ".venv-sam" / "bin" / "python", help="SAM CLI's")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".sandbox" / "sam-local", help="logs, scratch")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(Options(build_dir=args.build_dir, sam_python=args.sam_python, workdir=args.workdir, base=args.base))
    except KeyboardInterrupt:
        print(
            "sam-local: interrupted; the sandbox, SAM's containers and our Docker daemon are stopped", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
