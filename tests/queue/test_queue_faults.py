"""The queue under pressure: bounds, a full disk, a corrupt file, a lock held by someone else.

A real SQLite file throughout; the full disk is a real (tiny) tmpfs, and SQLite's own page
limit where a mount is not needed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import agent.queue.bounds as bounds_mod
import agent.queue.store as queue_mod
from agent.core.model import Reading, now_ms
from agent.queue import Limits, Queue
from tests.support import wait_until


def batch(n: int, ts: int | None = None, device: str = "d") -> list[Reading]:
    t = now_ms() if ts is None else ts
    return [Reading(device, "metric_with_a_longish_name", i * 0.5, "unit", t) for i in range(n)]


def seqs(q: Queue) -> list[int]:
    return [r.seq for r in q.peek(0, 10**9)]


def test_max_bytes_evicts_oldest_first_and_counts_it(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db", limits=Limits(max_bytes=300_000, min_free=0), check_every=0)
    for _ in range(100):
        q.put(batch(100))
    st = q.stats()
    assert st.bytes <= 300_000
    assert st.evicted > 0
    assert st.evicted + st.depth == 10_000, "every reading is either queued or counted evicted"
    left = seqs(q)
    assert left == list(range(10_001 - len(left), 10_001)), "the oldest go first"
    q.close()
    assert Queue(tmp_path / "q.db", limits=Limits(0, 0, 0)).stats().evicted == st.evicted


def test_max_age_evicts_only_old_readings(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db", limits=Limits(max_bytes=0, max_age=3600, min_free=0),
              check_every=0)
    q.put(batch(50, ts=now_ms() - 7200_000))  # two hours old
    q.put(batch(20))
    st = q.stats()
    assert (st.depth, st.evicted) == (20, 50)
    assert seqs(q) == list(range(51, 71))


def test_sqlite_full_evicts_and_polling_goes_on(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db", limits=Limits(0, 0, 0))
    q._db.execute("PRAGMA max_page_count=60")  # the database cannot grow past ~240 kB
    written = 0
    for _ in range(300):
        written += len(q.put(batch(50)))
    st = q.stats()
    assert written == 15_000, "every put was accepted"
    assert st.pending == 0 and st.dropped == 0
    assert st.evicted > 0 and st.evicted + st.depth == 15_000
    q._db.execute("PRAGMA max_page_count=1000000")  # space returns
    q.put(batch(10))
    assert q.stats().depth == st.depth + 10


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 5 MB filesystem (tmpfs): needs root, as CI and the dev machines run."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (run the tests as root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_full_disk_evicts_then_recovers(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    q = Queue(tiny_fs / "q.db", limits=Limits(max_bytes=0, max_age=0, min_free=0))
    q.put(batch(1000))
    free = os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize
    filler.write_bytes(b"\0" * (free - 20_000))  # someone else fills the disk
    accepted = sum(len(q.put(batch(200))) for _ in range(100))
    st = q.stats()
    assert accepted + st.pending + st.dropped == 20_000, "no reading vanishes uncounted"
    assert st.evicted > 0, "room was made by evicting the oldest"
    filler.unlink()  # space returns
    q.put(batch(10))
    after = q.stats()
    assert after.pending == 0
    assert after.depth + after.evicted + after.dropped == 21_010
    q.close()


def test_min_free_reserve_is_kept(tiny_fs: Path) -> None:
    q = Queue(tiny_fs / "q.db", limits=Limits(max_bytes=0, max_age=0, min_free=2_500_000),
              check_every=0)
    for _ in range(1000):  # until the reserve is reached (about 2.5 MB of readings)
        q.put(batch(100))
        if q.stats().evicted:
            break
    for _ in range(50):  # and well past it
        q.put(batch(100))
    st = q.stats()
    assert st.evicted > 0 and st.dropped == 0 and st.pending == 0
    usage = os.statvfs(tiny_fs)
    assert usage.f_bavail * usage.f_frsize >= 2_000_000  # the reserve held (within one step)


def test_corrupt_file_is_moved_aside_and_seqs_do_not_go_back(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(path)
    q.put(batch(10))
    q.close()
    with open(path, "r+b") as f:  # clobber the header: "file is not a database"
        f.write(b"this is not sqlite" * 10)
    q = Queue(path)
    st = q.stats()
    assert len(st.moved_aside) == 1 and Path(st.moved_aside[0]).exists()
    assert ".corrupt-" in st.moved_aside[0]
    assert st.depth == 0
    new = q.put(batch(1))
    assert new[0] > 10, "a seq the platform already saw must never be reused"
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_garbage_file_at_start_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(os.urandom(8192))
    q = Queue(path)
    assert q.put(batch(3)) == [1, 2, 3]
    assert q.stats().moved_aside


def test_locked_database_holds_readings_then_writes_them_in_order(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(path, busy_timeout=0.1)
    q.put(batch(2))
    shell = sqlite3.connect(path, isolation_level=None)  # a technician's sqlite3 shell
    shell.execute("BEGIN EXCLUSIVE")
    assert q.put(batch(3, device="held")) == []
    assert q.stats().pending == 3
    shell.execute("ROLLBACK")
    shell.close()
    assert q.put(batch(1, device="next")) == [3, 4, 5, 6]
    devices = [r.reading.device for r in q.peek(0, 100)]
    assert devices == ["d", "d", "held", "held", "held", "next"]
    assert q.stats().pending == 0


def test_memory_buffer_is_bounded_and_overflow_counted(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_mod, "MAX_PENDING", 5)
    path = tmp_path / "q.db"
    q = Queue(path, busy_timeout=0.05)
    shell = sqlite3.connect(path, isolation_level=None)
    shell.execute("BEGIN EXCLUSIVE")
    for _ in range(4):
        q.put(batch(2))
    assert q.stats().pending == 5
    shell.execute("ROLLBACK")
    q.put([])  # nothing new: the held readings are still written
    q.put(batch(1))
    st = q.stats()
    assert (st.depth, st.pending, st.dropped) == (6, 0, 3)


def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    from agent.core.errors import QueueError

    (tmp_path / "file").write_text("x")
    with pytest.raises(QueueError, match="cannot open queue"):
        Queue(tmp_path / "file" / "q.db")


def test_synchronous_full_by_default_normal_on_request(tmp_path: Path) -> None:
    full = Queue(tmp_path / "a.db")
    normal = Queue(tmp_path / "b.db", synchronous="normal")
    assert full._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert normal._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert full._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_eviction_episode_is_logged_once_then_its_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounds_mod, "EVICTION_QUIET", 0.3)
    q = Queue(tmp_path / "q.db", limits=Limits(max_bytes=200_000, min_free=0), check_every=0)
    with structlog.testing.capture_logs() as logs:
        for _ in range(60):  # held at its bound: evicting every few puts
            q.put(batch(100))
        assert q.stats().evicted > 0
        q.limits = Limits(max_bytes=0, min_free=0)  # room again (as after a config change)

        def ended() -> bool:
            q.put(batch(1))
            return any(e["event"] == "queue within bounds" for e in logs)

        wait_until(ended, what="the episode to end after a quiet spell")
    events = [e["event"] for e in logs]
    assert events.count("queue full, evicting oldest readings") == 1
    assert events.count("queue within bounds") == 1
