"""RQ job functions for retryguard's real-parts tests (and the product demo).

Import them by name (``jobs.<function>``) with ``host/tests/rq`` on ``PYTHONPATH``. Every
failing job fails for real where a laptop can make it happen (a closed port, a socket that
never answers, two SQLite connections, a SIGKILL), so the traceback RQ stores is the one real
job code would leave. Only the stdlib, ``redis`` and ``rq`` are used.

One job per failure family of the contract table (host/tests/fixtures/contract/expected.tsv):

    network_error        network_error()         ConnectionRefusedError, 127.0.0.1:1
    timeout              timeout()               TimeoutError (socket.timeout) on a silent socket
    rate_limit           rate_limit()            urllib.error.HTTPError 429 Too Many Requests
    temporary_error      temporary_error()       urllib.error.HTTPError 503 Service Unavailable
    database_lock        database_lock()         sqlite3.OperationalError: database is locked
    validation_error     validation_error()      ValueError
    logic_error          logic_error()           TypeError
    data_not_found       data_not_found()        KeyError
    permission_error     permission_error()      PermissionError
    configuration_error  configuration_error()   ModuleNotFoundError
    unknown              custom_unknown()        billing.errors.GatewayQuirk
    (one cause, values   card_declined(amount)   billing.errors.CardDeclined, its message
     differ per job)                             holding the job id, amount, time, host
    (no traceback)       killed_by_signal_9()    the work-horse SIGKILLs itself (forking worker only)
    (status stopped)     stopped_by_user()       stops itself with RQ's stop command (forking only)

Counting jobs, so tests count real executions. Each takes a Redis key and, before it fails or
succeeds, increments the counter ``<key>`` and the field ``<job id>`` of the hash
``<key>:by_job`` in one transaction (so "ran exactly once per job" is checkable, not only the
total). The connection comes from ``RQ_TEST_REDIS_URL``, else the running job's own.

    count_and_fail(key)      counts, then fails with a real connection refusal (retryable)
    count_and_succeed(key)   counts, returns the new count
    fail_once(key)           counts; fails (connection refused) on the job's first run only
                             (runs per job kept in the hash ``<key>:fail_once``)
    fail_while_down(key)     counts; fails (connection refused) while ``<key>:down`` exists,
                             else succeeds (successes per job in the hash ``<key>:succeeded``)
    charge_then_fail(key)    appends "<job id>" to the ledger list ``<key>:ledger`` (the side
                             effect), counts, then times out reading the gateway's answer: the
                             charge happened, the failure looks retryable
    return_retry(key)        counts, then returns ``rq.Retry(max=1)``: RQ runs it twice and
                             fails it with a "max retries exceeded" result (type 5), no text
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import sqlite3
import tempfile
import time
import urllib.error
from email.message import Message
from pathlib import Path

import redis
from rq import get_current_job

CLOSED_PORT = 1  # nothing listens on 127.0.0.1:1


# --- app-like exception classes (as an application module would define them) --------------


class GatewayQuirk(Exception):
    """Something no rule knows."""


GatewayQuirk.__module__ = "billing.errors"


# --- helpers ------------------------------------------------------------------------------


def _refuse_connection():
    """Connects to a closed port: ConnectionRefusedError, for real."""
    socket.create_connection(("127.0.0.1", CLOSED_PORT), timeout=2)


def _read_from_silent_socket(timeout: float = 0.02):
    """Reads from a peer that accepts and never answers: TimeoutError (socket.timeout)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with socket.create_connection(silent.getsockname(), timeout=timeout) as conn:
            conn.recv(1024)


def _http_error(code: int, reason: str, url: str):
    headers = Message()
    if code == 429:
        headers["Retry-After"] = "30"
    return urllib.error.HTTPError(url, code, reason, headers, None)


_CONNECTIONS: dict[tuple[int, str], redis.Redis] = {}


def _redis() -> redis.Redis:
    url = os.environ.get("RQ_TEST_REDIS_URL")
    if not url:
        job = get_current_job()
        if job is None:
            raise RuntimeError("RQ_TEST_REDIS_URL is not set and no RQ job is running")
        return job.connection
    # One connection per process and URL (a forked work-horse must not share its parent's).
    key = (os.getpid(), url)
    conn = _CONNECTIONS.get(key)
    if conn is None:
        conn = _CONNECTIONS[key] = redis.Redis.from_url(url)
    return conn


def _job_id() -> str:
    job = get_current_job()
    return job.id if job is not None else "-"


def _count(key: str) -> int:
    """Counts one real execution: INCR <key> and HINCRBY <key>:by_job <job id> 1, atomically."""
    pipe = _redis().pipeline(transaction=True)
    pipe.incr(key)
    pipe.hincrby(f"{key}:by_job", _job_id(), 1)
    total, _ = pipe.execute()
    return int(total)


# --- one job per failure family -----------------------------------------------------------


def network_error():
    _refuse_connection()


def timeout():
    _read_from_silent_socket()


def rate_limit():
    raise _http_error(429, "Too Many Requests", "https://api.example.invalid/v1/rates")


def temporary_error():
    raise _http_error(503, "Service Unavailable", "https://api.example.invalid/v1/rates")


def database_lock():
    with tempfile.TemporaryDirectory(prefix="retryguard-jobs-") as tmp:
        path = Path(tmp) / "orders.db"
        holder = sqlite3.connect(path, timeout=0.02, isolation_level=None)
        try:
            holder.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, state TEXT)")
            holder.execute("BEGIN EXCLUSIVE")
            writer = sqlite3.connect(path, timeout=0.02)
            try:
                writer.execute("UPDATE orders SET state = 'paid' WHERE id = 7")
            finally:
                writer.close()
        finally:
            holder.close()


def validation_error():
    int("12.50 EUR")


def logic_error():
    total = None
    return total + 1


def data_not_found():
    payload = {"customer_id": 7}
    return payload["order_id"]


def permission_error():
    # What open() raises without rights (raised by hand: the tests may run as root).
    raise PermissionError(13, os.strerror(13), "/srv/exports/ledger.csv")


def configuration_error():
    importlib.import_module("app.tasks_v2")


def custom_unknown():
    raise GatewayQuirk("gateway returned result code XJ-7 for order 7")


class CardDeclined(Exception):
    """The payment gateway said no: one cause, with this job's own values in the message."""


CardDeclined.__module__ = "billing.errors"


def card_declined(amount: str = "12.50"):
    """Fails with one cause whose message differs per job: the job id, an amount, a time, a
    host. Failure groups must put every such job in one group (host/tests/rq/triage.rs)."""
    job = get_current_job()
    job_id = job.id if job else "none"
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    raise CardDeclined(
        f"card for order {job_id} declined: amount {amount} EUR at {at} by gw-{len(job_id)}.pay.example.com"
    )


def killed_by_signal_9():
    """Takes the work-horse down; only meaningful under a forking worker (`rq worker`)."""
    os.kill(os.getpid(), signal.SIGKILL)


def stopped_by_user():
    """Asks RQ to stop this very job; only meaningful under a forking worker."""
    from rq.command import send_stop_job_command

    job = get_current_job()
    send_stop_job_command(job.connection, job.id)
    time.sleep(30)


# --- counting jobs ------------------------------------------------------------------------


def count_and_fail(key: str):
    _count(key)
    _refuse_connection()


def count_and_succeed(key: str) -> int:
    return _count(key)


def fail_once(key: str) -> str:
    """Fails the first time this job runs, succeeds on every later run."""
    conn = _redis()
    runs = conn.hincrby(f"{key}:fail_once", _job_id(), 1)
    _count(key)
    if runs == 1:
        _refuse_connection()
    return "ok"


def log_run_fail_first(path: str) -> str:
    """Appends this job's id to the file ``path``, one line per real run, and fails the first
    time this job runs. The runs are counted outside Redis, so a run a Redis failover undid
    is still counted: the Sentinel test's "ran twice" check."""
    job_id = _job_id()
    with open(path, "a", encoding="utf-8") as f:
        f.write(job_id + "\n")
        f.flush()
        os.fsync(f.fileno())
    with open(path, encoding="utf-8") as f:
        runs = sum(1 for line in f if line.strip() == job_id)
    if runs == 1:
        _refuse_connection()
    return "ok"


def fail_while_down(key: str) -> str:
    """A job whose dependency is down while the Redis key ``<key>:down`` exists: counts, then
    fails with a real connection refusal while it does; otherwise succeeds, counting the
    success per job in the hash ``<key>:succeeded``."""
    conn = _redis()
    _count(key)
    if conn.exists(f"{key}:down"):
        _refuse_connection()
    conn.hincrby(f"{key}:succeeded", _job_id(), 1)
    return "ok"


def charge_then_fail(key: str):
    job_id = _job_id()
    _redis().rpush(f"{key}:ledger", job_id)  # the side effect: the card is charged
    _count(key)
    _read_from_silent_socket()  # ... and the gateway's answer never arrives



def return_retry(key: str):
    """Counts, then asks RQ for another run by returning ``rq.Retry(max=1)`` (RQ 2.x's
    job-driven retry): the first run is retried, the second ends the job as failed with a
    "max retries exceeded" result and no exception text."""
    from rq import Retry

    _count(key)
    return Retry(max=1)
