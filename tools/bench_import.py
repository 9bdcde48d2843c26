"""Cold-start import cost of the Lambda handler against a bare `import boto3`, measured with `python -X importtime`.

Prints the median (of --runs fresh interpreters, alternating) cumulative import time of each and their ratio. A
figure, not a test: shared machines are noisy, so read the median and rerun when in doubt.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HANDLER_DIR = Path(__file__).resolve().parent.parent / "functions" / "rotator"


def import_microseconds(module: str) -> int:
    """Cumulative microseconds `python -X importtime` reports for the top-level import of `module`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=HANDLER_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(row for row in reversed(done.stderr.splitlines()) if row.rstrip().endswith(f"| {module}"))
    return int(line.split("|")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per module (default 7)")
    args = parser.parse_args()
    samples: dict[str, list[int]] = {"boto3": [], "app": []}
    for _ in range(args.runs):  # alternating, so a busy moment on a shared machine hits both alike
        for module, times in samples.items():
            times.append(import_microseconds(module))
    medians = {module: statistics.median(times) for module, times in samples.items()}
    for module, times in samples.items():
        print(f"import {module:<6} median {medians[module] / 1000:7.1f} ms  (min {min(times) / 1000:.1f} ms)")
    print(f"handler / boto3 ratio: {medians['app'] / medians['boto3']:.2f}")


if __name__ == "__main__":
    main()
