"""A feed worker process: `python -m closedloop.feeds._part_worker`, started by a run that
writes its file in parts (`closedloop.feeds.parts`). It reads the run's job and then ranges
from standard input (it says it is ready before the job comes: a run may start it ahead,
`keep_workers_ready`), writes each range's rows to the file named, and answers each with its
result (or the error) on standard output, until its input ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from closedloop.feeds.parts import receive_message, send_message, write_range


def main() -> None:
    source = sys.stdin.buffer
    # The answers go to the original standard output; anything printed goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
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
    answers.close()


if __name__ == "__main__":
    main()
