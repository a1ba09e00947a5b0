"""`Receipt`: what the queue hands back for work its background committer still has to do.

`Queue.submit` (one poll's readings) and `Queue.ack` (acknowledged seqs to delete) return at
once; the receipt says when that work is in a committed transaction, and how it went. This is
the only committer type callers see.
"""

from __future__ import annotations

import threading

__all__ = ["Receipt"]


class Receipt:
    """Committed once `seqs` is set: the seqs written ([] if the readings were held in memory
    or failed, and for an acknowledgement); `error` says why a write failed; `count` is the
    number of readings submitted (0 for an acknowledgement)."""

    __slots__ = ("_cond", "count", "error", "seqs")

    def __init__(self, cond: threading.Condition, count: int) -> None:
        self._cond = cond
        self.count = count
        self.seqs: list[int] | None = None
        self.error: BaseException | None = None

    @classmethod
    def completed(cls) -> Receipt:
        """A receipt for work that was done at once (or that there was none of)."""
        receipt = cls(threading.Condition(threading.Lock()), 0)
        receipt.seqs = []
        return receipt

    def wait(self, timeout: float | None = None) -> bool:
        """Block until committed (or failed); False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self.seqs is not None, timeout)

    def wait_unless_stalled(self, timeout: float | None = None) -> bool:
        """Like `wait`, but False as soon as the queue's commit has been stuck for STALL s
        (agent.queue.commit): a poll thread is held back by a slow disk, never stopped by one
        that stopped answering."""
        return self.wait(timeout)
