"""What `sam local` needs from the machine: Debian packages, a Docker daemon, arm64 emulation.

Each is set up only when missing, so the same run works on a bare Debian machine (root: apt-get, our own dockerd) and
on a laptop whose Docker already runs (nothing installed, nothing started, nothing stopped).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BINFMT = Path("/proc/sys/fs/binfmt_misc")
DOCKERD_START_SECONDS = 60


class HostError(RuntimeError):
    """The machine lacks something this run cannot set up by itself; the message says what to do."""


def run(*argv: str, timeout: float = 600, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; its output is kept (and shown only in the error) unless `quiet` is false."""
    done = subprocess.run(argv, capture_output=quiet, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip()[-2000:] if quiet else ""
        raise HostError(f"`{' '.join(argv)}` exited {done.returncode}{': ' + detail if detail else ''}")
    return done


def docker_reachable() -> bool:
    """A daemon answers the docker client (DOCKER_HOST or the default socket)."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


def needs_arm64_emulation() -> bool:
    """A local Linux x86_64 kernel runs arm64 containers only through qemu registered in binfmt_misc."""
    return platform.system() == "Linux" and platform.machine() not in ("aarch64", "arm64")


def missing_packages(start_daemon: bool, standin: bool) -> list[str]:
    """Debian packages this run needs and the machine lacks."""
    wanted = []
    if shutil.which("docker") is None or (start_daemon and shutil.which("dockerd") is None):
        wanted.append("docker.io")
    if standin and shutil.which("mmdebstrap") is None:
        wanted.append("mmdebstrap")
    return wanted


def emulation_packages() -> list[str]:
    """qemu for arm64 containers on a Linux x86_64 kernel, when neither it nor a binfmt_misc entry is there."""
    if not needs_arm64_emulation() or (BINFMT / "qemu-aarch64").exists():
        return []
    if shutil.which("update-binfmts") and shutil.which("qemu-aarch64-static"):
        return []
    return ["qemu-user-static", "binfmt-support"]


def can_install() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0


def install_packages(packages: list[str]) -> None:
    """apt-get install, as root on a Debian machine; anywhere else, say what is missing."""
    if not packages:
        return
    if not can_install():
        raise HostError(f"missing {', '.join(packages)}: install them (Debian packages) or start Docker yourself")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)
        if done.returncode != 0:
            raise HostError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()[-2000:]}")


def enable_arm64_emulation() -> str:
    """Register qemu-aarch64 in binfmt_misc (mounting it first): a system-wide, harmless setting left in place.

    Called only when an arm64 container did not run: a Docker engine in a VM (Docker Desktop) emulates by itself."""
    if not needs_arm64_emulation():
        raise HostError("arm64 containers do not run, and this is not a Linux x86_64 kernel qemu could help")
    if os.geteuid() != 0:
        raise HostError(
            "arm64 containers do not run: as root, install qemu-user-static + binfmt-support and run "
            "`update-binfmts --enable qemu-aarch64`"
        )
    install_packages(emulation_packages())
    if not (BINFMT / "status").exists():
        run("mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT))
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        run("update-binfmts", "--enable", "qemu-aarch64")
    if not entry.exists() or "enabled" not in entry.read_text():
        raise HostError("qemu-aarch64 is not enabled in binfmt_misc (update-binfmts --enable qemu-aarch64)")
    return "qemu-aarch64 enabled in binfmt_misc"


@contextmanager
def docker_daemon(log_file: Path) -> Iterator[bool]:
    """Use the Docker daemon that runs (yields False); else start dockerd (yields True) and stop exactly that process
    on the way out."""
    if docker_reachable():
        yield False
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        raise HostError("no Docker daemon answers and this run cannot start one: start Docker, then run again")
    with log_file.open("w") as log:
        daemon = subprocess.Popen(
            ["dockerd", "--host", "unix:///var/run/docker.sock"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches this run, which stops the daemon in order
        )
    try:
        deadline = time.monotonic() + DOCKERD_START_SECONDS
        while not docker_reachable():
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = log_file.read_text()[-2000:]
                raise HostError(f"dockerd did not come up (exit {daemon.poll()}); its log ends:\n{tail}")
            time.sleep(0.5)
        yield True
    finally:
        daemon.terminate()  # dockerd stops its containers and its own containerd on SIGTERM
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode == 0


def image_label(image: str, label: str) -> str | None:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{ index .Config.Labels "{label}" }}}}', image],
        capture_output=True,
        text=True,
        check=False,
    )
    value = done.stdout.strip()
    return value if done.returncode == 0 and value not in ("", "<no value>") else None


def remove_image(image: str) -> bool:
    """`docker rmi` when present; True if it was there."""
    if not image_exists(image):
        return False
    run("docker", "image", "rm", "--force", image)
    return True
