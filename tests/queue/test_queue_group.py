"""Group commit: polls that finish together share a transaction, and each still gets its own
contiguous seqs, in one order, with nothing lost or doubled; acks stay deleted after a reopen."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.core.model import Reading
from agent.queue import Queue


def test_concurrent_puts_get_distinct_contiguous_seqs(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    inserts = 0
    real_insert = q._insert

    def counting_insert(batch: list[Reading], spans: list[tuple[int, int]]) -> int:
        nonlocal inserts
        inserts += 1
        return real_insert(batch, spans)

    q._insert = counting_insert  # type: ignore[method-assign]
    got: dict[str, list[list[int]]] = {}
    start = threading.Barrier(8)

    def device(name: str) -> None:
        start.wait()
        got[name] = [q.put([Reading(name, f"m{i}", n * 10 + i, None, n) for i in range(10)])
                     for n in range(40)]

    threads = [threading.Thread(target=device, args=(f"d{k}",)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [s for puts in got.values() for seqs in puts for s in seqs]
    assert sorted(every) == list(range(1, 8 * 40 * 10 + 1))  # none lost, none twice
    for puts in got.values():
        for seqs in puts:
            assert seqs == list(range(seqs[0], seqs[0] + 10))  # one poll, one run of seqs
    stored = q.peek(0, 10_000)
    assert [r.seq for r in stored] == list(range(1, 3201))
    for puts in got.values():  # what each put returned is what was stored under those seqs
        for n, seqs in enumerate(puts):
            by_seq = [stored[s - 1].reading for s in seqs]
            assert [r.value for r in by_seq] == [n * 10 + i for i in range(10)]
            assert len({r.device for r in by_seq}) == 1
    assert q.stats().depth == 3200
    assert inserts < 320, "polls that finished together should share commits"
    q.close()


def test_acknowledged_rows_stay_deleted_after_reopen(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put([Reading("d", "m", i, None, i) for i in range(10)])
    assert q.ack_now(range(1, 6)) == 5
    q.put([Reading("d", "m", 10, None, 10)])  # a synced commit after the relaxed ack
    q.close()
    q = Queue(tmp_path / "q.db")
    assert [r.seq for r in q.peek(0, 100)] == [6, 7, 8, 9, 10, 11]
    assert q.stats().depth == 6
    q.close()
