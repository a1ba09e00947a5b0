"""The core's in-memory record of recent readings: bounded, bucketed, and honest about gaps."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from agent.core.model import GOOD, Reading
from agent.polling.recent import DeviceRecent, numeric


def r(metric: str, value: object, ts: int, quality: str = "good") -> Reading:
    return Reading("dev", metric, value, "u", ts, quality)  # type: ignore[arg-type]


def test_numeric_values_for_charts() -> None:
    assert numeric(True) == 1.0 and numeric(False) == 0.0
    assert numeric(3) == 3.0 and numeric(2.5) == 2.5
    assert numeric("running") is None and numeric(None) is None
    assert numeric(float("nan")) is None


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64), st.floats(),
                   st.text(max_size=3))
POLLS = st.lists(st.lists(st.tuples(st.sampled_from(["a", "b"]), VALUES,
                                    st.sampled_from([GOOD, "timeout", "unmapped"])),
                          max_size=4), max_size=12)


@given(POLLS)
def test_recording_matches_the_plain_rules(polls: list[list[tuple[str, object, str]]]) -> None:
    """The inlined hot path (record) against the rules written plainly with `numeric`."""
    rec = DeviceRecent(samples=50, step_ms=1000)
    model: dict[str, dict[str, object]] = {}
    for n, poll in enumerate(polls):
        ts = 400 * n  # a bucket holds two or three polls: the newest wins
        rec.record([r(m, v, ts, q) for m, v, q in poll])
        for m, v, q in poll:
            point = model.setdefault(m, {"value_ts": None, "value": None, "changed": None,
                                         "history": {}})
            good = q == GOOD or v is not None
            if good:
                if (point["value_ts"] is None or v != point["value"]
                        or type(v) is not type(point["value"])):
                    point["changed"] = ts
                point["value"], point["value_ts"] = v, ts
            sample = numeric(v) if good else None  # type: ignore[arg-type]
            if sample is not None or not good:
                point["history"][ts // 1000] = sample  # type: ignore[index]
    snap, hist = rec.snapshot(), rec.history(now_ms=400 * len(polls))
    now = 400 * len(polls) // 1000
    for m, point in model.items():
        got = snap[m]
        assert got["value_ts"] == point["value_ts"] and got["changed_ts"] == point["changed"]
        assert got["value"] == point["value"] or got["value"] != got["value"]  # NaN
        want = sorted(point["history"].items())  # type: ignore[attr-defined]
        got_hist = hist.get(m, [])
        assert [b for b, _ in got_hist] == [b - now for b, _ in want]
        for (_, g), (_, w) in zip(got_hist, want, strict=True):  # values to 5 digits
            if g is None or w is None:
                assert g is None and w is None
            else:
                assert isinstance(w, float) and math.isclose(g, w, rel_tol=1e-4)


def test_history_is_bounded_one_sample_per_bucket_newest_wins() -> None:
    rec = DeviceRecent(samples=5, step_ms=1000)
    for i in range(40):  # 4 readings per 1 s bucket, 10 buckets
        rec.record([r("level", float(i), 250 * i)])
    hist = rec.history(now_ms=9_999)["level"]
    assert hist == [[-4, 23.0], [-3, 27.0], [-2, 31.0], [-1, 35.0], [0, 39.0]]  # newest wins
    assert rec.history(now_ms=12_000)["level"] == [[-4, 35.0], [-3, 39.0]]  # the window moved
    point = rec.snapshot()["level"]
    assert point["value"] == 39.0 and point["value_ts"] == 9750 and point["last"] == [9, 39.0]
    assert rec.history(now_ms=100_000)["level"] == []  # all outside the window


def test_failed_poll_keeps_the_last_value_and_leaves_a_gap() -> None:
    rec = DeviceRecent(samples=10, step_ms=1000)
    rec.record([r("ph", 7.1, 0), r("state", "running", 0)])
    rec.record([r("ph", None, 1000, "timeout"), r("state", None, 1000, "timeout")])
    rec.failed("timeout")
    rec.record([r("ph", 7.1, 2000)])
    snap, hist = rec.snapshot(), rec.history(now_ms=2000)
    assert hist["ph"] == [[-2, 7.1], [-1, None], [0, 7.1]]
    assert snap["state"]["value"] == "running" and snap["state"]["quality"] == "timeout"
    assert hist["state"] == [[-1, None]]  # strings are not charted; the gap is
    assert snap["ph"]["changed_ts"] == 0  # the same value after the gap is no change
    c = rec.counters()
    assert c["polls"] == 3 and c["errors"] == {"timeout": 1}
    assert c["by_quality"] == {"good": 3, "timeout": 2}


def test_changes_are_timed() -> None:
    rec = DeviceRecent()
    rec.record([r("flow", 1, 1000)])
    rec.record([r("flow", 1, 2000)])
    rec.record([r("flow", 2, 3000)])
    rec.record([r("flow", 2.0, 4000)])  # int -> float is a change of what the device says
    assert rec.snapshot()["flow"]["changed_ts"] == 4000


def test_history_values_are_short() -> None:
    rec = DeviceRecent()
    rec.record([r("ph", 7.123456789, 1000)])
    assert rec.history(now_ms=1000)["ph"] == [[0, 7.1235]]
    assert rec.snapshot()["ph"]["value"] == 7.123456789  # the value itself is exact


def test_modbus_requests_are_counted_per_poll() -> None:
    class Driver:
        requests = 0

    drv = Driver()
    rec = DeviceRecent(drv)
    drv.requests = 3
    rec.record([])
    drv.requests = 5
    rec.record([])
    c = rec.counters()
    assert c["requests"] == 5 and c["requests_last_poll"] == 2
    assert DeviceRecent(object()).counters()["requests"] is None
