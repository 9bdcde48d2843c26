"""SAM CLI, with `--docker-network host` that really puts the Lambda container on the host's network.

Run it with SAM CLI's own interpreter, exactly like `sam`:

    PYTHONPATH=tools .venv-sam/bin/python -m sam_local.host_network local invoke ... --docker-network host

Why: SAM CLI 1.170 skips `network.connect` for `--docker-network host` but never sets `network_mode`
(aws/aws-sam-cli#669), so the container sits on Docker's bridge and cannot reach servers bound to the host's
127.0.0.1 (the sandbox's moto and KSM emulator). This wrapper changes `Container.create` for Lambda containers only:
`network_mode=host`, and the runtime interface emulator (RIE) told to listen on the loopback port SAM already picked
for it (and its runtime API on another free one), since a shared network has no port mapping; and docker-py's
`ContainerCollection.create` drops the port bindings SAM always passes when the network mode is host (docker-py
refuses the two together). Anything else SAM does is untouched.

It also passes what `--env-vars` cannot (SAM only overrides variables the template declares): the variables named in
`SAM_LOCAL_PASS_ENV` (space- or comma-separated) go from this process's environment into the Lambda container, and
a value that is the absolute path of an existing file is also bind-mounted there, read-only, at the same path. With
`SAM_LOCAL_PASS_ENV="AWS_ENDPOINT_URL REQUESTS_CA_BUNDLE"` the function reaches the sandbox's moto server and trusts
its KSM emulator's certificate. Without `--docker-network host` and that variable it is plain `sam`.

The hook is checked before SAM runs: another SAM CLI version whose `Container.create` no longer reads the attributes
patched here fails with a message instead of running with the bridge network silently.
"""

from __future__ import annotations

import inspect
import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

TESTED_SAM_CLI = "1.170.0"  # the Makefile's SAM_CLI_VERSION; the hook below was read in this version's source
PASS_ENV = "SAM_LOCAL_PASS_ENV"  # noqa: S105 - a variable's name
# What Container.create must still do for the patch to mean what it says (checked in its source).
_EXPECTED_IN_CREATE = (
    'self.network_id != "host"',  # the #669 skip
    "kwargs.update(self._container_opts)",  # network_mode=host arrives through the container options
    'kwargs["entrypoint"] = self._entrypoint',  # the RIE's listen address arrives through the entrypoint
    'kwargs["environment"] = self._env_vars',
    'kwargs["volumes"].update(self._additional_volumes)',
)


class HookMissing(RuntimeError):
    """SAM CLI's container creation is not what this wrapper was written against."""


def check_hook() -> tuple[type, type, type]:
    """The classes to patch, after checking that SAM CLI still creates containers the way the patch assumes."""
    import samcli  # noqa: PLC0415 - SAM CLI's venv only
    from docker.models.containers import ContainerCollection  # noqa: PLC0415
    from samcli.local.docker.container import Container  # noqa: PLC0415
    from samcli.local.docker.lambda_container import LambdaContainer  # noqa: PLC0415

    version = getattr(samcli, "__version__", "?")
    try:
        source = inspect.getsource(Container.create)
    except (OSError, TypeError) as error:
        raise HookMissing(f"SAM CLI {version}: cannot read Container.create ({error})") from error
    missing = [snippet for snippet in _EXPECTED_IN_CREATE if snippet not in source]
    entry = LambdaContainer._get_default_entry_point()
    if missing or not entry or not str(entry[0]).endswith("aws-lambda-rie"):
        raise HookMissing(
            f"SAM CLI {version} is not the version sam_local.host_network was written for ({TESTED_SAM_CLI}): "
            f"Container.create no longer has {missing or 'the RIE entry point'}. Install the tested version "
            f"(rm -rf .venv-sam && make .venv-sam/.installed) or update tools/sam_local/host_network.py."
        )
    if "network_mode" in source:
        raise HookMissing(
            f"SAM CLI {version} sets network_mode itself (aws/aws-sam-cli#669 fixed?): drop this wrapper's patch"
        )
    parameters = list(inspect.signature(ContainerCollection.create).parameters.values())
    names = [parameter.name for parameter in parameters[:3]]
    if names != ["self", "image", "command"] or parameters[-1].kind != inspect.Parameter.VAR_KEYWORD:
        raise HookMissing("docker-py's ContainerCollection.create is no longer (self, image, command=None, **kwargs)")
    if version != TESTED_SAM_CLI:
        print(f"sam_local.host_network: SAM CLI {version}, patch written for {TESTED_SAM_CLI}", file=sys.stderr)
    return Container, LambdaContainer, ContainerCollection


def container_extras(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The variables SAM_LOCAL_PASS_ENV names, and a read-only mount for each value that is an existing file."""
    names = environ.get(PASS_ENV, "").replace(",", " ").split()
    env = {name: environ[name] for name in names if name in environ}
    mounts = {v: {"bind": v, "mode": "ro"} for v in env.values() if os.path.isabs(v) and os.path.isfile(v)}
    return env, mounts


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def patch(container_cls: type, lambda_container_cls: type, collection_cls: type, environ: Mapping[str, str]) -> None:
    """Make Lambda containers on `--docker-network host` really use the host's network, with the extras."""
    extra_env, extra_mounts = container_extras(environ)
    original: Callable[..., Any] = container_cls.create
    docker_create: Callable[..., Any] = collection_cls.create

    def create(self: Any, context: Any) -> Any:
        if isinstance(self, lambda_container_cls) and not self.is_created():
            if self.network_id == "host":
                self._container_opts = {**(self._container_opts or {}), "network_mode": "host"}
                self._entrypoint = [
                    *self._entrypoint,
                    "--runtime-interface-emulator-address",
                    f"127.0.0.1:{self.rapid_port_host}",  # where SAM connects (host "localhost", this port)
                    "--runtime-api-address",
                    f"127.0.0.1:{free_loopback_port()}",  # not the fixed 9001: the host's network is shared
                ]
            self._env_vars = {**(self._env_vars or {}), **extra_env}
            self._additional_volumes = {**(self._additional_volumes or {}), **extra_mounts}
        return original(self, context)

    def create_without_ports(self: Any, image: Any, command: Any = None, **kwargs: Any) -> Any:
        if kwargs.get("network_mode") == "host":
            kwargs.pop("ports", None)  # nothing to publish on the host's own network
        return docker_create(self, image, command, **kwargs)

    container_cls.create = create  # type: ignore[method-assign]
    collection_cls.create = create_without_ports  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    try:
        classes = check_hook()
    except HookMissing as error:
        print(f"sam_local.host_network: {error}", file=sys.stderr)
        return 3
    patch(*classes, environ=os.environ)
    from samcli.cli.main import cli  # noqa: PLC0415

    sys.argv = ["sam", *(sys.argv[1:] if argv is None else argv)]
    return int(cli() or 0)  # click exits by itself (SystemExit) with SAM's own exit code


if __name__ == "__main__":
    raise SystemExit(main())
