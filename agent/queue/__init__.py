"""The durable store-and-forward queue: every reading lives here until the broker acknowledged it.

The face (all on `Queue`, agent.queue.store, whose docstring states the invariants; nothing
else of the package is for callers):

    Queue(path, synchronous="full", limits=Limits(), on_put=None, busy_timeout=5.0,
          check_every=1.0)
    put(readings) -> list[int]                  one poll, committed before it returns: its seqs
    submit(readings, done=None) -> Receipt      the same, committed in the background
    take(after_seq, limit, before_seq=None, *, live=False) -> list[Row]   a forwarder's window
    ack(seqs) -> Receipt                        acknowledged: deleted with the next commit
    ack_now(seqs) -> int                        acknowledged: deleted before it returns
    stats() -> QueueStats    flush()    close()    set_listener(on_put)
    peek(after_seq, limit, before_seq=None) -> list[QueuedReading]   decoded, for tools/tests

The file's layout and byte accounting are agent.queue.schema's.
"""

from agent.queue.bounds import Limits
from agent.queue.receipt import Receipt
from agent.queue.store import Queue, QueueStats

__all__ = ["Limits", "Queue", "QueueStats", "Receipt"]
