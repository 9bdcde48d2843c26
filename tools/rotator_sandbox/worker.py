"""A warm Lambda container: `python -m rotator_sandbox.worker` runs the real handler once per JSON event line read
from stdin and writes one JSON result line per event to stdout (module state, clients and the Keeper connection
persist between events, as in a warm container). At end of input it writes {"stats": {...}} (calls, peak RSS).
The same environment variables as `rotator_sandbox.invoke` apply; SANDBOX_CRASH_AFTER counts calls across all
events of the process, so a worker can be made to die in the middle of its Nth batch.
"""

from __future__ import annotations

import json
import os
import resource
import sys

from rotator_sandbox.invoke import FakeLambdaContext
from rotator_sandbox.paths import FUNCTION_DIR


def main() -> int:
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the function's log lines go to stderr; stdout carries only results
    sys.stdout = sys.stderr
    if str(FUNCTION_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTION_DIR))

    from rotator_sandbox import hooks  # noqa: PLC0415 - only the handler process installs them

    hooks.install(os.environ.get("SANDBOX_CRASH_AFTER") or None, os.environ.get("SANDBOX_AWS_FAULTS") or None)
    from app import lambda_handler  # noqa: PLC0415 - imported after the hooks: the handler's clients must see them

    for line in sys.stdin:
        result = lambda_handler(json.loads(line), FakeLambdaContext())
        results.write(json.dumps(result) + "\n")
        results.flush()
    stats = {
        "calls": dict(hooks.calls),
        "table_calls": dict(hooks.table_calls),
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    results.write(json.dumps({"stats": stats}) + "\n")
    results.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
