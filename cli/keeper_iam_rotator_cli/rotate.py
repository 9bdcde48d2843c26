"""`rotate`: the Lambda's rotation (service.run) run locally with the operator's AWS credentials."""

from __future__ import annotations

import getpass
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from keeper_iam_rotator import service
from keeper_iam_rotator.context import Invocation
from keeper_iam_rotator.errors import KeeperCallError
from keeper_iam_rotator.keeper import KeeperVault
from keeper_iam_rotator.request import RECORD_UID, RotationRequest, Trigger
from keeper_iam_rotator.results import RecordResult

from .errors import EXIT_FAILED, CliError
from .render import console
from .resolve import Target

PROGRESS_THRESHOLD = 3  # show a progress bar above this many records (or when the count is not known up front)
LEASE_SECONDS = 900  # the journal lease for one record's rotation: as long as the Lambda's own maximum


def check_uids(uids: tuple[str, ...], flag: str = "--record") -> tuple[str, ...]:
    """Keeper uids given with `flag`, deduplicated in order; CliError (exit 2) for anything else."""
    kind = "folder" if flag == "--folder" else "record"
    for uid in uids:
        if not RECORD_UID.fullmatch(uid):
            raise CliError(
                f"{flag} {uid[:40]!r} is not a Keeper {kind} uid (url-safe base64, like 'A1ic3Rec0rdUid00000001')"
            )
    return tuple(dict.fromkeys(uids))


def unseen_folders(vault: KeeperVault, folders: tuple[str, ...]) -> list[str]:
    """The requested folder uids the KSM application does not see (mistyped, or not shared with it)."""
    if not folders:
        return []
    try:
        visible = vault.visible_folder_uids()
    except KeeperCallError as error:
        raise CliError(f"cannot list the KSM application's folders: {error}", EXIT_FAILED) from None
    return [uid for uid in folders if uid not in visible]


def unseen_folders_message(missing: list[str]) -> str:
    return f"folder {', '.join(missing)} is not shared with the KSM application (or does not exist)"


def run_id() -> str:
    """The journal lease owner for this run: who ran it, where, and a unique suffix."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}:{uuid.uuid4().hex[:12]}"


@contextmanager
def _progress(total: int | None) -> Iterator[Callable[[RecordResult, float], None]]:
    out = console(stderr=True)
    if (total is not None and total <= PROGRESS_THRESHOLD) or not out.is_terminal:
        yield lambda result, seconds: None
        return
    columns: list[Any] = [SpinnerColumn(), TextColumn("rotating"), BarColumn()]
    columns += [MofNCompleteColumn(), TimeElapsedColumn()] if total else [TimeElapsedColumn()]
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task("rotating", total=total)
        yield lambda result, seconds: bar.advance(task)


def run_local(
    target: Target,
    uids: tuple[str, ...],
    folders: tuple[str, ...],
    dry_run: bool,
    rotate_all: bool = False,
    bind: bool = False,
) -> dict[str, Any]:
    """Rotate (or plan) the records and return the Lambda's answer for them (Outcome.document()). `bind`: bind
    named records that have only a login (the operator's own credentials must allow UpdateLoginProfile on those
    users)."""
    settings = target.settings(folder_uids=folders, dry_run=dry_run)
    config = target.config_text  # read and validated before anything can change: a bad config is exit 2
    missing = unseen_folders(KeeperVault(config, settings.keeper_timeout), folders)
    if missing:
        raise CliError(f"{unseen_folders_message(missing)}: nothing was rotated")
    # named records run as a direct invoke would; without, the records in scope that are due (all of them with
    # --all), as the schedule would
    if uids:
        request = RotationRequest(Trigger.INVOKE, uids, dry_run=dry_run, bind=bind)
    else:
        request = RotationRequest(Trigger.SCHEDULE, dry_run=dry_run, rotate_all=rotate_all)
    with _progress(len(uids) if uids else None) as observe:
        invocation = Invocation(
            settings=settings,
            clients=target.clients,
            owner=run_id(),
            lease_seconds=LEASE_SECONDS + settings.lease_margin,
            load_ksm_config=lambda _source: config,
            observe=observe,
        )
        return service.run(request, invocation).document()
