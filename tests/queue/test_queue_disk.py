"""The queue on a disk that fails the way SD cards and their filesystems do: turned read-only
under open files, frozen (every write stalls), a WAL removed while running, the file restored
from an old copy. Real SQLite files on a real loop-mounted ext4 (tests.peers.disk), real child
processes killed with SIGKILL. Whatever happens, no reading the queue was given disappears
without being counted: written, `dropped` (with a log line saying why) or `lost` (the file
went back in time; logged at open with the seqs), and seqs never go back.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog

import agent.queue.store as queue_mod
from agent.core.model import Reading
from agent.queue import Limits, Queue
from tests.peers.disk import freeze, make_read_only, mount_ext4, unfreeze, unmount_ext4

T = TypeVar("T")
NO_LIMITS = Limits(max_bytes=0, max_age=0, min_free=0)
OLD_QUEUES = Path(__file__).resolve().parent / "old_queue"


def poll(n: int, device: str = "d", first: int = 0) -> list[Reading]:
    """n readings whose values count up from `first` (so order and integrity can be checked)."""
    return [Reading(device, "level", float(first + i), "m", 1_700_000_000_000 + first + i)
            for i in range(n)]


def values(q: Queue) -> list[float]:
    return [float(r.reading.value) for r in q.peek(0, 10**9)]  # type: ignore[arg-type]


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A 32 MB ext4 on a loop device (errors=remount-ro), unmounted (and thawed) afterwards."""
    mnt = tmp_path / "disk"
    mount_ext4(tmp_path / "disk.img", mnt)
    try:
        yield mnt
    finally:
        unmount_ext4(mnt)


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
        _, stats_took = timed(q.stats, 10)
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
    q.close()
