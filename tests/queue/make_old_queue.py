"""Writes the queue files of tests/queue/old_queue/: what the agent before the high-water mark
(`<path>.mark`, commit a320dbc and earlier) leaves on a gateway, for the upgrade test
(tests/queue/test_queue_disk.py::test_a_queue_written_before_the_mark_opens_and_delivers_all).

Run once, from a checkout of that code: `python -m tests.queue.make_old_queue`. It writes two
queue directories, each from a child process that uses the old `Queue`:

- `closed/`: 300 readings put, seqs 1-50 acknowledged, closed cleanly (WAL checkpointed);
- `killed/`: the same, then 200 more readings and seqs 51-60 acknowledged, then the process
  kills itself with SIGKILL: the last transactions are only in `queue.db-wal`.

Every reading's value is its seq, so the test can check each one arrives intact.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "old_queue"
CHILD = r"""
import os, signal, sys
from agent.core.model import Reading
from agent.queue import Queue

path, kill = sys.argv[1], sys.argv[2] == "kill"
q = Queue(path)
ts = 1_700_000_000_000
for first in range(1, 301, 100):
    q.put([Reading("plc", "level", float(s), "m", ts + s) for s in range(first, first + 100)])
q.ack_now(range(1, 51))
if not kill:
    q.close()
    sys.exit(0)
q.put([Reading("plc", "level", float(s), "m", ts + s) for s in range(301, 501)])
q.ack_now(range(51, 61))
os.kill(os.getpid(), signal.SIGKILL)
"""


def main() -> None:
    for name, mode in (("closed", "close"), ("killed", "kill")):
        target = HERE / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        subprocess.run([sys.executable, "-c", CHILD, str(target / "queue.db"), mode],
                       check=False)
        for extra in ("queue.db-shm", "queue.db.ballast"):  # rebuilt at open; 1 MB of nothing
            (target / extra).unlink(missing_ok=True)
        print(name, sorted(p.name for p in target.iterdir()))


if __name__ == "__main__":
    main()
