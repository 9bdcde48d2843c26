"""Build check for the Lambda artifact (`make build` runs it after `sam build`): every module has bytecode the
python3.13 runtime will load as is, and the handler, boto3 and botocore are there.

/var/task is read-only, so a module without a usable .pyc is compiled again on every cold start. An
"unchecked-hash" .pyc (PEP 552 flags 0b01) is loaded without reading its source's mtime or hash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_ARTIFACT = Path(__file__).resolve().parent.parent / ".aws-sam" / "build" / "RotatorFunction"
REQUIRED = ("app.py", "keeper_iam_rotator/rotation.py", "boto3/__init__.py", "botocore/client.py")
CACHE_TAG = "cpython-313"
UNCHECKED_HASH = 0b01  # PEP 552: hash-based, check_source off


def bytecode_of(source: Path) -> Path:
    return source.parent / "__pycache__" / f"{source.stem}.{CACHE_TAG}.pyc"


def problems(artifact: Path) -> list[str]:
    """What keeps this artifact from starting without compiling anything; empty when it is fine."""
    found = [f"{name} is not in the artifact" for name in REQUIRED if not (artifact / name).is_file()]
    for source in sorted(artifact.rglob("*.py")):
        pyc = bytecode_of(source)
        if not pyc.is_file():
            found.append(f"no bytecode for {source.relative_to(artifact)}")
        elif int.from_bytes(pyc.read_bytes()[4:8], "little") != UNCHECKED_HASH:
            found.append(f"{pyc.relative_to(artifact)} is not an unchecked-hash .pyc")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("artifact", nargs="?", type=Path, default=DEFAULT_ARTIFACT)
    artifact = parser.parse_args().artifact
    found = problems(artifact)
    for problem in found[:20]:
        print(problem, file=sys.stderr)
    if found:
        print(f"{artifact}: {len(found)} problems", file=sys.stderr)
        return 1
    modules = sum(1 for _ in artifact.rglob("*.py"))
    size = sum(f.stat().st_size for f in artifact.rglob("*") if f.is_file())
    print(f"{artifact}: {modules} modules, all with unchecked-hash bytecode; {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
