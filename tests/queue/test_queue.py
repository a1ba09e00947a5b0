"""The queue's invariants (see the top of agent/queue/__init__.py), against a real SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.core.model import Reading
from agent.queue import Queue


def readings(n: int, device: str = "d1", start_ts: int = 1_700_000_000_000) -> list[Reading]:
    return [Reading(device, f"m{i % 3}", i * 1.5, "u", start_ts + i) for i in range(n)]


def test_put_assigns_consecutive_seqs_in_one_transaction(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    assert q.put(readings(3)) == [1, 2, 3]
    assert q.put(readings(2)) == [4, 5]
    assert q.stats().depth == 5 and q.stats().next_seq == 6
    q.close()


def test_values_round_trip_with_their_types(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    values = [True, 0, 7, -3.25, "running", None]
    q.put([Reading("d", f"m{i}", v, None, 1, "good" if v is not None else "timeout")
           for i, v in enumerate(values)])
    got = [r.reading.value for r in q.peek(0, 100)]
    assert got == values
    assert [type(v) for v in got] == [type(v) for v in values]


def test_seq_never_goes_back_after_emptying_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(path)
    seqs = q.put(readings(10))
    assert q.ack_now(seqs) == 10
    assert q.stats().depth == 0
    q.close()
    q = Queue(path)
    assert q.put(readings(1)) == [11]
    q.close()


def test_take_reads_in_order_and_deletes_nothing(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put(readings(5, "a"))
    q.put(readings(5, "b"))
    first = q.peek(0, 4)
    assert [r.seq for r in first] == [1, 2, 3, 4]
    assert [r.seq for r in q.peek(4, 100)] == [5, 6, 7, 8, 9, 10]
    assert q.stats().depth == 10


def test_ack_deletes_exactly_the_acknowledged_rows(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put(readings(6))
    assert q.ack_now([2, 4, 99]) == 2  # 99 was never queued: nothing else is touched
    assert [r.seq for r in q.peek(0, 100)] == [1, 3, 5, 6]
    assert q.ack_now([]) == 0


def test_oldest_timestamp_is_the_first_queued(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    assert q.stats().oldest_ts is None
    q.put(readings(3, start_ts=5000))
    assert q.stats().oldest_ts == 5000


def test_listener_is_called_after_commit(tmp_path: Path) -> None:
    calls: list[int] = []
    q = Queue(tmp_path / "q.db")
    q.set_listener(lambda: calls.append(q.stats().depth))
    q.put(readings(2))
    assert calls == [2]


_CRASHER = """
import os, signal, sys
from agent.core.model import Reading
from agent.queue import Queue
q = Queue(sys.argv[1])
for i in range(int(sys.argv[2])):
    q.put([Reading("d", "m", i, None, i)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_committed_readings_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    proc = subprocess.run([sys.executable, "-c", _CRASHER, str(path), "50"], check=False)
    assert proc.returncode == -signal.SIGKILL
    q = Queue(path)
    rows = q.peek(0, 1000)
    assert [r.seq for r in rows] == list(range(1, 51))
    assert [r.reading.value for r in rows] == list(range(50))
    assert q.put(readings(1)) == [51]
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_unopenable_path_is_a_queue_error(tmp_path: Path) -> None:
    from agent.core.errors import QueueError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(QueueError, match="cannot open queue"):
        Queue(blocker / "sub" / "q.db")
    assert os.path.exists(blocker)
