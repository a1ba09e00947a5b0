"""The uplink's counters for /metrics: acknowledged readings per device, refusals, latency."""

from __future__ import annotations

from agent.uplink.stats import LATENCY_BUCKETS, PublishStats


def test_publish_stats_count_acked_readings_and_latency() -> None:
    stats = PublishStats()
    stats.sent(1, "plc", 10)
    stats.sent(2, "plc", 5)
    stats.sent(3, "meter", 7)
    stats.acked(1, True)
    stats.acked(2, False)
    stats.acked(3, True)
    stats.acked(99, True)  # unknown (a status message): ignored
    c = stats.counters()
    assert c["published"] == {"plc": 10, "meter": 7}
    assert c["refused"] == 1 and c["count"] == 2
    assert sum(c["buckets"]) == 2 and len(c["buckets"]) == len(LATENCY_BUCKETS) + 1


def test_publish_stats_forget_old_ids() -> None:
    stats = PublishStats()
    for mid in range(PublishStats.MAX_TRACKED + 10):
        stats.sent(mid, "plc", 1)
    stats.acked(0, True)  # forgotten: the table stays bounded
    stats.acked(PublishStats.MAX_TRACKED + 9, True)
    assert stats.counters()["published"] == {"plc": 1}
