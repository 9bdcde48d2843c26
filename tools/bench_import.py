"""Cold-start import cost of the Lambda handler against a bare `import boto3`: CPU time of the import in a fresh
interpreter.

Prints the median (of --runs fresh interpreters, alternating) of each and their ratio. HANDLER_DIR=<another
checkout>/functions/rotator measures that code instead. The handler's modules are imported from a copy compiled the
way the artifact is (unchecked-hash bytecode): a source tree without fresh .pyc files (a new clone, an edit, with
PYTHONDONTWRITEBYTECODE set) would otherwise add compiling them to every run. A figure, not a test: shared machines
are noisy, so read the median and rerun when in doubt.
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HANDLER_DIR = Path(os.environ.get("HANDLER_DIR") or Path(__file__).resolve().parent.parent / "functions" / "rotator")


def import_microseconds(module: str, cwd: Path) -> int:
    """CPU microseconds a fresh interpreter spends importing `module` (CPU, not wall time: on a shared machine other
    processes stretch the wall clock, not the work)."""
    code = f"import time; started = time.process_time(); import {module}; print(time.process_time() - started)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=_handler_env(), capture_output=True, text=True, check=True
    )
    return round(float(done.stdout) * 1_000_000)


def _handler_env() -> dict[str, str]:
    return {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per module (default 7)")
    args = parser.parse_args()
    samples: dict[str, list[int]] = {"boto3": [], "app": []}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        task = Path(tmp, "task")
        shutil.copytree(HANDLER_DIR, task, ignore=shutil.ignore_patterns("__pycache__"))
        compileall.compile_dir(task, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        for _ in range(args.runs):  # alternating, so a busy moment on a shared machine hits both alike
            for module, times in samples.items():
                times.append(import_microseconds(module, task))
    medians = {module: statistics.median(times) for module, times in samples.items()}
    for module, times in samples.items():
        print(f"import {module:<6} median {medians[module] / 1000:7.1f} ms  (min {min(times) / 1000:.1f} ms)")
    print(f"handler / boto3 ratio: {medians['app'] / medians['boto3']:.2f}")


if __name__ == "__main__":
    main()
