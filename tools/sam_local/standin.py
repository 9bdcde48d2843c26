"""The Lambda python3.13 arm64 base image SAM builds its invoke image from: the official one, or a stand-in.

SAM CLI builds the container it invokes `FROM public.ecr.aws/lambda/python:3.13-arm64` and adds its own runtime
interface emulator. No container registry is reachable on the machines CI runs on, so when that image is not
present the run builds a stand-in from Debian packages (apt's registry is reachable) and hands it to SAM with
`--invoke-image`, under its own name so it is never mistaken for AWS's image:

- Debian trixie's python3.13 and libstdc++6, unpacked for arm64 by `mmdebstrap --variant=extract` (no maintainer
  scripts, so no emulation needed; seconds), plus the merged-/usr links, /etc/passwd and /tmp;
- awslambdaric (PyPI, hashed: standin-requirements.txt) as /var/runtime, with a /var/runtime/bootstrap that runs it
  on the handler with Lambda's python3.13 module path (/var/task, then /opt/python, then the runtime);
- the stdlib compiled to bytecode on this machine (same 3.13 magic), or every invoke under qemu compiles it again.

What it does not have that the official image has: boto3/botocore of its own (the artifact must bundle what it
imports; it does), Amazon Linux's libraries, and the Lambda runtime's exact patch level of Python.
An image labelled with the recipe's hash is reused; any change to the recipe below builds it again.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sam_local.host import HostError, image_label, run

OFFICIAL_IMAGE = "public.ecr.aws/lambda/python:3.13-arm64"
STANDIN_IMAGE = "keeper-iam-rotator/lambda-python-standin:3.13-arm64"
RECIPE_LABEL = "keeper-iam-rotator.standin-recipe"
SUITE = "trixie"  # Debian 13: python3.13 as /usr/bin/python3.13
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3.13", "libstdc++6", "dash", "coreutils")  # libstdc++: awslambdaric's extension; sh + chmod: SAM
REQUIREMENTS = Path(__file__).with_name("standin-requirements.txt")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
BOOTSTRAP = """#!/bin/sh
# Lambda's python3.13 runtime, stood in for: the function first, then layers, then the runtime interface client.
export PYTHONPATH="/var/task:/opt/python:/var/runtime"
exec /usr/bin/python3.13 -m awslambdaric "$_HANDLER"
"""
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"  # noqa: S105
GROUP = "root:x:0:\nnogroup:x:65534:\n"
DOCKERFILE = """FROM scratch
ADD rootfs.tar /
ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime
WORKDIR /var/task
"""


def recipe() -> str:
    """A hash of everything the stand-in is made of: a changed recipe never reuses an old image."""
    parts = [SUITE, MIRROR, *PACKAGES, *WHEEL_PLATFORMS, BOOTSTRAP, PASSWD, GROUP, DOCKERFILE, REQUIREMENTS.read_text()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def standin_is_current() -> bool:
    return image_label(STANDIN_IMAGE, RECIPE_LABEL) == recipe()


def build_standin(workdir: Path) -> None:
    """Build STANDIN_IMAGE from Debian's packages and awslambdaric; the scratch files go away afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="standin-", dir=workdir))
    try:
        root = scratch / "rootfs"
        run(
            "mmdebstrap",
            "--quiet",
            "--variant=extract",
            "--architectures=arm64",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
            MIRROR,
            timeout=900,
        )
        for link in ("bin", "lib", "sbin"):  # extract skips usrmerge's setup: the ELF interpreter is /lib/ld-linux-...
            (root / link).symlink_to(f"usr/{link}")
        (root / "etc" / "passwd").write_text(PASSWD)
        (root / "etc" / "group").write_text(GROUP)
        for directory in ("var/task", "var/runtime", "opt", "root", "tmp"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        run(
            *pip,
            "--require-hashes",
            "--only-binary=:all:",
            *platforms,
            "--python-version",
            "3.13",
            "--implementation",
            "cp",
            "--target",
            str(root / "var" / "runtime"),
            "-r",
            str(REQUIREMENTS),
        )
        bootstrap = root / "var" / "runtime" / "bootstrap"
        bootstrap.write_text(BOOTSTRAP)
        bootstrap.chmod(0o755)
        compile_bytecode(root)
        context = scratch / "context"
        context.mkdir()
        run("tar", "-C", str(root), "-cf", str(context / "rootfs.tar"), ".")
        (context / "Dockerfile").write_text(DOCKERFILE)
        run(
            "docker",
            "build",
            "--quiet",
            "--platform",
            "linux/arm64",
            "--label",
            f"{RECIPE_LABEL}={recipe()}",
            "--tag",
            STANDIN_IMAGE,
            str(context),
            timeout=900,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compile_bytecode(root: Path) -> None:
    """The stdlib and the runtime client as unchecked-hash .pyc, by this Python if it is a 3.13 (same magic)."""
    if sys.version_info[:2] != (3, 13):
        print("  (not compiling the stand-in's stdlib: this Python is not 3.13; each invoke compiles it instead)")
        return
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j",
            "2",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            "/",
            str(root / "usr" / "lib" / "python3.13"),
            str(root / "var" / "runtime"),
        ],
        capture_output=True,  # a few test modules of the stdlib do not compile on purpose: that is fine
        check=False,
    )


def arm64_python_runs(image: str) -> str:
    """The image's Python runs as arm64 here (qemu or native): its platform.machine(), or HostError."""
    probe = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--platform",
            "linux/arm64",
            "--network",
            "none",
            "--entrypoint",
            "python3.13" if image == STANDIN_IMAGE else "python3",
            image,
            "-c",
            "import platform; print(platform.machine())",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    machine = probe.stdout.strip()
    if probe.returncode != 0 or machine != "aarch64":
        raise HostError(f"{image} does not run arm64 Python here ({machine or probe.stderr.strip()[-500:]})")
    return machine
