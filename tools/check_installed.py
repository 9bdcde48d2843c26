"""Run with the interpreter of a fresh venv after a plain `pip install .` (`make package-check`): every module the
package installed imports with the dependencies it declares, and the development tools are not installed."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys

DEV_ONLY = ("rotator_sandbox", "ksm_emulator", "moto", "aws_xray_sdk")  # the X-Ray SDK: extra `tracing`


def main() -> int:
    files = importlib.metadata.files("keeper-iam-rotator") or []
    packages = sorted({f.parts[0] for f in files if f.suffix == ".py" and f.parts[0] != ".."})
    modules = list(packages)
    for package in packages:
        found = pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}.")
        modules += [info.name for info in found]
    for module in modules:
        importlib.import_module(module)
    present = [name for name in DEV_ONLY if importlib.util.find_spec(name) is not None]
    print(f"installed {', '.join(packages)}: {len(modules)} modules import; dev tools present: {present or 'none'}")
    return 1 if present or not packages else 0


if __name__ == "__main__":
    sys.exit(main())
