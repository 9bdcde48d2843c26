"""`make sam-local`: the arm64 artifact `sam build` made, run by SAM CLI in a Lambda container against the sandbox.

Order: Debian packages (only what is missing) -> a Docker daemon (the running one, else our own dockerd, stopped at
the end) -> arm64 emulation (qemu in binfmt_misc) -> the base image (AWS's when present, else the stand-in) -> the
sandbox (moto + the KSM emulator on 127.0.0.1, seeded like `rotator_sandbox serve --event-records`) -> each shipped
event through `sam local invoke`, then `sam local start-api` and a signed POST -> judged by state (steps.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rotator_sandbox.paths import EVENTS_DIR, ROOT, TOOLS_DIR
from rotator_sandbox.serve import API_PATH, seed
from rotator_sandbox.stack import (
    CONFIG_SECRET,
    IDEMPOTENCY_TABLE,
    JOURNAL_KEY,
    JOURNAL_TABLE,
    PACING_TABLE,
    REGION,
    Sandbox,
    initial_password,
)
from sam_local import host, standin
from sam_local.steps import (
    CAROL,
    STEPS,
    USERS,
    Step,
    judge,
    leaked,
    passwords,
    redact,
    secrets,
    unstepped_events,
)

FUNCTION = "RotatorFunction"
ENV_VARS_FILE = EVENTS_DIR / "local-env-sandbox.json"
CONTAINER_ID = re.compile(r"SAM_CONTAINER_ID: ([0-9a-f]{64})")  # what SAM CLI logs for each container it creates
INVOKE_TIMEOUT = 600  # an arm64 invoke under qemu takes ~20 s; a first one also builds SAM's image
API_START_TIMEOUT = 120
# Inherited variables that would point SAM or the function elsewhere than the sandbox.
_DROP_PREFIXES = ("AWS_", "KSM_", "SAM_LOCAL_", "POWERTOOLS_", "JOURNAL_", "ROTATION_", "IDEMPOTENCY_")
_DROP = {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PYTHONPATH"} | {
    name for proxy in ("http_proxy", "https_proxy", "all_proxy") for name in (proxy, proxy.upper())
}


@dataclass
class Options:
    build_dir: Path
    sam_python: Path
    workdir: Path
    base: str = "auto"  # auto: AWS's image when present, else the stand-in; official: pull it; standin: always


@dataclass
class Report:
    timings: list[tuple[str, float, str]] = field(default_factory=list)  # (what, seconds, verdict)
    problems: list[str] = field(default_factory=list)

    @contextmanager
    def timed(self, what: str) -> Iterator[list[str]]:
        """Time a setup step; the caller may append a detail to the yielded list."""
        detail: list[str] = []
        started = time.monotonic()
        print(f"- {what} ...", flush=True)
        yield detail
        seconds = time.monotonic() - started
        self.timings.append((what, seconds, ", ".join(detail) or "done"))
        print(f"  {', '.join(detail) or 'done'}  ({seconds:.1f}s)", flush=True)


def run(options: Options) -> int:
    report = Report()
    started = time.monotonic()
    options.workdir.mkdir(parents=True, exist_ok=True)
    preflight = preflight_problems(options)
    if preflight:
        print("sam-local: cannot start:\n" + "\n".join(f"  - {p}" for p in preflight), file=sys.stderr)
        return 2
    try:
        with ExitStack() as stack:
            with report.timed("Debian packages") as detail:
                daemon_runs = host.docker_reachable()
                wants_standin = options.base == "standin" or (
                    options.base == "auto" and not (daemon_runs and host.image_exists(standin.OFFICIAL_IMAGE))
                )
                missing = host.missing_packages(start_daemon=not daemon_runs, standin=wants_standin)
                if host.can_install():  # qemu too, in the same apt-get call; elsewhere the arm64 probe decides
                    missing += host.emulation_packages()
                host.install_packages(missing)
                detail.append(f"installed {' '.join(missing)}" if missing else "all present")
            with report.timed("Docker daemon") as detail:
                own_daemon = stack.enter_context(host.docker_daemon(options.workdir / "dockerd.log"))
                detail.append("started dockerd (stopped at the end)" if own_daemon else "already running (left alone)")
            stack.callback(clean_containers, options.workdir)  # SAM removes its own, unless it was killed
            with report.timed("Lambda base image") as detail:
                image, invoke_image = base_image(options, detail)
            with report.timed("arm64 emulation") as detail:
                detail.append(arm64_emulation(image))
            with report.timed("sandbox (moto + KSM emulator)") as detail:
                sb = stack.enter_context(Sandbox(users=0))
                seed(sb, event_records=True)
                detail.append(
                    f"{len(sb.users)} IAM users and pamUser records, AWS {sb.aws_url}, Keeper {sb.keeper.url}"
                )
            run_steps(sb, options, invoke_image, report)
    except host.HostError as error:
        report.problems.append(str(error))
    except subprocess.TimeoutExpired as error:
        report.problems.append(f"timed out: {' '.join(map(str, error.cmd))[:200]}")
    return summarise(report, time.monotonic() - started)


def preflight_problems(options: Options) -> list[str]:
    """What makes the run pointless before anything is installed or started."""
    problems = []
    if not (options.build_dir / "template.yaml").exists():
        problems.append(f"no {options.build_dir}/template.yaml: run `make build` (sam build) first")
    if not options.sam_python.exists():
        problems.append(f"no SAM CLI interpreter {options.sam_python}: make .venv-sam/.installed")
    if unstepped := unstepped_events():
        problems.append(f"shipped events without a sam-local step (tools/sam_local/steps.py): {', '.join(unstepped)}")
    env_vars = json.loads(ENV_VARS_FILE.read_text()).get(FUNCTION, {})
    sandbox_names = {
        "KSM_CONFIG_SECRET_ID": CONFIG_SECRET,
        "JOURNAL_TABLE_NAME": JOURNAL_TABLE,
        "JOURNAL_KEY_ID": JOURNAL_KEY,
        "IDEMPOTENCY_TABLE_NAME": IDEMPOTENCY_TABLE,
        "PACING_TABLE_NAME": PACING_TABLE,
        "DRY_RUN": "false",
    }
    wrong = [name for name, value in sandbox_names.items() if env_vars.get(name) != value]
    if wrong:
        problems.append(f"{ENV_VARS_FILE.name} does not name the sandbox's resources: {', '.join(wrong)}")
    return problems


def base_image(options: Options, detail: list[str]) -> tuple[str, str | None]:
    """(the base image, the --invoke-image to pass: None for AWS's, which SAM finds by itself), built or pulled."""
    official = host.image_exists(standin.OFFICIAL_IMAGE)
    if options.base == "official" and not official:
        host.run("docker", "pull", "--platform", "linux/arm64", standin.OFFICIAL_IMAGE, timeout=900)
        official = True
    if official and options.base != "standin":
        image, invoke_image = standin.OFFICIAL_IMAGE, None
        detail.append(f"{image} (AWS's)")
    else:
        image = invoke_image = standin.STANDIN_IMAGE
        if standin.standin_is_current():
            detail.append(f"{image} (stand-in, reused)")
        else:
            standin.build_standin(options.workdir)
            detail.append(f"{image} (stand-in, built)")
    # SAM caches the image it derives (base + its runtime interface emulator) per tag, never checking the base again:
    # drop it so it is rebuilt from this base and this SAM CLI's emulator.
    host.remove_image(rapid_image(invoke_image))
    return image, invoke_image


def arm64_emulation(image: str) -> str:
    """The base image's Python runs as arm64 here; on a Linux x86_64 kernel without qemu registered, register it."""
    try:
        return f"arm64 Python runs ({standin.arm64_python_runs(image)})"
    except host.HostError:
        enabled = host.enable_arm64_emulation()
    return f"{enabled}; arm64 Python runs ({standin.arm64_python_runs(image)})"


def rapid_image(invoke_image: str | None) -> str:
    """SAM CLI 1.170's name for its invoke image (samcli/local/docker/lambda_image.py, LambdaImage.build)."""
    if invoke_image is None:
        return standin.OFFICIAL_IMAGE.replace(":3.13-arm64", ":3.13-rapid-arm64")
    return f"{invoke_image.split(':')[0]}:rapid-arm64"


def clean_containers(workdir: Path) -> None:
    """Remove the Lambda containers this run's SAM CLI created (the ids it logged) that are still there."""
    created = {m for log in workdir.glob("step-*.log") for m in CONTAINER_ID.findall(log.read_text(errors="replace"))}
    if created and host.docker_reachable():
        existing = set(host.run("docker", "ps", "--all", "--quiet", "--no-trunc").stdout.split())
        if leftovers := sorted(created & existing):
            host.run("docker", "rm", "--force", *leftovers)


def sam_env(sb: Sandbox) -> dict[str, str]:
    """SAM CLI's environment: the sandbox's endpoints and fake credentials, and which of them reach the container.

    AWS_ENDPOINT_URL also keeps SAM's own AWS call (STS GetCallerIdentity for AWS::AccountId) on the sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES) and k not in _DROP}
    env.update(
        {
            "PYTHONPATH": str(TOOLS_DIR),
            "SAM_CLI_TELEMETRY": "0",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": sb.aws_url,
            "REQUESTS_CA_BUNDLE": sb.keeper.ca_file,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            # the emulator's host: trust.py lets it stand in for Keeper outside a real Lambda (sam local sets
            # AWS_SAM_LOCAL), and the template can never declare it, so --env-vars cannot pass it
            "SANDBOX_KEEPER_HOST": sb.keeper.host,
            "SAM_LOCAL_PASS_ENV": "AWS_ENDPOINT_URL REQUESTS_CA_BUNDLE NO_PROXY SANDBOX_KEEPER_HOST",
        }
    )
    return env


def sam_args(options: Options, invoke_image: str | None) -> list[str]:
    """What every `sam local` command here shares: the built template, the host network, no registry."""
    args = [
        "--template",
        str(options.build_dir / "template.yaml"),
        "--env-vars",
        str(ENV_VARS_FILE),
        "--docker-network",
        "host",
        "--skip-pull-image",
    ]
    return [*args, "--invoke-image", invoke_image] if invoke_image else args


def run_steps(sb: Sandbox, options: Options, invoke_image: str | None, report: Report) -> None:
    seeded_keeper = {name: sb.keeper_password(uid) for name, uid in USERS.items()}
    seen: set[str | None] = set(passwords(sb).values()) | set(seeded_keeper.values())
    print(f"\nsam local, {FUNCTION} from {options.build_dir} (arm64), against the sandbox:", flush=True)
    for number, step in enumerate(STEPS, 1):
        before = passwords(sb)
        log = options.workdir / f"step-{number}.log"
        started = time.monotonic()
        if step.event is None:
            answer, outputs, exit_code = start_api_post(sb, options, invoke_image, log)
        else:
            answer, outputs, exit_code = invoke(sb, options, invoke_image, step, log)
        seconds = time.monotonic() - started
        verdict = judge(sb, step, answer, before, seeded_keeper)
        seen |= set(passwords(sb).values()) | {sb.keeper_password(uid) for uid in USERS.values()}
        secret_values = secrets(sb, seen)
        if leaked([*outputs, log.read_text(errors="replace")], secret_values):
            verdict.problems.append("a password or the KSM config appeared in SAM's output")
        source = f"events/{step.event}" if step.event else f"POST {API_PATH.removeprefix('/Prod')}"
        ok = not verdict.problems
        verdict_text = "OK" if ok else f"FAILED (SAM CLI exited {exit_code})"
        print(f"\n{number}. {step.title}  ({source})  {seconds:.1f}s  {verdict_text}", flush=True)
        print_rows(["user", "answer", "password (sha256/8)", "IAM = Keeper"], verdict.rows)
        if not ok:
            for problem in verdict.problems:
                print(f"  ! {problem}")
            tail = log.read_text(errors="replace").strip().splitlines()[-25:]
            print("  SAM's log ends (" + str(log) + "):\n" + redact("\n".join(f"    {t}" for t in tail), secret_values))
        report.timings.append((f"{number}. {step.title}", seconds, "OK" if ok else "FAILED"))
        report.problems += [f"{step.title}: {p}" for p in verdict.problems]


def invoke(
    sb: Sandbox, options: Options, invoke_image: str | None, step: Step, log: Path
) -> tuple[Any, list[str], int]:
    """`sam local invoke` with the step's event: (the function's answer or None, SAM's stdout, SAM's exit code)."""
    argv = [str(options.sam_python), "-m", "sam_local.host_network", "local", "invoke", FUNCTION]
    event = EVENTS_DIR / str(step.event)
    if step.out_of_band:
        event = change_out_of_band(sb, step.out_of_band, event, options.workdir)
    argv += ["--event", str(event), *sam_args(options, invoke_image)]
    with log.open("w") as stderr:
        done = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=sam_env(sb),
            cwd=ROOT,
            timeout=INVOKE_TIMEOUT,
            check=False,
        )
    # SAM's exit code says nothing about the function (0 when it raised): only the answer and the state count.
    return last_json(done.stdout), [done.stdout], done.returncode


SETTLE_SECONDS = 3.0


def change_out_of_band(sb: Sandbox, user: str, event: Path, workdir: Path) -> Path:
    """Make the change a CloudTrail event reports (a new console password set outside the rotator), and return the
    event as CloudTrail would deliver it now: the shipped file's change time is in the past, before the rotator's
    last rotation, which the rotator rightly takes as settled."""
    time.sleep(SETTLE_SECONDS)  # a change within 2 s of the rotator's own is taken for it (drift.py): be later
    sb.aws("iam").update_login_profile(UserName=user, Password=initial_password(), PasswordResetRequired=False)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = json.loads(event.read_text())
    document["time"] = now
    document["detail"]["eventTime"] = now
    document["detail"]["eventID"] = str(uuid.uuid4())  # a new change, not a redelivery of the shipped one
    fresh = workdir / event.name
    fresh.write_text(json.dumps(document))
    return fresh


def start_api_post(sb: Sandbox, options: Options, invoke_image: str | None, log: Path) -> tuple[Any, list[str], int]:
    """`sam local start-api`, one SigV4-signed POST /rotations for carol's record, then SAM stopped (Ctrl-C):
    (the HTTP answer, its body, SAM's exit code)."""
    port = free_port()
    argv = [str(options.sam_python), "-m", "sam_local.host_network", "local", "start-api"]
    argv += [*sam_args(options, invoke_image), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as output:
        api = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=sam_env(sb), cwd=ROOT)
    try:
        deadline = time.monotonic() + API_START_TIMEOUT
        while not port_open(port):
            if api.poll() is not None:
                return {"errorType": "StartApi", "errorMessage": "sam local start-api stopped"}, [], api.returncode
            if time.monotonic() > deadline:
                return {"errorType": "StartApi", "errorMessage": "sam local start-api did not listen"}, [], -1
            time.sleep(0.5)
        status, body = signed_post(f"http://127.0.0.1:{port}/rotations", {"records": [USERS[CAROL]]})
        answer = {"statusCode": status, "body": body}
    finally:
        api.send_signal(signal.SIGINT)  # SAM stops its server and removes its container
        try:
            api.wait(timeout=60)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()
    return answer, [body], api.returncode


def signed_post(url: str, document: dict[str, Any]) -> tuple[int, str]:
    """POST as an IAM caller would (SigV4 for execute-api); SAM does not check it (AWS_IAM is not emulated)."""
    from botocore.auth import SigV4Auth  # noqa: PLC0415 - boto3 is the dev venv's
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    body = json.dumps(document)
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"sam-local-{uuid.uuid4()}"}
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials("testing", "testing", "testing"), "execute-api", REGION).add_auth(request)
    prepared = urllib.request.Request(url, data=body.encode(), headers=dict(request.headers), method="POST")  # noqa: S310
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(prepared, timeout=INVOKE_TIMEOUT) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except OSError as error:  # refused, reset, timed out: judged as a failed step, not a crash of the run
        return 0, f"no answer: {error}"


def last_json(stdout: str) -> Any:
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def print_rows(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def summarise(report: Report, seconds: float) -> int:
    print("\nwall time per step:")
    print_rows(["step", "seconds", "result"], [[w, f"{s:.1f}", v] for w, s, v in report.timings])
    if report.problems:
        print(f"\nsam-local FAILED ({len(report.problems)} problem(s), {seconds:.0f}s):")
        for problem in report.problems:
            print(f"  - {problem}")
        return 1
    print(f"\nsam-local OK: every step answered as expected and IAM agrees with Keeper after each ({seconds:.0f}s).")
    return 0
