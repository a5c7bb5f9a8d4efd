"""RQ job functions for the idempotency-guard tests (host/tests/rq/guard.rs).

They use the real client, ``clients/python/retryguard_guard.py``, against the
``retryguard serve`` the test starts (its URL in ``RETRYGUARD_SERVER``). The "charge" is an RPUSH
of the job id to the Redis list ``<order>:ledger``; a run that gets the stored result instead
RPUSHes ``<job id> <result as JSON>`` to ``<order>:replayed``.

    charge_then_fail(order)   guard, charge, mark success, then fail AFTER the charge
                              (TimeoutError: retryable); a retried run replays the result
    charge_slowly(order)      guard, charge, sleep 3 s inside the guard, mark success; a run
                              that finds the key held fails with GuardInProgress
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rq import get_current_job

# The client lives in <repo>/clients/python (this file is <repo>/host/tests/rq/guard_jobs.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "clients" / "python"))

from jobs import _redis  # noqa: E402  (one Redis connection per process, as jobs.py does)
from retryguard_guard import Guard  # noqa: E402

guard = Guard()


def _replayed(order: str, job_id: str, result) -> None:
    _redis().rpush(f"{order}:replayed", f"{job_id} {json.dumps(result, sort_keys=True)}")


def charge_then_fail(order: str):
    job = get_current_job()
    key = f"charge:{order}"
    decision = guard.should_execute(job, key)
    if not decision:
        _replayed(order, job.id, decision.result)
        return decision.result
    _redis().rpush(f"{order}:ledger", job.id)  # the side effect: the card is charged
    guard.mark_success(job, {"charged": order, "receipt": f"rcpt-{job.id}"})
    # ... and then the job fails after the charge (say, writing the receipt e-mail times out).
    raise TimeoutError("the receipt mailer timed out")


def charge_slowly(order: str):
    job = get_current_job()
    with guard.hold(f"charge:{order}", job=job) as held:
        if held.replayed:
            _replayed(order, job.id, held.result)
            return held.result
        _redis().rpush(f"{order}:ledger", job.id)  # the charge
        time.sleep(3)  # the gateway is slow: the other run arrives meanwhile
        return held.complete({"charged": order, "receipt": f"rcpt-{job.id}"})
