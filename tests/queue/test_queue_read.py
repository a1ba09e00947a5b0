"""The queue's read side has its own connection (reads never wait for a commit), deletions of
acknowledged rows ride with the next commit (`ack`), and the committer gathers the polls
that arrive within a few ms into one transaction."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from agent.core.model import SEQ, Reading
from agent.queue import Queue
from agent.queue.commit import GroupCommit, Write
from agent.queue.tail import TAIL
from tests.support import wait_until


def batch(n: int, device: str = "d", start: int = 0) -> list[Reading]:
    return [Reading(device, "m", start + i, None, start + i) for i in range(n)]


def test_reads_do_not_wait_for_a_commit_stuck_on_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(path, busy_timeout=30)
    q.put(batch(5))
    shell = sqlite3.connect(path, isolation_level=None)  # a technician's sqlite3 shell
    shell.execute("BEGIN IMMEDIATE")  # holds the write lock: the next commit waits for it
    putter = threading.Thread(target=q.put, args=(batch(1, start=5),))
    putter.start()
    wait_until(lambda: q._group._committing, what="the commit to wait for the lock")
    rows = q.take(0, 100)  # while that commit waits (up to 30 s) with the write lock
    stats = q.stats()
    assert putter.is_alive(), "the read should not have waited for the commit"
    assert [r[SEQ] for r in rows] == [1, 2, 3, 4, 5] and stats.depth == 5
    shell.execute("ROLLBACK")
    putter.join(10)
    assert not putter.is_alive() and q.stats().depth == 6
    q.close()


def test_ack_deletes_with_the_next_commit_and_keeps_depth_exact(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put(batch(10))
    assert q.ack([3, 1, 2, 5, 4]).wait(10)
    assert [r[SEQ] for r in q.take(0, 100)] == [6, 7, 8, 9, 10]
    polls = [q.submit(batch(4, start=10 + 4 * k)) for k in range(5)]  # rows and acks mixed
    acks = [q.ack(range(6 + k, 7 + k)) for k in range(5)]
    assert all(t.wait(10) for t in polls + acks)
    assert [r[SEQ] for r in q.take(0, 100)] == list(range(11, 31))
    assert q.stats().depth == 20
    assert q.ack([]).wait(0), "nothing to delete: done at once"
    q.ack(range(11, 21))
    q.close()  # commits the deletion still waiting
    q = Queue(tmp_path / "q.db")
    assert [r[SEQ] for r in q.take(0, 100)] == list(range(21, 31))
    assert q.stats().depth == 10
    q.close()


def test_acks_the_database_refuses_are_kept_and_deleted_later(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(path, busy_timeout=0.05)
    q.put(batch(10))
    shell = sqlite3.connect(path, isolation_level=None)
    shell.execute("BEGIN IMMEDIATE")
    assert q.ack(range(1, 6)).wait(10)
    assert q.stats().depth == 10  # not deleted: the database was locked
    shell.execute("ROLLBACK")
    shell.close()
    assert q.put(batch(1, start=10)) == [11]  # the next commit deletes them too
    assert [r[SEQ] for r in q.take(0, 100)] == [6, 7, 8, 9, 10, 11]
    assert q.stats().depth == 6
    q.close()


def test_the_committer_gathers_writes_that_arrive_together() -> None:
    groups: list[int] = []

    def commit(group: list[Write[int]]) -> None:
        groups.append(len(group))
        for w in group:
            w.seqs = list(w.items)

    gc: GroupCommit[int] = GroupCommit(commit, gather=0.5)
    tickets = [gc.submit([k]) for k in range(10)]  # within microseconds of the first
    assert all(t.wait(10) for t in tickets)
    assert groups == [10], "ten writes inside one gather are one commit"
    late = gc.submit([10])
    gc.close()  # closing commits at once, without waiting out the gather
    assert late.seqs == [10] and groups == [10, 1]


def test_live_rows_come_from_memory_exactly_as_stored(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    values: list[object] = [1, 2.5, True, "on", None, float("nan"), 10**20]
    for k in range(30):
        q.put([Reading(f"d{k % 3}", f"m{i}", v, "u" if i % 2 else None, 1000 * k + i,
                       "good" if v is not None else "timeout")
               for i, v in enumerate(values)])
    stored = q.take(0, 1000)
    assert len(stored) == 210
    got, after = [], 0
    while rows := q.take(after, 50, live=True):  # as the forwarder does: window after window
        got += rows
        after = rows[-1][SEQ]
    assert got == stored
    assert q.take(0, 10, live=True) == stored[:10]  # before what is kept: read from the file
    q.close()


def test_kept_rows_are_bounded_and_dropped_at_an_eviction(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    for k in range(30):  # nobody takes: the uplink is down
        q.put(batch(500, start=500 * k))
    assert len(q._tail) <= 2 * TAIL
    assert q.take(14_000, 5, live=True) == q.take(14_000, 5)
    q._bounds.evict_oldest(100, "max_bytes")  # a bound reached: evicted rows must not be sent
    assert len(q._tail) == 0
    assert q.take(0, 5, live=True) == q.take(0, 5) and q.take(0, 5, live=True)[0][SEQ] == 101
    q.close()


def test_a_file_corrupted_while_running_is_set_aside_by_a_read(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(path)
    q.put(batch(2000))  # many pages of rows
    q._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the main file
    size = path.stat().st_size
    with open(path, "r+b") as f:  # a bad sector under the rows, the schema page intact
        f.seek(3 * 4096)
        f.write(b"\xde\xad" * ((size - 3 * 4096) // 2))
    assert q.take(0, 100) == []  # read -> corrupt -> moved aside -> the fresh file
    st = q.stats()
    assert len(st.moved_aside) == 1 and Path(st.moved_aside[0]).exists() and st.depth == 0
    assert q.put(batch(1))[0] > 2000, "a seq the platform may have seen is never reused"
    assert [r[SEQ] for r in q.take(0, 10)] == [q.stats().next_seq - 1]
    q.close()


def test_flush_commits_acknowledged_deletions_without_waiting(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put(batch(5))
    q._group._gather = 30.0  # the committer would sit on the deletion for 30 s
    q.ack([1, 2])
    assert q.stats().depth == 5  # not yet deleted
    q.flush()
    assert q.stats().depth == 3 and [r[SEQ] for r in q.take(0, 10)] == [3, 4, 5]
    q.close()  # closing does not wait out the gather either


def test_acks_after_close_neither_hang_nor_raise(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put(batch(3))
    q.close()
    done = threading.Event()

    def late_ack() -> None:  # a PUBACK processed while the agent stops
        assert q.ack([1, 2]).wait(0)  # deleted at once, or (closed) not at all
        done.set()

    threading.Thread(target=late_ack, daemon=True).start()
    assert done.wait(10), "ack on a closed queue hung"
    q = Queue(tmp_path / "q.db")
    assert q.stats().depth == 3  # not deleted: sent again after the restart, never lost
    q.close()
