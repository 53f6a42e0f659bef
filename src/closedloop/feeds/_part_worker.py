"""A feed worker process: `python -m closedloop.feeds._part_worker`, started by a run that
writes its file in parts (`closedloop.feeds.parts`). It reads the run's job and then ranges
from standard input (it says it is ready before the job comes: a run may start it ahead,
`keep_workers_ready`), writes each range's rows to the file named, and answers each with its
result (or the error) on standard output, until its input ends.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO, Any

from closedloop.feeds.parts import receive_message, send_message, write_range


def main() -> None:
    # The answers go to the original standard output; anything printed goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        _serve(sys.stdin.buffer, answers)
    except BrokenPipeError:  # the run's process has ended (a worker started ahead, unused)
        return
    with contextlib.suppress(BrokenPipeError):
        answers.close()


def _serve(source: IO[bytes], answers: IO[bytes]) -> None:
    send_message(answers, ("ready", os.getpid()))
    job = receive_message(source)
    while (message := receive_message(source)) is not None:
        bounds, path = message
        reply: tuple[str, Any]
        try:
            reply = ("ok", write_range(job, bounds, Path(path)))
        except Exception as exc:  # noqa: BLE001 - every error goes back to the run
            reply = ("error", exc)
        try:
            send_message(answers, reply)
        except Exception as exc:  # noqa: BLE001 - an error that does not pickle
            send_message(answers, ("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


if __name__ == "__main__":
    main()
