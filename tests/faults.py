"""``nightscan worker`` with faults injected into chosen analyses: a test-only entry point.

    python -m tests.faults [--crash ID] [--hang ID] [--stubborn ID] [--delay ID=SECONDS] -- worker --queues gpu

It wraps ``workers.pipeline._run`` (the study itself, called after the claim, so the analysis is ``running``
in SQL and holds its lock) and then starts the real command line; the worker's pool processes are forked
from this process and inherit the wrapper. Production code holds no hook and reads no variable for
this: a fault can only happen in a worker started from this test module.

- ``--crash ID``: the pool process SIGKILLs itself, as the kernel's out-of-memory killer would (no
  exception, no cleanup), every time it runs analysis ID;
- ``--hang ID``: the study sleeps until the soft time limit (or a SIGKILL) stops it;
- ``--stubborn ID``: the study ignores the soft time limit, so only the hard limit stops it;
- ``--delay ID=SECONDS``: the study waits SECONDS, then runs normally.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from celery.exceptions import SoftTimeLimitExceeded

import workers.pipeline as pipeline
from db.results import AnalysisJob
from workers.context import WorkerContext


def install(crash: set[int], hang: set[int], stubborn: set[int], delay: dict[int, float]) -> None:
    """Replace the pipeline's study function by one that misbehaves on the given analyses."""
    study = pipeline._run

    def faulty(job: AnalysisJob, ctx: WorkerContext) -> str:
        if job.analysis_id in crash:
            os.kill(os.getpid(), signal.SIGKILL)
        if job.analysis_id in hang:
            time.sleep(3600)
        if job.analysis_id in stubborn:
            while True:
                with contextlib.suppress(SoftTimeLimitExceeded):
                    time.sleep(3600)
        time.sleep(delay.get(job.analysis_id, 0.0))
        return study(job, ctx)

    pipeline._run = faulty


def _delay(text: str) -> tuple[int, float]:
    analysis_id, _, seconds = text.partition("=")
    return int(analysis_id), float(seconds)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    parser.add_argument("--crash", type=int, action="append", default=[])
    parser.add_argument("--hang", type=int, action="append", default=[])
    parser.add_argument("--stubborn", type=int, action="append", default=[])
    parser.add_argument("--delay", type=_delay, action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the nightscan command line, after --")
    args = parser.parse_args(argv)
    install(set(args.crash), set(args.hang), set(args.stubborn), dict(args.delay))
    from nightscan.cli import main as nightscan

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    nightscan(command, prog_name="nightscan")


if __name__ == "__main__":
    main(sys.argv[1:])
