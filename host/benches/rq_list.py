#!/usr/bin/env python3
"""The RQ side of `cargo bench --bench retry_all`'s listing: every failed job of a queue with
its exception text, the way an RQ user does it with RQ's own Python API.

    python rq_list.py --redis-url redis://127.0.0.1:PORT/0 --queue Q

Times, in this process and after the imports, ``FailedJobRegistry(queue=...).get_job_ids()``,
``Job.fetch_many(ids, connection)`` (in pages of ``--page`` ids) and ``job.latest_result()``
for each job's exception text. Prints one JSON object on stdout: ``seconds``, ``peak_rss_kb``
(``ru_maxrss`` of this process), ``jobs`` (ids listed), ``fetched`` (jobs whose hash was
there) and ``with_exc`` (jobs whose latest result carries an exception text).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--page", type=int, default=1000, help="ids per Job.fetch_many call")
    args = p.parse_args(argv)

    conn = redis.Redis.from_url(args.redis_url)
    t0 = time.perf_counter()
    registry = FailedJobRegistry(queue=Queue(args.queue, connection=conn))
    ids = registry.get_job_ids()
    fetched = 0
    with_exc = 0
    listing = []
    for start in range(0, len(ids), args.page):
        for job in Job.fetch_many(ids[start : start + args.page], connection=conn):
            if job is None:
                continue
            fetched += 1
            result = job.latest_result()
            exc = result.exc_string if result is not None else None
            if exc:
                with_exc += 1
            # What a listing shows: id, function, when it failed, and the exception text.
            listing.append((job.id, job.func_name, job.ended_at, exc))
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump(
        {"seconds": seconds, "peak_rss_kb": peak_kb, "jobs": len(ids), "fetched": fetched, "with_exc": with_exc},
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
