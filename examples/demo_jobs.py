"""The job functions of ``retryguard demo`` (``demo_jobs.<failure family>``).

``retryguard demo`` writes failed RQ jobs that name these functions, with real tracebacks of
each failure family. Once retryguard retries them, a real worker runs them, and here they
simply succeed, so the tour shows every retried job finishing:

    pip install rq==2.12.0
    PYTHONPATH=examples rq worker --burst --url redis://127.0.0.1:6379/15 demo

Only the standard library is used.
"""

from __future__ import annotations


def _succeed(family: str) -> str:
    message = f"demo_jobs.{family}: retried by retryguard, and this time it worked"
    print(message, flush=True)
    return message


def network_error() -> str:
    return _succeed("network_error")


def timeout() -> str:
    return _succeed("timeout")


def rate_limit() -> str:
    return _succeed("rate_limit")


def temporary_error() -> str:
    return _succeed("temporary_error")


def database_lock() -> str:
    return _succeed("database_lock")


def validation_error() -> str:
    return _succeed("validation_error")


def logic_error() -> str:
    return _succeed("logic_error")


def data_not_found() -> str:
    return _succeed("data_not_found")


def permission_error() -> str:
    return _succeed("permission_error")


def configuration_error() -> str:
    return _succeed("configuration_error")


def unknown() -> str:
    return _succeed("unknown")
