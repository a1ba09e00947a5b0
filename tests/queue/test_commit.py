"""Background commits (Queue.submit, agent.queue.commit): committed in order, `done` told, closing
commits everything submitted, a bounded line, failures reported; a runner's last poll is
committed when it closes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.core.errors import QueueError
from agent.core.model import Reading
from agent.polling.runner import DeviceRunner
from agent.queue import Queue
from agent.queue.commit import GroupCommit, Write
from drivers.base import DeviceConfig


def readings(n: int, device: str = "d", start: int = 0) -> list[Reading]:
    return [Reading(device, "m", start + i, None, start + i) for i in range(n)]


def test_submitted_polls_are_committed_in_order_and_told(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    told: list[list[int]] = []
    tickets = [q.submit(readings(5, start=5 * k), lambda w: told.append(w.seqs or []))
               for k in range(50)]
    assert all(t.wait(10) for t in tickets)
    assert [t.seqs for t in tickets] == [list(range(5 * k + 1, 5 * k + 6)) for k in range(50)]
    assert sorted(told) == [t.seqs for t in tickets]
    assert [r.reading.value for r in q.peek(0, 1000)] == list(range(250))
    q.close()


def test_close_commits_everything_submitted(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    for k in range(200):
        q.submit(readings(3, start=3 * k))
    q.close()
    with pytest.raises(QueueError):
        q.submit(readings(1))
    q = Queue(tmp_path / "q.db")
    assert q.stats().depth == 600
    q.close()


def test_the_line_is_bounded_and_a_failed_commit_is_reported() -> None:
    gate = threading.Event()
    committed: list[int] = []

    def commit(group: list[Write[int]]) -> None:
        gate.wait(10)
        for w in group:
            if -1 in w.items:
                raise RuntimeError("disk on fire")
            w.seqs = list(w.items)
            committed.extend(w.items)

    gc: GroupCommit[int] = GroupCommit(commit, max_waiting=10)
    first = gc.submit([0] * 10)  # the committer takes it and waits at the gate
    blocked = threading.Thread(target=lambda: gc.submit([1] * 5))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a full line blocks the next submit"
    gate.set()
    blocked.join(10)
    errors: list[BaseException | None] = []
    bad = gc.submit([-1], lambda w: errors.append(w.error))
    assert first.wait(10) and bad.wait(10)
    assert isinstance(bad.error, RuntimeError) and bad.seqs == []
    assert errors == [bad.error]
    gc.submit([2])
    gc.close()
    assert committed == [0] * 10 + [1] * 5 + [2], "the committer goes on after a failure"


class _Counting:
    """A driver whose every poll yields 20 readings, numbered."""

    bus = None
    passive = False

    def __init__(self) -> None:
        self.config = DeviceConfig.model_validate({"name": "counter", "driver": "x",
                                                   "interval": 1})
        self.n = 0

    def open(self) -> None: ...

    def close(self) -> None: ...

    def metrics(self) -> list[tuple[str, str | None]]:
        return [("m", None)]

    def poll(self) -> list[Reading]:
        self.n += 1
        return readings(20, "counter", 20 * (self.n - 1))


def test_a_closed_runner_has_every_poll_committed(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    runner = DeviceRunner(_Counting(), q)  # type: ignore[arg-type]
    for _ in range(100):
        runner.poll_once()
    runner.close()  # waits for the last commit
    assert q.stats().depth == 2000
    assert runner.recent.queued == 2000
    q.close()
