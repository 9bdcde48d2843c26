"""One run of the rotator, shared by the Lambda entry point and the CLI: plan (planner.py), then carry the plan
out (executor.py). The caller's Invocation says who runs it and with which clients; the Outcome says what happened.
"""

from __future__ import annotations

from .context import Invocation
from .executor import execute
from .planner import Plan, plan
from .request import RotationRequest
from .results import Outcome


def run(request: RotationRequest, invocation: Invocation) -> Outcome:
    """One result per record the request names (or, for the schedule, per pamUser in scope that is due, plus the
    unfinished rotations; for recovery, per unfinished rotation). A failure that affects every record (STS, the
    config, Keeper unreachable) fails them all before any change."""
    planned = plan(request, invocation)
    return execute(planned) if isinstance(planned, Plan) else planned
