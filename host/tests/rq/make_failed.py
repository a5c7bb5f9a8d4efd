#!/usr/bin/env python3
"""Makes failed RQ jobs the real way: RQ's own enqueue API, then a real RQ worker runs them.

    python make_failed.py --redis-url redis://127.0.0.1:PORT/0 --queue Q --count N \\
        --func jobs.fail_once --arg KEY [--arg MORE ...] [--failure-ttl S] [--retry N] \\
        [--fork] [--workers N] [--no-work] [--expect failed|stopped|finished|queued|any] [--timing]

Prints the job ids, in enqueue order, as one JSON array on stdout.

Default worker: ``rq.SimpleWorker`` (no fork per job: fast), in this process and, for large
counts, in helper processes forked from it (one per 1000 jobs, at most one per CPU; set with
``--workers``). Speed on a 2-core machine: 100 jobs ~1 s, 10,000 jobs ~45 s. ``--fork`` (alias
``--burst-worker``) runs ``rq worker --burst`` as a subprocess instead, whose work-horse forks
per job, so jobs that kill their own process (``jobs.killed_by_signal_9``) or get stopped
(``jobs.stopped_by_user``) fail the way they do in production. ``--no-work`` only enqueues.

After the worker has drained the queue every job's status must be ``--expect`` (default
``failed``; ``queued`` with ``--no-work``), else the script exits 1 naming the first job that
is not.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from rq import Queue, Retry, SimpleWorker

HERE = Path(__file__).resolve().parent
ENQUEUE_CHUNK = 2000


class QuietSimpleWorker(SimpleWorker):
    """RQ's SimpleWorker without the pub/sub command channel (stop-job, shutdown): nothing
    sends it commands here, and tearing its listener thread down costs up to a second per run.
    Jobs are run, failed and stored exactly as by SimpleWorker."""

    def subscribe(self):
        pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--func", required=True, help="dotted name, e.g. jobs.fail_once")
    p.add_argument("--arg", action="append", default=[], help="a positional string argument (repeatable)")
    p.add_argument("--failure-ttl", type=int, default=None, help="seconds; RQ's default is one year")
    p.add_argument("--retry", type=int, default=None, help="enqueue with RQ's own Retry(max=N)")
    p.add_argument("--job-id-prefix", default=None, help="ids <prefix>-<n> instead of RQ's uuid4 hex")
    p.add_argument("--fork", "--burst-worker", action="store_true", help="run `rq worker --burst` (forking)")
    p.add_argument("--workers", type=int, default=None,
                   help="in-process SimpleWorkers run in parallel (forked); default: 1 per 1000 jobs, at most CPUs")
    p.add_argument("--no-work", action="store_true", help="only enqueue")
    p.add_argument("--expect", default=None, choices=["failed", "stopped", "finished", "queued", "any"],
                   help="status every job must end in; default failed (queued with --no-work)")
    p.add_argument("--timing", action="store_true", help="print timings to stderr")
    return p.parse_args(argv)


def enqueue(conn, args) -> list[str]:
    queue = Queue(args.queue, connection=conn)
    retry = Retry(max=args.retry) if args.retry else None
    ids: list[str] = []
    for start in range(0, args.count, ENQUEUE_CHUNK):
        datas = [
            Queue.prepare_data(
                args.func,
                args=tuple(args.arg),
                failure_ttl=args.failure_ttl,
                retry=retry,
                job_id=f"{args.job_id_prefix}-{n}" if args.job_id_prefix else None,
            )
            for n in range(start, min(start + ENQUEUE_CHUNK, args.count))
        ]
        with conn.pipeline() as pipe:
            jobs = queue.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
        ids.extend(job.id for job in jobs)
    return ids


def work(conn, args):
    env_url = os.environ.setdefault("RQ_TEST_REDIS_URL", args.redis_url)
    if args.fork:
        env = dict(os.environ, RQ_TEST_REDIS_URL=env_url)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        rq = Path(sys.executable).parent / "rq"
        cmd = [str(rq)] if rq.exists() else [sys.executable, "-m", "rq.cli"]
        cmd += ["worker", "--burst", "--url", args.redis_url, "--logging_level", "CRITICAL", args.queue]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    else:
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        workers = args.workers or min(os.cpu_count() or 1, max(1, args.count // 1000))
        # Forked helpers first, each with its own connection; this process is the last worker.
        ctx = multiprocessing.get_context("fork")
        helpers = [ctx.Process(target=run_simple_worker, args=(args.redis_url, args.queue)) for _ in range(workers - 1)]
        for helper in helpers:
            helper.start()
        run_simple_worker(args.redis_url, args.queue)
        for helper in helpers:
            helper.join()
            if helper.exitcode != 0:
                sys.exit(f"make_failed: a worker process exited with {helper.exitcode}")


def run_simple_worker(redis_url: str, queue: str):
    conn = redis.Redis.from_url(redis_url)
    worker = QuietSimpleWorker([Queue(queue, connection=conn)], connection=conn)
    worker.work(burst=True, with_scheduler=False, logging_level="CRITICAL")


def check(conn, args, ids):
    expect = args.expect or ("queued" if args.no_work else "failed")
    if expect == "any":
        return
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(f"rq:job:{job_id}", "status")
        statuses = pipe.execute()
    for job_id, status in zip(ids, statuses):
        got = status.decode() if status is not None else "(no job hash)"
        if got != expect:
            sys.exit(f"make_failed: job {job_id} ({args.func}) is {got}, expected {expect}")


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    conn = redis.Redis.from_url(args.redis_url)
    t0 = time.perf_counter()
    ids = enqueue(conn, args)
    t1 = time.perf_counter()
    if not args.no_work:
        work(conn, args)
    check(conn, args, ids)
    t2 = time.perf_counter()
    if args.timing:
        print(f"make_failed: {len(ids)} x {args.func}: enqueue {t1 - t0:.2f}s, work {t2 - t1:.2f}s", file=sys.stderr)
    json.dump(ids, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
