"""The sandbox stack: moto server (IAM, STS, Secrets Manager, DynamoDB, KMS) and the KSM emulator on 127.0.0.1, the
function's own resources, seeded IAM users with console passwords and their pamUser records, and a way to run the
real handler in a subprocess against all of it.

moto runs in this process (a thread), so IAM's stored password is read straight from moto's backend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

import boto3
from moto.iam.models import iam_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from keeper_iam_rotator.journal import Entry, Journal
from ksm_emulator import EmulatorServer
from ksm_emulator.throttle import BurstLimit, RateLimit
from rotator_sandbox.aging import age_rotations
from rotator_sandbox.keeper_model import pacing_env
from rotator_sandbox.paths import EVENTS_DIR, FUNCTION_DIR, ROOT, TOOLS_DIR

ACCOUNT = "123456789012"
REGION = "us-east-1"
JOURNAL_TABLE = "keeper-iam-rotator-journal"
JOURNAL_KEY = "alias/keeper-iam-rotator-journal"
JOURNAL_MAC_KEY = "alias/keeper-iam-rotator-journal-mac"
IDEMPOTENCY_TABLE = "keeper-iam-rotator-idempotency"
CONFIG_SECRET = "keeper-iam-rotator/ksm-config"  # noqa: S105 - a secret's name
# One row per client device and endpoint (and per-minute window): the Keeper request budget every invocation shares.
PACING_TABLE = "keeper-iam-rotator-pacing"
# template.yaml's default RequiredUserTagValue: an IAM administrator opts each user in (moto does not evaluate the
# condition, so the tag is seeded to make the sandbox look like a real deployment, not to make anything pass)
SCOPE_TAG = {"Key": "keeper-iam-rotator", "Value": "managed"}

# Keeper throttles (the SDK's model: more than 100 requests per device and endpoint without a 10 s pause), and so does
# the sandbox, by default: every demo, bench and fleet meets what a real Keeper does. The function paces its Keeper
# requests under it (KEEPER_BURST_LIMIT 90 / KEEPER_QUIET_SECONDS 11 per device and endpoint, shared by every
# invocation through the pacing table), so a run should see no throttled answer; `bench` and `fleet` count them.
# Before the function paced, one scheduled run over 120 records took 262 s instead of 4 s (118 throttled
# update_secret answers, 18 records keeper_stage_failed), and `fleet --records 300 --accounts 3` had not finished
# after 15 min. `--no-throttle` turns it off for one run, `--rate-limit N/W` adds the per-minute model.
DEFAULT_THROTTLE: BurstLimit | None = BurstLimit(100, 10)


@dataclass(frozen=True)
class KeeperLimits:
    """How the sandbox's KSM emulator throttles (see ksm_emulator.throttle)."""

    throttle: BurstLimit | None = DEFAULT_THROTTLE
    rate_limit: RateLimit | None = None

    def __str__(self) -> str:
        return f"throttle {self.throttle or 'off'}, rate limit {self.rate_limit or 'off'}"


DEFAULT_LIMITS = KeeperLimits()


def config_secret_name(device: int) -> str:
    """The secret holding client device `device`'s KSM config (1-based): the first is CONFIG_SECRET, the others
    CONFIG_SECRET-2, -3, ... (`keeper-iam-rotator init` names them in real life)."""
    return CONFIG_SECRET if device == 1 else f"{CONFIG_SECRET}-{device}"


def config_secret_names(devices: int) -> list[str]:
    return [config_secret_name(n) for n in range(1, devices + 1)]


def create_function_resources(aws: Callable[[str], Any], ksm_config: str | Sequence[str]) -> None:
    """What template.yaml creates: the journal, idempotency and Keeper pacing tables, the journal's KMS keys
    (encryption, and the HMAC key of its integrity MAC) + aliases, and one KSM config secret per client device
    (which `keeper-iam-rotator init` creates in real life; `ksm_config` is one config or a list of them, named by
    config_secret_name). `aws` makes a client for a service."""
    for table, key in ((JOURNAL_TABLE, "userArn"), (IDEMPOTENCY_TABLE, "id"), (PACING_TABLE, "id")):
        _create_table(aws, table, key)
    kms = aws("kms")
    key_id = kms.create_key(Description="keeper-iam-rotator journal")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=JOURNAL_KEY, TargetKeyId=key_id)
    mac = kms.create_key(
        Description="keeper-iam-rotator journal MAC", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"
    )
    kms.create_alias(AliasName=JOURNAL_MAC_KEY, TargetKeyId=mac["KeyMetadata"]["KeyId"])
    configs = [ksm_config] if isinstance(ksm_config, str) else list(ksm_config)
    for device, config in enumerate(configs, start=1):
        aws("secretsmanager").create_secret(Name=config_secret_name(device), SecretString=config)


def _create_table(aws: Callable[[str], Any], table: str, key: str) -> None:
    aws("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


PASSWORD_POLICY = {
    "MinimumPasswordLength": 14,
    "RequireSymbols": True,
    "RequireNumbers": True,
    "RequireUppercaseCharacters": True,
    "RequireLowercaseCharacters": True,
    "AllowUsersToChangePassword": True,
}
# Inherited variables that would point the handler somewhere else than the sandbox.
_DROP_ENV_PREFIXES = (
    *("AWS_", "KSM_", "POWERTOOLS_", "SANDBOX_", "JOURNAL_", "ROTATION_", "MOTO_", "IDEMPOTENCY_", "KEEPER_"),
    "PACING_",
)
_DROP_ENV = {
    *("DRY_RUN", "RETRY_DELAY", "LOG_LEVEL", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PYTHONPATH"),
    "SCHEDULE_EXPRESSION",
}


def fingerprint(password: str | None) -> str:
    """First 8 hex of SHA-256: enough to tell passwords apart on screen, never the password."""
    if password is None:
        return "(none)"
    return hashlib.sha256(password.encode()).hexdigest()[:8]


def initial_password() -> str:
    return f"Init-{secrets.token_urlsafe(12)}-Aa1!"


class NotImplementedAsAwsError:
    """WSGI middleware: a call moto does not implement is answered as AWS answers an unknown action (HTTP 501, error
    code NotImplemented, in the protocol the client speaks), not with a traceback on the server's terminal and an
    HTML page the client cannot parse."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            return self.app(environ, start_response)
        except NotImplementedError as error:
            message = f"moto does not implement this call ({str(error)[:200]})"
            if environ.get("HTTP_X_AMZ_TARGET") or "json" in environ.get("CONTENT_TYPE", ""):
                body = json.dumps({"__type": "NotImplemented", "message": message}).encode()
                headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", "NotImplemented")]
            else:
                body = (
                    "<ErrorResponse><Error><Type>Sender</Type><Code>NotImplemented</Code>"
                    f"<Message>{escape(message)}</Message></Error><RequestId>sandbox</RequestId></ErrorResponse>"
                ).encode()
                headers = [("Content-Type", "text/xml")]
            start_response("501 Not Implemented", [*headers, ("Content-Length", str(len(body)))])
            return [body]


class AtomicDynamoDB:
    """WSGI middleware: one DynamoDB call at a time. DynamoDB applies a conditional write atomically; moto checks the
    condition and writes in Python on the server's request threads with no lock, so two concurrent writes to one item
    can both pass a condition only one should (seen as a rare extra request in a pacing window, pacing.py)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self._lock:
            return list(self.app(environ, start_response))


class QuietMotoServer(ThreadedMotoServer):
    """moto's threaded server with NotImplementedAsAwsError and AtomicDynamoDB around its app."""

    def _server_entry(self) -> None:
        app = NotImplementedAsAwsError(AtomicDynamoDB(DomainDispatcherApplication(create_backend_app)))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


class Invocation(NamedTuple):
    exit_code: int
    result: dict[str, Any] | None
    stdout: str
    stderr: str

    @property
    def results(self) -> list[dict[str, Any]]:
        """The per-record results, unwrapping an API Gateway proxy response."""
        result = self.result or {}
        if "statusCode" in result and isinstance(result.get("body"), str):
            try:
                result = json.loads(result["body"])
            except ValueError:
                return []
        return list(result.get("results") or [])


@dataclass
class SeededUser:
    name: str
    uid: str
    arn: str
    initial_password: str = field(repr=False)


class Sandbox:
    """`with Sandbox(users=3) as sb:` starts both servers, creates the function's resources and seeds `users` pairs
    (IAM user + login profile, pamUser record); both servers stop on exit, Ctrl-C included."""

    def __init__(
        self,
        users: int = 0,
        pending_policy: str = "replace",
        user_prefix: str = "sandbox-user",
        limits: KeeperLimits = DEFAULT_LIMITS,
        random_seed: int | None = None,
        devices: int = 1,
    ) -> None:
        if devices < 1:
            raise ValueError(f"devices must be at least 1, not {devices}")
        self.user_count = users
        self.limits = limits
        self.devices = devices  # KSM client devices of the one application: each sees every record
        self.random_seed = random_seed  # moto's ids and ARN suffixes: the same every run when set
        self.pending_policy = pending_policy
        self.user_prefix = user_prefix
        self.users: list[SeededUser] = []
        self.keeper: Any = None
        self._moto: Any = None
        self.aws_url = ""
        self._session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials
            aws_session_token="testing",  # noqa: S106
            region_name=REGION,
        )
        self._clients: dict[str, Any] = {}
        # Credentials the handler runs with instead of moto's unchecked "testing" keys; when set, moto evaluates the
        # identity policies of every request while a handler runs (the sandbox's own calls stay unchecked).
        self.handler_credentials: dict[str, str] = {}
        self._handlers_running = 0

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines on the terminal
        self._moto = QuietMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        self.aws_url = f"http://127.0.0.1:{self._moto._server.server_port}"
        self.keeper = EmulatorServer(
            seed=None,
            pending_policy=self.pending_policy,
            throttle=self.limits.throttle,
            rate_limit=self.limits.rate_limit,
        )
        self.reset()

    def stop(self) -> None:
        if self.keeper is not None:
            self.keeper.close()
            self.keeper = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def reset(self, users: int | None = None) -> None:
        """Empty both sides, re-create the function's resources and seed `users` (default: the constructor's)."""
        self._moto_api("reset")
        if self.random_seed is not None:
            self._moto_api(f"seed?a={self.random_seed}")
        self.handler_credentials = {}
        self._handlers_running = 0
        self._moto_api("reset-auth", b"inf")  # even after a test that never collected its handler
        self.keeper.vault.reset(seed={})
        self.keeper.vault.pending_policy = self.pending_policy
        self._clients.clear()
        self.users = []
        create_function_resources(self.aws, [self.keeper.client_config() for _ in range(self.devices)])
        self.aws("iam").update_account_password_policy(**PASSWORD_POLICY)
        for i in range(self.user_count if users is None else users):
            self.add_user(f"{self.user_prefix}-{i + 1:03d}")

    @property
    def config_secrets(self) -> list[str]:
        """The KSM config secrets, one per client device, in KSM_CONFIG_SECRET_ID's order."""
        return config_secret_names(self.devices)

    # -- seeding -------------------------------------------------------------------------------------------------
    def aws(self, service: str) -> Any:
        """A client of the sandbox's moto server (never the real AWS)."""
        if service not in self._clients:
            self._clients[service] = self._session.client(service, endpoint_url=self.aws_url)
        return self._clients[service]

    def add_user(
        self,
        name: str,
        uid: str | None = None,
        password: str | None = None,
        console: bool = True,
        folder: str | None = None,
    ) -> SeededUser:
        """An IAM user with a console password (none when `console` is false), and the pamUser record holding it,
        bound to the user (login = user name, distinguishedName = the user's ARN), shared directly or in `folder`."""
        password = password or initial_password()
        iam = self.aws("iam")
        arn = iam.create_user(UserName=name, Tags=[SCOPE_TAG])["User"]["Arn"]
        if console:
            iam.create_login_profile(UserName=name, Password=password, PasswordResetRequired=False)
        uid = add_bound_record(self.keeper.vault, name, password, arn, uid=uid, folder=folder)
        user = SeededUser(name=name, uid=uid, arn=arn, initial_password=password)
        self.users.append(user)
        return user

    def user(self, name_or_uid: str) -> SeededUser:
        return next(u for u in self.users if name_or_uid in (u.name, u.uid))

    # -- the truth on both sides -----------------------------------------------------------------------------------
    def iam_password(self, name: str) -> str | None:
        return iam_backends[ACCOUNT]["global"].get_user(name).password

    def keeper_record(self, uid: str) -> dict[str, Any] | None:
        return self.keeper.vault.committed(uid)

    def keeper_password(self, uid: str) -> str | None:
        record = self.keeper_record(uid)
        return field_value(record, "password") if record else None

    def keeper_staged_password(self, uid: str) -> str | None:
        staged = self.keeper.vault.staged(uid)
        return field_value(staged, "password") if staged else None

    def agree(self, user: SeededUser) -> bool:
        iam = self.iam_password(user.name)
        return iam is not None and iam == self.keeper_password(user.uid)

    def journal_items(self) -> dict[str, dict[str, Any]]:
        """Journal items by user ARN."""
        items = self.aws("dynamodb").scan(TableName=JOURNAL_TABLE, ConsistentRead=True)["Items"]
        return {item["userArn"]["S"]: item for item in items}

    def age_rotations(self, days: float, record_uid: str = "") -> int:
        """Move last rotations `days` into the past, as time would (aging.py)."""
        return age_rotations(self.aws("dynamodb"), self.aws("kms"), JOURNAL_TABLE, JOURNAL_MAC_KEY, days, record_uid)

    def journal_passwords(self) -> list[str]:
        """Every password held in an open journal entry (decrypted the way the function does, with the sandbox's
        KMS)."""
        journal = Journal(self.aws("dynamodb"), self.aws("kms"), JOURNAL_TABLE, JOURNAL_KEY, JOURNAL_MAC_KEY)
        entries = [Entry.from_item(item) for item in self.journal_items().values()]
        return [p.reveal() for entry in entries if entry.sealed for p in journal.passwords(entry)]

    # -- running the handler ---------------------------------------------------------------------------------------
    def handler_env(self, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a handler subprocess needs to talk to this sandbox and nothing else, with Keeper pacing
        that matches the emulator's limits (keeper_model.pacing_env: KEEPER_* set here override it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_ENV_PREFIXES) and k not in _DROP_ENV}
        env.update(
            {
                "PYTHONPATH": os.pathsep.join([str(FUNCTION_DIR), str(TOOLS_DIR)]),
                "AWS_ENDPOINT_URL": self.aws_url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_LAMBDA_FUNCTION_NAME": "keeper-iam-rotator",
                "AWS_SAM_LOCAL": "true",  # not a real Lambda (as under `sam local invoke`): SANDBOX_KEEPER_HOST counts
                "SANDBOX_KEEPER_HOST": self.keeper.host,
                "REQUESTS_CA_BUNDLE": self.keeper.ca_file,
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": "KeeperIamRotator",
                "POWERTOOLS_SERVICE_NAME": "keeper-iam-rotator",
                "LOG_LEVEL": "INFO",
                "KSM_CONFIG_SECRET_ID": ",".join(self.config_secrets),
                "JOURNAL_TABLE_NAME": JOURNAL_TABLE,
                "PACING_TABLE_NAME": PACING_TABLE,
                "JOURNAL_KEY_ID": JOURNAL_KEY,
                "JOURNAL_MAC_KEY_ID": JOURNAL_MAC_KEY,
                "IDEMPOTENCY_TABLE_NAME": IDEMPOTENCY_TABLE,
                "RETRY_DELAY": "0",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        env.update(pacing_env(self.limits.throttle, self.limits.rate_limit, os.environ))
        env.update(self.handler_credentials)
        env.update(extra_env or {})
        return env

    def _spawn(
        self, extra_env: dict[str, str] | None, module: str = "rotator_sandbox.invoke", stderr: Any = subprocess.PIPE
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=self.handler_env(extra_env),
            cwd=str(ROOT),
        )

    def invoke(
        self, event: dict[str, Any], extra_env: dict[str, str] | None = None, timeout: float = 120
    ) -> Invocation:
        """Run the real handler in a new process; (exit_code, result or None, stdout, stderr)."""
        return self.finish(self.start_invoke(event, extra_env), timeout)

    def start_invoke(self, event: dict[str, Any], extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start the handler subprocess without waiting for it; `finish(process)` collects it."""
        self._handler_started()
        try:
            process = self._spawn(extra_env)
        except BaseException:
            self._handler_ended()
            raise
        if process.stdin is None:  # pragma: no cover - _spawn always asks for a pipe
            raise RuntimeError("no stdin pipe")
        try:
            process.stdin.write(json.dumps(event))  # small: fits the pipe buffer, so this never blocks
            process.stdin.close()
        except BaseException:
            process.kill()
            process.wait()
            self._handler_ended()
            raise
        process.stdin = None  # the runner reads stdin to EOF and starts right away, not when finish() is called
        return process

    def finish(self, process: subprocess.Popen[str], timeout: float = 120) -> Invocation:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.communicate()
            raise
        finally:
            self._handler_ended()
        return Invocation(process.returncode, _last_json(stdout), stdout, stderr)

    def _handler_started(self) -> None:
        if self.handler_credentials and self._handlers_running == 0:
            self._moto_api("reset-auth", b"0")  # every request from now on is authorised by moto
        self._handlers_running += 1

    def _handler_ended(self) -> None:
        self._handlers_running -= 1
        if self._handlers_running == 0:
            self._moto_api("reset-auth", b"inf")  # the sandbox's own seeding and reads stay unchecked

    def _moto_api(self, path: str, data: bytes | None = None) -> None:
        url = f"{self.aws_url}/moto-api/{path}"
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "text/plain"})  # noqa: S310
        _loopback_opener().open(request, timeout=10).read()


def add_bound_record(
    vault: Any,
    login: str,
    password: str,
    arn: str,
    uid: str | None = None,
    custom: dict[str, str] | None = None,
    folder: str | None = None,
) -> str:
    """A pamUser record bound to an IAM user (login = user name, distinguishedName = its ARN), with `custom` text
    fields by label, shared directly or in `folder`."""
    return str(
        vault.add_record(
            folder=folder,
            uid=uid,
            type="pamUser",
            title=f"IAM {login}",
            fields=[
                {"type": "login", "value": [login]},
                {"type": "password", "value": [password]},
                {"type": "text", "label": "distinguishedName", "value": [arn]},
            ],
            custom=[{"type": "text", "label": label, "value": [value]} for label, value in (custom or {}).items()],
        )
    )


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / name).read_text())


def field_value(record: dict[str, Any], field_type: str, label: str | None = None) -> str | None:
    for section in ("fields", "custom"):
        for item in record.get(section) or []:
            if item.get("type") == field_type and (label is None or item.get("label") == label):
                return (item.get("value") or [None])[0]
    return None


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _loopback_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


__all__ = [
    "DEFAULT_LIMITS",
    "Invocation",
    "KeeperLimits",
    "Sandbox",
    "SeededUser",
    "field_value",
    "fingerprint",
    "load_event",
]
