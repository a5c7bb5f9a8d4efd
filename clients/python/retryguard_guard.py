"""retryguard's idempotency guard for RQ job code: a side effect (a charge, an e-mail) runs at
most once per key, even when the job is retried.

Standard library only (``urllib.request``): it calls the guard endpoints of
``retryguard serve`` (docs/guard.md), whose URL comes from ``Guard(url=...)`` or the
environment variable ``RETRYGUARD_SERVER``, the same one the ``retryguard`` CLI reads (default
``http://127.0.0.1:8000``). ``RETRYGUARD_URL``, its old name, still works with a warning.

The guard wraps the SIDE EFFECT, not the whole job. Release the key only for a failure known
to happen before the side effect; any other failure leaves the key in progress until its lease
ends, because the charge may have happened. A key held by another run raises
``GuardInProgress``, which retryguard's default policy classifies as retryable
(temporary_error): let it propagate, and retryguard retries the job later.

Seed shape::

    from retryguard_guard import Guard
    guard = Guard()

    def charge(order_id, amount):
        job = rq.get_current_job()
        key = f"charge:{order_id}"
        decision = guard.should_execute(job, key)        # raises GuardInProgress if held
        if not decision:
            return decision.result                       # done before: the stored result
        try:
            card = load_card(order_id)                   # fails BEFORE the charge ...
        except CardMissing:
            guard.release(job, key)                      # ... so a retry may run
            raise
        receipt = stripe.PaymentIntent.create(amount=amount, customer=card.customer,
                                              idempotency_key=key)   # passed downstream
        guard.mark_success(job, {"receipt": receipt.id})
        return {"receipt": receipt.id}

Context manager::

    with guard.hold(f"charge:{order_id}", job=job, release_on=(CardMissing,)) as held:
        if held.replayed:
            return held.result
        card = load_card(order_id)
        receipt = gateway.charge(card, amount, headers={"Idempotency-Key": held.key})
        return held.complete({"receipt": receipt})

Decorator (the key from the arguments; the return value, JSON-serializable, is stored)::

    @guard.idempotent(lambda order_id, amount: f"charge:{order_id}")
    def charge(order_id, amount):
        ...
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any, Callable

__all__ = [
    "Guard",
    "Decision",
    "Held",
    "GuardError",
    "GuardInProgress",
    "FingerprintMismatch",
    "StaleToken",
]

DEFAULT_URL = "http://127.0.0.1:8000"
# RQ's default job timeout, when a job has none of its own.
RQ_DEFAULT_TIMEOUT = 180
# A lease outlives the job's timeout by this much (docs/guard.md).
LEASE_MARGIN = 60


class GuardError(Exception):
    """The guard refused a call, or retryguard could not be reached."""


class GuardInProgress(GuardError):
    """Another run holds the key. Retryable: retry after ``retry_after`` seconds."""

    def __init__(self, key: str, retry_after: int):
        super().__init__(f"idempotency key {key!r} is held by another run; retry in {retry_after} s")
        self.key = key
        self.retry_after = retry_after


class FingerprintMismatch(GuardError):
    """The key was used for another request (another fingerprint). Not retryable."""


class StaleToken(GuardError):
    """This run's lease ended and another owner took the key over (or it was released)."""


class Decision:
    """What ``should_execute`` decided: truthy when the side effect must run, falsy when it
    ran before (``result`` is then the stored result)."""

    def __init__(self, execute: bool, key: str, token: int | None = None, result: Any = None):
        self.execute = execute
        self.key = key
        self.token = token
        self.result = result

    def __bool__(self) -> bool:
        return self.execute

    def __repr__(self) -> str:
        return f"Decision(execute={self.execute}, key={self.key!r}, token={self.token})"


def _server_from_env() -> str | None:
    """``RETRYGUARD_SERVER``, or its old name ``RETRYGUARD_URL`` with a warning."""
    server = os.environ.get("RETRYGUARD_SERVER")
    if server:
        return server
    old = os.environ.get("RETRYGUARD_URL")
    if old:
        warnings.warn(
            "RETRYGUARD_URL is the old name of RETRYGUARD_SERVER: set RETRYGUARD_SERVER instead",
            DeprecationWarning,
            stacklevel=3,
        )
    return old


class Guard:
    """A client of retryguard's idempotency endpoints."""

    def __init__(self, url: str | None = None, timeout: float = 10.0):
        self.url = (url or _server_from_env() or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        # key -> token of the leases this process holds (for mark_success / release).
        self._held: dict[tuple[str, str], int] = {}

    # --- the HTTP calls -------------------------------------------------------------------

    def _call(self, method: str, key: str, action: str = "", body: dict | None = None):
        """One request; returns (status, headers, json body)."""
        path = f"{self.url}/api/v1/idempotency/{urllib.parse.quote(key, safe='')}"
        if action:
            path += f"/{action}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        token = os.environ.get("RETRYGUARD_TOKEN")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.headers, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = {"error": {"code": "http", "message": payload.decode(errors="replace")}}
            return e.code, e.headers, parsed
        except (urllib.error.URLError, OSError) as e:
            raise GuardError(f"retryguard at {self.url} is unreachable: {e}") from e

    @staticmethod
    def _refused(status: int, body: Any) -> GuardError:
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        code, message = error.get("code", "unknown"), error.get("message", "")
        if code == "fingerprint_mismatch":
            return FingerprintMismatch(message)
        if code == "stale_token":
            return StaleToken(message)
        return GuardError(f"{status} {code}: {message}")

    def begin(self, key: str, fingerprint: str = "", lease_seconds: int | None = None) -> Decision:
        """Takes the key's lease. Truthy decision (with a token): run the side effect.
        Falsy: done before, ``result`` holds the stored result. Raises ``GuardInProgress``
        when another run holds it, ``FingerprintMismatch`` when the key was used otherwise."""
        body: dict[str, Any] = {"fingerprint": fingerprint}
        if lease_seconds is not None:
            body["lease_seconds"] = int(lease_seconds)
        status, headers, reply = self._call("POST", key, "begin", body)
        if status == 201:
            return Decision(True, key, token=int(reply["token"]))
        if status == 200 and reply.get("state") == "completed":
            return Decision(False, key, result=reply.get("result"))
        if status == 409 and reply.get("error", {}).get("code") == "in_progress":
            retry_after = int(headers.get("Retry-After") or reply.get("retry_after_seconds") or 1)
            raise GuardInProgress(key, retry_after)
        raise self._refused(status, reply)

    def complete(self, key: str, token: int, result: Any) -> Any:
        """Stores ``result`` (JSON-serializable) for the lease ``token``; returns the stored
        result. Raises ``StaleToken`` when the lease was taken over."""
        status, _, reply = self._call("POST", key, "complete", {"token": token, "result": result})
        if status == 200:
            return reply.get("result")
        raise self._refused(status, reply)

    def release_token(self, key: str, token: int) -> None:
        """Gives the key back (only before the side effect!)."""
        status, _, reply = self._call("POST", key, "release", {"token": token})
        if status != 200:
            raise self._refused(status, reply)

    def state(self, key: str) -> dict:
        """The key's state: ``{"state": "absent" | "in_progress" | "completed", ...}``."""
        status, _, reply = self._call("GET", key)
        if status != 200:
            raise self._refused(status, reply)
        return reply

    # --- the seed's shape: should_execute / mark_success / release ------------------------

    @staticmethod
    def lease_for(job) -> int | None:
        """The lease of a job's guard: its RQ timeout (or RQ's default 180 s) plus 60 s;
        ``None`` (the server's default) without a job."""
        if job is None:
            return None
        timeout = getattr(job, "timeout", None)
        if timeout is None or int(timeout) <= 0:
            timeout = RQ_DEFAULT_TIMEOUT
        return int(timeout) + LEASE_MARGIN

    @staticmethod
    def fingerprint_for(job) -> str:
        """A job's request fingerprint: sha256 of its function and arguments."""
        if job is None:
            return ""
        what = json.dumps(
            [getattr(job, "func_name", ""), list(job.args or ()), dict(job.kwargs or {})],
            sort_keys=True,
            default=repr,
        )
        return hashlib.sha256(what.encode()).hexdigest()

    @staticmethod
    def _job_id(job) -> str:
        return getattr(job, "id", None) or "-"

    def should_execute(self, job, key: str, fingerprint: str | None = None,
                       lease_seconds: int | None = None) -> Decision:
        """``begin`` for an RQ job: the lease defaults to the job's timeout + 60 s, the
        fingerprint to a hash of its function and arguments."""
        decision = self.begin(
            key,
            self.fingerprint_for(job) if fingerprint is None else fingerprint,
            self.lease_for(job) if lease_seconds is None else lease_seconds,
        )
        if decision:
            self._held[(self._job_id(job), key)] = decision.token
        return decision

    def _token(self, job, key: str | None) -> tuple[str, int]:
        job_id = self._job_id(job)
        for (held_job, held_key), token in self._held.items():
            if held_job == job_id and (key is None or held_key == key):
                return held_key, token
        raise GuardError(f"job {job_id} holds no guard{'' if key is None else f' on {key!r}'}")

    def mark_success(self, job, result: Any, key: str | None = None) -> Any:
        """Stores the side effect's result for the key ``job`` holds."""
        key, token = self._token(job, key)
        stored = self.complete(key, token, result)
        self._held.pop((self._job_id(job), key), None)
        return stored

    def release(self, job, key: str | None = None) -> None:
        """Frees the key ``job`` holds, for a failure BEFORE the side effect."""
        key, token = self._token(job, key)
        self.release_token(key, token)
        self._held.pop((self._job_id(job), key), None)

    # --- context manager and decorator ----------------------------------------------------

    def hold(self, key: str, job=None, fingerprint: str | None = None,
             lease_seconds: int | None = None, release_on: tuple = ()) -> "Held":
        """``with guard.hold(key, job=job) as held:`` — see the module docstring. An exception
        of a type in ``release_on`` (failures known to come before the side effect) releases
        the key; any other leaves it in progress until its lease ends."""
        return Held(self, key, job, fingerprint, lease_seconds, tuple(release_on))

    def idempotent(self, key: Callable[..., str], release_on: tuple = (),
                   lease_seconds: int | None = None):
        """Decorator: runs the function at most once per ``key(*args, **kwargs)`` and stores
        its (JSON-serializable) return value, which later calls return instead."""

        def wrap(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                job = _current_job()
                with self.hold(key(*args, **kwargs), job=job, lease_seconds=lease_seconds,
                               release_on=release_on) as held:
                    if held.replayed:
                        return held.result
                    return held.complete(func(*args, **kwargs))

            return wrapper

        return wrap


class Held:
    """The context manager of ``Guard.hold``."""

    def __init__(self, guard: Guard, key: str, job, fingerprint, lease_seconds, release_on):
        self.guard, self.key, self.job = guard, key, job
        self._fingerprint = Guard.fingerprint_for(job) if fingerprint is None else fingerprint
        self._lease = Guard.lease_for(job) if lease_seconds is None else lease_seconds
        self._release_on = release_on
        self.token: int | None = None
        self.replayed = False
        self.result: Any = None
        self._done = False

    def __enter__(self) -> "Held":
        decision = self.guard.begin(self.key, self._fingerprint, self._lease)
        if decision:
            self.token = decision.token
        else:
            self.replayed, self.result, self._done = True, decision.result, True
        return self

    def complete(self, result: Any) -> Any:
        """Stores the result; returns it."""
        if self.token is None:
            raise GuardError(f"the key {self.key!r} is not held by this block")
        self.result = self.guard.complete(self.key, self.token, result)
        self._done = True
        return self.result

    def release(self) -> None:
        """Gives the key back (only before the side effect)."""
        if self.token is not None and not self._done:
            self.guard.release_token(self.key, self.token)
            self._done = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and self._release_on and issubclass(exc_type, self._release_on):
            self.release()
        # Any other exception, or leaving without complete(): the key stays in progress
        # until its lease ends (the side effect may have happened).
        return False


def _current_job():
    try:
        from rq import get_current_job
    except ImportError:  # not under RQ
        return None
    return get_current_job()
