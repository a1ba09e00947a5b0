"""The backlog rate cap, on a clock the test moves."""

from __future__ import annotations

from agent.forwarder import TokenBucket


def test_token_bucket_caps_backlog_readings_per_second() -> None:
    now = [100.0]
    bucket = TokenBucket(500, clock=lambda: now[0])
    assert bucket.available() == 500  # one second's worth to start
    bucket.spend(500)
    assert bucket.available() == 0 and bucket.wait_time() > 0
    now[0] += 0.1
    assert bucket.available() == 50
    bucket.spend(50)
    now[0] += 10  # idle: the burst never exceeds one second's worth
    assert bucket.available() == 500
    sent = 0
    for _ in range(100):  # ten simulated seconds of draining as fast as allowed
        now[0] += 0.1
        n = bucket.available()
        bucket.spend(n)
        sent += n
    assert 5000 <= sent <= 5000 + 500


def test_no_cap_means_no_wait() -> None:
    bucket = TokenBucket(0)
    assert bucket.available() >= 2**31 - 1 and bucket.wait_time() == 0
