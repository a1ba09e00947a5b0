"""The queue on a disk that fails the way SD cards and their filesystems do: turned read-only
under open files, frozen (every write stalls), a WAL removed while running, the file restored
from an old copy. Real SQLite files on a real loop-mounted ext4 (tests.peers.disk), real child
processes killed with SIGKILL. Whatever happens, no reading the queue was given disappears
without being counted: written, `dropped` (with a log line saying why) or `lost` (the file
went back in time; logged at open with the seqs), and seqs never go back.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

import agent.queue.store as queue_mod
from agent.core.model import Reading, now_ms
from agent.queue import Limits, Queue
from tests.peers.disk import freeze, make_read_only, unfreeze, unmount_ext4
from tests.support import ROOT

T = TypeVar("T")
NO_LIMITS = Limits(max_bytes=0, max_age=0, min_free=0)
OLD_QUEUES = Path(__file__).resolve().parent / "old_queue"


def poll(n: int, device: str = "d", first: int = 0) -> list[Reading]:
    """n readings whose values count up from `first` (so order and integrity can be checked)."""
    return [Reading(device, "level", float(first + i), "m", 1_700_000_000_000 + first + i)
            for i in range(n)]


def values(q: Queue) -> list[float]:
    return [float(r.reading.value) for r in q.peek(0, 10**9)]  # type: ignore[arg-type]


def timed(fn: Callable[[], T], limit: float) -> tuple[T, float]:
    """Run `fn` on a thread; its result and how long it took, failing if it takes over `limit`
    s (the thread is left blocked: the fixture's unfreeze releases it)."""
    out: list[T] = []
    t0 = time.monotonic()
    th = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    th.start()
    th.join(limit)
    if not out:
        pytest.fail(f"blocked for more than {limit} s")
    return out[0], time.monotonic() - t0


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# a read-only filesystem
def test_a_read_only_disk_holds_readings_then_counts_them_dropped_at_close(ext4: Path) -> None:
    q = Queue(ext4 / "q.db", limits=NO_LIMITS)
    q.put(poll(10))
    make_read_only(ext4)
    with structlog.testing.capture_logs() as logs:
        for k in range(3):
            assert q.put(poll(100, first=10 + 100 * k)) == []
        st = q.stats()
        assert (st.depth, st.pending, st.dropped) == (10, 300, 0), "held in memory, retried"
        q.close()  # never raises: what it cannot write is counted
    st = q.stats()
    assert (st.depth, st.pending, st.dropped) == (10, 0, 300)
    failed = events(logs, "queue write failed, holding readings in memory")
    assert failed and failed[0]["kind"] == "read-only file system"
    (dropped,) = events(logs, "queue readings dropped")
    assert dropped["count"] == 300 and dropped["cause"] == "read-only file system"
    assert dropped["saved"] is False, "the count could not go into the file: said so"


def test_a_read_only_disk_counts_what_overflows_the_memory_buffer(
        ext4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_mod, "MAX_PENDING", 250)
    q = Queue(ext4 / "q.db", limits=NO_LIMITS)
    q.put(poll(10))
    make_read_only(ext4)
    with structlog.testing.capture_logs() as logs:
        for k in range(4):
            q.submit(poll(100, first=10 + 100 * k)).wait(10)
        st = q.stats()
        assert (st.pending, st.dropped) == (250, 150), "past the bound: counted while running"
        first = events(logs, "queue readings dropped")
        assert first and first[0]["cause"] == "read-only file system"
        q.close()
    assert q.stats().dropped == 400
    assert sum(e["count"] for e in events(logs, "queue readings dropped")) == 400


# a frozen (stalled) filesystem
def test_a_frozen_disk_blocks_neither_submit_nor_stats(ext4: Path) -> None:
    q = Queue(ext4 / "q.db", limits=NO_LIMITS)
    q.put(poll(10))
    receipts, slowest, n = [], 0.0, 0
    freeze(ext4)  # right after a commit: reading it needs a write to the WAL index (-shm)
    try:
        st, stats_took = timed(q.stats, 10)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:  # a device polled every 10 ms, 100 points a poll
            receipt, took = timed(lambda k=n: q.submit(poll(100, first=10 + 100 * k)), 10)
            receipts.append(receipt)
            slowest, n = max(slowest, took), n + 1
            time.sleep(0.01)
    finally:
        unfreeze(ext4)
    assert slowest < 1.6, f"a submit waited {slowest:.1f} s for the frozen disk"
    assert stats_took < 1.6, f"stats() waited {stats_took:.1f} s for the frozen disk"
    assert st.depth == 10, "the last known counters"
    q.flush()
    assert all(r.wait(10) and r.error is None for r in receipts)
    assert values(q) == [float(v) for v in range(10 + 100 * n)], "written in order, intact"
    assert q.stats().dropped == 0
    q.close()


def test_a_frozen_disk_counts_what_overflows_the_memory_buffer(
        ext4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_mod, "MAX_PENDING", 2_000)
    q = Queue(ext4 / "q.db", limits=NO_LIMITS)
    q.put(poll(10))
    receipts = []
    with structlog.testing.capture_logs() as logs:
        freeze(ext4)
        try:
            for k in range(40):
                receipts.append(timed(lambda k=k: q.submit(poll(100, first=10 + 100 * k)),
                                      10)[0])
                time.sleep(0.05)
            st, _ = timed(q.stats, 10)
        finally:
            unfreeze(ext4)
        q.flush()
    written = sum(len(r.seqs or []) for r in receipts)
    assert st.dropped > 0 and written + st.dropped == 4_000, "every reading written or counted"
    assert written >= 1_000, "the memory buffer held polls while the disk was frozen"
    drop = events(logs, "queue readings dropped")
    assert drop and "not responding" in drop[0]["cause"]
    assert q.stats().dropped == st.dropped
    q.close()


# a queue file that went back in time
CHILD = r"""
import os, signal, sys
from agent.core.model import Reading, now_ms
from agent.queue import Queue, Limits

path = sys.argv[1]
q = Queue(path, limits=Limits(0, 0, 0))
poll = lambda first, n: [Reading("d", "level", float(s), "m", s) for s in range(first, first + n)]
q.put(poll(301, 200))                       # seqs 301-500
q.stats()                                   # the reader is open too, as in a running agent
os.unlink(path + "-wal")                    # someone removes the WAL while the agent runs
q.put(poll(501, 100))                       # seqs 501-600, committed into the removed WAL
q.ack_now(range(101, 121))
print(q.stats().next_seq, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_removed_wal_is_reported_as_lost_and_seqs_continue_above(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(path, limits=NO_LIMITS)
    for first in (1, 101, 201):
        q.put(poll(100, first=first))
    q.ack_now(range(1, 101))
    q.close()  # checkpointed: the file holds seqs 101-300, next_seq 301
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == ["601"]
    with structlog.testing.capture_logs() as logs:
        q = Queue(path, limits=NO_LIMITS)
    st = q.stats()
    assert st.lost == 300, "seqs 301-600 were committed and are gone"
    (gone,) = events(logs, "queue file went back: committed readings lost")
    assert (gone["seqs_from"], gone["seqs_to"], gone["at_most"]) == (301, 600, 300)
    assert values(q) == [float(v) for v in range(101, 301)], "what the file holds is kept"
    assert q.put(poll(1)) == [601], "seqs continue above every seq issued"
    q.close()
    with structlog.testing.capture_logs() as logs:
        q = Queue(path, limits=NO_LIMITS)
    assert q.stats().lost == 300, "counted once, persisted"
    assert not events(logs, "queue file went back: committed readings lost")
    q.close()


def test_a_file_restored_from_an_old_copy_is_a_counted_loss(tmp_path: Path) -> None:
    path, backup = tmp_path / "q.db", tmp_path / "backup.db"
    q = Queue(path, limits=NO_LIMITS)
    q.put(poll(100))  # seqs 1-100, from 2023
    q.close()
    shutil.copy(path, backup)
    q = Queue(path, limits=Limits(max_bytes=0, max_age=3600, min_free=0), check_every=0)
    assert q.stats().evicted == 100, "too old for max_age: evicted at open"
    assert q.put([Reading("d", "level", 1.0, "m", now_ms())] * 50) == list(range(101, 151))
    q.ack_now(range(101, 111))  # 40 of them still to send
    q.close()
    shutil.copy(backup, path)  # a technician restores last week's copy
    with structlog.testing.capture_logs() as logs:
        q = Queue(path, limits=NO_LIMITS)
    st = q.stats()
    (gone,) = events(logs, "queue file went back: committed readings lost")
    assert (gone["seqs_from"], gone["seqs_to"], gone["at_most"]) == (101, 150, 40)
    assert st.lost == 40 and st.depth == 100, "the copy's readings are sent (again)"
    assert st.evicted == 100, "the counters do not go back with the file"
    assert q.put(poll(1)) == [151]
    q.close()


def test_a_removed_queue_file_is_a_counted_loss(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = Queue(path, limits=NO_LIMITS)
    q.put(poll(100))
    q.ack_now(range(1, 41))
    q.close()
    path.unlink()
    with structlog.testing.capture_logs() as logs:
        q = Queue(path, limits=NO_LIMITS)
    (gone,) = events(logs, "queue file went back: committed readings lost")
    assert gone["at_most"] == 60 and gone["seqs_to"] == 100
    assert q.stats().lost == 60
    assert q.put(poll(1))[0] > 100
    q.close()


KILLER = r"""
import os, random, signal, sys, threading
from agent.core.model import Reading, now_ms
from agent.queue import Queue

q = Queue(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
threading.Timer(rng.uniform(0.05, 0.4), lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
while True:
    seqs = q.put([Reading("d", "m", 1.0, None, 1)] * rng.randint(1, 300))
    print(seqs[-1], flush=True)
    if rng.random() < 0.5:
        q.ack(seqs[: len(seqs) // 2])
"""


def test_kill_9_never_reads_as_a_file_that_went_back(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    for i in range(6):
        child = subprocess.run([sys.executable, "-c", KILLER, str(path), str(i)], cwd=ROOT,
                               capture_output=True, text=True, check=False)
        assert child.returncode == -signal.SIGKILL, child.stderr
        printed = [int(s) for s in child.stdout.split()]
        with structlog.testing.capture_logs() as logs:
            q = Queue(path)
        st = q.stats()
        assert st.lost == 0 and not events(logs, "queue file went back: committed readings lost")
        assert not printed or st.next_seq > printed[-1], "every committed seq is still issued"
        q.close()


# upgrade: files the code before the mark wrote
@pytest.mark.parametrize("left", ["closed", "killed"])
def test_a_queue_written_before_the_mark_opens_and_delivers_all(tmp_path: Path,
                                                                left: str) -> None:
    """tests/queue/old_queue/ holds what the previous code left (tests/queue/make_old_queue.py):
    closed cleanly, or killed with its last transactions only in the WAL."""
    shutil.copytree(OLD_QUEUES / left, tmp_path / "q")
    path = tmp_path / "q" / "queue.db"
    assert not path.with_name("queue.db.mark").exists()
    with structlog.testing.capture_logs() as logs:
        q = Queue(path)
    last = {"closed": 300, "killed": 500}[left]
    first = {"closed": 51, "killed": 61}[left]
    st = q.stats()
    assert (st.depth, st.lost, st.next_seq) == (last - first + 1, 0, last + 1)
    assert not [e for e in logs if e.get("log_level") in ("warning", "error")]
    rows = q.peek(0, 10**6)
    assert [r.seq for r in rows] == list(range(first, last + 1))
    assert all(r.reading.value == float(r.seq) for r in rows), "every reading intact"
    assert q.put(poll(1)) == [last + 1]
    q.ack_now(range(first, last + 2))
    q.close()
    q = Queue(path)
    assert (q.stats().depth, q.stats().lost) == (0, 0)
    assert q.put(poll(1)) == [last + 2]
    q.close()


def test_a_stop_on_a_read_only_disk_keeps_the_queue_file_usable(ext4: Path) -> None:
    """After the filesystem is repaired (here: remounted), the queue opens and everything that
    was committed before it turned read-only is there."""
    q = Queue(ext4 / "q.db", limits=NO_LIMITS)
    q.put(poll(50))
    make_read_only(ext4)
    q.put(poll(10, first=50))
    q.close()
    image = ext4.parent / "disk.img"
    unmount_ext4(ext4)
    subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, check=False)
    mount = subprocess.run(["mount", "-o", "loop", str(image), str(ext4)], check=False)
    assert mount.returncode == 0
    q = Queue(ext4 / "q.db", limits=NO_LIMITS)
    assert values(q) == [float(v) for v in range(50)]
    assert q.stats().lost == 0
    q.close()
