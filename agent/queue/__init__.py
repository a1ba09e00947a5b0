"""The durable store-and-forward queue: every reading lives here until the broker acknowledged it.

The face (all on `Queue`, agent.queue.store; nothing else of the package is for callers):

    Queue(path, synchronous="full", limits=Limits(), on_put=None, busy_timeout=5.0,
          check_every=1.0)
    put(readings) -> list[int]                  one poll, committed before it returns: its seqs
    submit(readings, done=None) -> Receipt      the same, committed in the background
    take(after_seq, limit, before_seq=None, *, live=False) -> list[Row]   a forwarder's window
    ack(seqs) -> Receipt                        acknowledged: deleted with the next commit
    ack_now(seqs) -> int                        acknowledged: deleted before it returns
    discard(seqs, why) -> int                   undeliverable: deleted, counted as dropped
    stats() -> QueueStats    flush()    close()    set_listener(on_put)
    Receipt.wait(timeout)    Receipt.wait_unless_stalled(timeout)   (a poll's pacing)
    peek(after_seq, limit, before_seq=None) -> list[QueuedReading]   decoded, for tools/tests

The file's layout and byte accounting are agent.queue.schema's.

Invariants (each names the tests that check it):

1. Durable on commit. `put()` writes one poll's readings in one transaction (WAL), shared with
   the other polls that finished meanwhile (group commit: one fsync for all); once it returns
   they survive a crash, and with `synchronous=full` (the default) a power cut. `normal`
   writes the SD card less but may lose the last transactions on a power cut. `submit()` is
   `put()` committed by a background thread, which lets the polls submitted within GATHER
   (5 ms) of each other share a transaction: the poll thread does not wait for the disk;
   `close()` commits what was submitted. Deletes after an acknowledgement do not wait for the
   disk: `ack()` (the forwarder's) rides in the committer's next transaction, `ack_now()`
   commits without a sync of its own; a power cut before the next synced commit can only
   bring acknowledged rows back (sent again: a duplicate, never a loss).
   Tests: tests/queue/test_queue.py::test_committed_readings_survive_kill_9,
   tests/queue/test_queue_group.py::test_concurrent_puts_get_distinct_contiguous_seqs,
   tests/queue/test_commit.py::test_submitted_polls_are_committed_in_order_and_told,
   tests/queue/test_commit.py::test_close_commits_everything_submitted,
   tests/queue/test_queue_read.py::test_the_committer_gathers_writes_that_arrive_together,
   tests/queue/test_queue_faults.py::test_synchronous_full_by_default_normal_on_request,
   tests/e2e/test_durability.py::test_kill_9_at_random_moments_loses_nothing.
2. One seq per reading, never reused. The seq comes from `meta.next_seq` in the same transaction
   as the rows, so it grows by exactly one per reading across restarts. A floor kept beside the
   database (`<path>.seq`, written ahead in steps of SEQ_RESERVE) keeps seqs from going back
   even when a corrupt database had to be replaced: the platform then sees an honest gap. A
   file that went back in time (invariant 7) continues above the high-water mark.
   Tests: tests/queue/test_queue.py::test_put_assigns_consecutive_seqs_in_one_transaction,
   tests/queue/test_queue.py::test_seq_never_goes_back_after_emptying_and_reopening,
   tests/queue/test_queue_faults.py::test_corrupt_file_is_moved_aside_and_seqs_do_not_go_back,
   tests/queue/test_queue_disk.py::test_a_removed_wal_is_reported_as_lost_and_seqs_continue_above,
   tests/queue/test_queue_model.py::test_queue_matches_model.
3. Deleted only on acknowledgement or eviction. Rows leave through `ack`/`ack_now` (the
   broker acknowledged them) or through eviction (agent.queue.bounds), which is counted in
   `meta.evicted`, logged once per episode, and reported in `stats()`, or through `discard`
   (a reading larger than any message the broker takes: counted as dropped, logged). Nothing
   else deletes.
   Tests: tests/queue/test_queue.py::test_ack_deletes_exactly_the_acknowledged_rows,
   tests/queue/test_queue.py::test_take_reads_in_order_and_deletes_nothing,
   tests/queue/test_queue_group.py::test_acknowledged_rows_stay_deleted_after_reopen,
   tests/queue/test_queue_read.py::test_ack_deletes_with_the_next_commit_and_keeps_depth_exact,
   tests/queue/test_queue_read.py::test_acks_the_database_refuses_are_kept_and_deleted_later,
   tests/queue/test_queue_read.py::test_acks_after_close_neither_hang_nor_raise,
   tests/queue/test_queue_faults.py::test_an_eviction_episode_is_logged_once_then_its_end,
   tests/queue/test_queue_model.py::test_queue_matches_model,
   tests/uplink/test_forwarder.py::test_a_reading_larger_than_the_broker_takes_is_dropped_and_counted.
4. Bounded. Used bytes stay under `max_bytes`, rows under `max_age`, and the disk keeps
   `min_free` bytes free; past a bound the oldest rows are evicted first. A full disk
   (SQLITE_FULL) evicts and retries; a locked database (a technician's sqlite3 shell) is waited
   for `busy_timeout`. Readings that still cannot be written (locked, a read-only filesystem)
   wait in a bounded memory buffer (`MAX_PENDING`) and are written first by the next commit;
   the oldest past the bound are counted as dropped and logged with the cause in words.
   A disk that stopped answering (a commit running for STALL, 1 s) holds back neither
   `submit()` nor `Receipt.wait_unless_stalled()`: polls wait in that buffer (counted with
   the held ones; a poll past it is dropped, counted, logged) and are committed in order when
   the disk is back.
   Tests: tests/queue/test_queue_faults.py::test_max_bytes_evicts_oldest_first_and_counts_it,
   tests/queue/test_queue_faults.py::test_max_age_evicts_only_old_readings,
   tests/queue/test_queue_faults.py::test_sqlite_full_evicts_and_polling_goes_on,
   tests/queue/test_queue_faults.py::test_real_full_disk_evicts_then_recovers,
   tests/queue/test_queue_faults.py::test_min_free_reserve_is_kept,
   tests/queue/test_queue_faults.py::test_locked_database_holds_readings_then_writes_them_in_order,
   tests/queue/test_queue_faults.py::test_memory_buffer_is_bounded_and_overflow_counted,
   tests/queue/test_queue_disk.py::test_a_read_only_disk_counts_what_overflows_the_memory_buffer,
   tests/queue/test_queue_disk.py::test_a_frozen_disk_blocks_neither_submit_nor_stats,
   tests/queue/test_queue_disk.py::test_a_frozen_disk_counts_what_overflows_the_memory_buffer,
   tests/e2e/test_disk_faults.py::test_a_frozen_disk_stops_neither_polling_nor_the_status_page.
5. Ordered, and memory does not grow with the backlog. `take()` reads a bounded window in
   seq order through the primary key; the live stream (`take(live=True)`) is served from the
   rows of the last commits kept in memory, exactly as stored (at most 2 x TAIL, forgotten at
   any eviction or recovery); counters live in `meta`; nothing scans the whole backlog on a
   hot path. A live stream that has taken every kept row is told so without reading the file.
   `stats()` waits at most STATS_WAIT (1 s) for the file: a read a frozen disk holds up is
   answered with the last counters known.
   Tests: tests/queue/test_queue.py::test_take_reads_in_order_and_deletes_nothing,
   tests/queue/test_queue_read.py::test_live_rows_come_from_memory_exactly_as_stored,
   tests/queue/test_queue_read.py::test_kept_rows_are_bounded_and_dropped_at_an_eviction,
   tests/queue/test_queue_read.py::test_reads_do_not_wait_for_a_commit_stuck_on_a_lock,
   tests/uplink/test_forwarder.py::test_readings_evicted_while_the_backlog_drains_are_not_sent.
6. Self-healing. A file that is not a database or is corrupt, at open or later, is renamed
   `<path>.corrupt-<UTC time>` (with its -wal/-shm), logged, and replaced by a fresh queue.
   Tests: tests/queue/test_queue_faults.py::test_garbage_file_at_start_is_replaced,
   tests/queue/test_queue_faults.py::test_corrupt_file_is_moved_aside_and_seqs_do_not_go_back,
   tests/queue/test_queue_read.py::test_a_file_corrupted_while_running_is_set_aside_by_a_read.
7. Nothing disappears uncounted. A reading given to `put()`/`submit()` is committed, or
   counted: `evicted` (3), `dropped` (4; also what is still held when `close()` gives up on a
   read-only disk, or after CLOSE_WAIT on one that does not answer), or `lost`. `close()`
   never raises; a count the file cannot take stays in `stats()` and in the log line. `lost`:
   after every commit a high-water mark `<path>.mark` (agent.queue.mark: next_seq, depth and
   the counters, one pwrite, no fsync) is written beside the file; at open a file below it
   went back in time (its WAL removed, an older copy restored, or removed): at most the mark's
   depth of the seqs in between were waiting, that many are counted in `meta.lost` and logged
   once with the seqs. Survives kill -9 (the page cache does), best-effort after a power cut.
   A queue written before the mark opens as it is.
   Tests:
   tests/queue/test_queue_disk.py::test_a_read_only_disk_holds_readings_then_counts_them_dropped_at_close,
   tests/queue/test_queue_disk.py::test_a_removed_wal_is_reported_as_lost_and_seqs_continue_above,
   tests/queue/test_queue_disk.py::test_a_file_restored_from_an_old_copy_is_a_counted_loss,
   tests/queue/test_queue_disk.py::test_a_removed_queue_file_is_a_counted_loss,
   tests/queue/test_queue_disk.py::test_kill_9_never_reads_as_a_file_that_went_back,
   tests/queue/test_queue_disk.py::test_a_queue_written_before_the_mark_opens_and_delivers_all,
   tests/e2e/test_disk_faults.py::test_sigterm_on_a_read_only_disk_counts_what_it_held_and_exits_cleanly,
   tests/e2e/test_disk_faults.py::test_sigterm_on_a_frozen_disk_stops_in_bounded_time_and_counts_what_it_held,
   tests/e2e/test_disk_faults.py::test_a_removed_wal_then_kill_9_is_a_counted_loss_and_seqs_go_on.

tests/queue/test_invariants.py checks that every test named here exists.
"""

from agent.queue.bounds import Limits
from agent.queue.receipt import Receipt
from agent.queue.store import Queue, QueueStats

__all__ = ["Limits", "Queue", "QueueStats", "Receipt"]
