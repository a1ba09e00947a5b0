"""A stateful property test of the queue against a plain-Python model, with crash/reopen steps.

The model is a dict seq -> reading and the next seq. Hypothesis drives random sequences of
puts, takes, acks (of arbitrary, possibly unknown seqs), reopen-without-close (a crash) and
evictions through a small max_bytes, and checks after every step that the queue and the model
agree: the same rows in the same order, seqs never reused, every missing row counted.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agent.core.model import Reading
from agent.queue import Limits, Queue

values = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
readings = st.lists(
    st.builds(Reading, device=st.sampled_from(["a", "b", "c"]), metric=st.just("m"),
              value=values, unit=st.sampled_from([None, "NTU"]),
              ts=st.integers(0, 2**41), quality=st.sampled_from(["good", "timeout"])),
    max_size=80)


class QueueModel(RuleBasedStateMachine):
    @initialize(tight=st.booleans())
    def open(self, tight: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qmodel-"))
        self.limits = Limits(max_bytes=28_000 if tight else 0, max_age=0, min_free=0)
        self.q = Queue(self.dir / "q.db", limits=self.limits, check_every=0)
        self.model: dict[int, Reading] = {}
        self.next_seq = 1
        self.evicted: set[int] = set()

    @rule(batch=readings)
    def put(self, batch: list[Reading]) -> None:
        got = self.q.put(batch)
        assert got == list(range(self.next_seq, self.next_seq + len(batch)))
        for seq, r in zip(got, batch, strict=True):
            self.model[seq] = r
        self.next_seq += len(batch)
        self._sync_evictions()

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        known = sorted(self.model)
        chosen = data.draw(st.lists(st.sampled_from(known), unique=True) if known else st.just([]))
        unknown = data.draw(st.lists(st.integers(-5, self.next_seq + 5), max_size=3))
        deleted = self.q.ack_now(chosen + [u for u in unknown if u not in self.model])
        assert deleted == len(chosen)
        for s in chosen:
            del self.model[s]

    @rule(after=st.integers(0, 400), limit=st.integers(1, 50))
    def take(self, after: int, limit: int) -> None:
        got = self.q.peek(after, limit)
        expected = [s for s in sorted(self.model) if s > after][:limit]
        assert [r.seq for r in got] == expected
        for r in got:
            assert r.reading == self.model[r.seq]

    @rule()
    def crash_and_reopen(self) -> None:
        self.q = Queue(self.dir / "q.db", limits=self.limits, check_every=0)  # old one abandoned
        self._sync_evictions()

    def _sync_evictions(self) -> None:
        """Rows the queue evicted must be the model's oldest; drop them from the model."""
        present = {r.seq for r in self.q.peek(0, 10**9)}
        gone = sorted(set(self.model) - present)
        if gone:
            assert self.limits.max_bytes, "without bounds nothing may vanish"
            assert gone == sorted(self.model)[: len(gone)], "eviction takes the oldest first"
            for s in gone:
                del self.model[s]
            self.evicted.update(gone)

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "q"):
            return
        st_ = self.q.stats()
        assert st_.depth == len(self.model)
        assert st_.next_seq == self.next_seq
        assert st_.evicted == len(self.evicted), "every eviction is counted, across reopen"

    def teardown(self) -> None:
        if hasattr(self, "q"):
            self.q.close()
            shutil.rmtree(self.dir, ignore_errors=True)


QueueModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_queue_matches_model = QueueModel.TestCase
