"""The telemetry encoder's fast path says exactly what a plain JSON encoder would, for any
reading the queue can hold (non-finite floats become null with quality not_finite)."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.clock import ManualClock, corrector, use
from agent.core.model import Reading
from agent.queue import Queue
from agent.uplink.contract import encode_senml, encode_telemetry

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True)
values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
                   st.floats(), st.text())
readings = st.builds(Reading, device=st.just("dev"), metric=names, value=values,
                     unit=st.one_of(st.none(), st.text(max_size=8)),
                     ts=st.integers(0, 2**45),
                     quality=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))


@pytest.fixture
def synced_clock() -> Iterator[ManualClock]:
    clock = ManualClock(1_795_000_000_000, synced=True)
    use(clock)
    yield clock
    use(None)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # one clock for all
@given(batch=st.lists(readings, min_size=1, max_size=20), historical=st.booleans())
def test_encoder_matches_plain_json(synced_clock: ManualClock, batch: list[Reading],
                                    historical: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        q = Queue(Path(tmp) / "q.db")
        q.put(batch)
        rows = q.take(0, 100)
        q.close()
    body = json.loads(encode_telemetry("gw-1", "dev", rows, historical))
    expected = []
    for seq, r in enumerate(batch, start=1):
        finite = not isinstance(r.value, float) or math.isfinite(r.value)
        expected.append({"seq": seq, "ts": r.ts, "metric": r.metric,
                         "value": r.value if finite else None, "unit": r.unit,
                         "quality": r.quality if finite else "not_finite"})
    assert body == {"v": 1, "gateway": "gw-1", "device": "dev", "historical": historical,
                    "readings": expected}


def test_readings_stamped_while_unsynced_are_flagged_then_corrected(tmp_path: Path) -> None:
    clock = ManualClock(86_400_000, synced=False)  # a Pi without RTC: 1970-01-02
    use(clock)
    try:
        q = Queue(tmp_path / "q.db")
        q.put([Reading("dev", "m", 1.0, None, clock.now_ms())])
        rows = q.take(0, 10)
        flagged = json.loads(encode_telemetry("gw", "dev", rows, fix=corrector(clock)))
        assert flagged["readings"][0]["clock"] == "unsynced"
        assert flagged["readings"][0]["ts"] == 86_400_000 or flagged["readings"][0]["ts"] < 10**9
        clock.set(1_795_000_000_000, synced=True)  # NTP steps the clock to 2026
        fixed = json.loads(encode_telemetry("gw", "dev", rows, fix=corrector(clock)))
        assert fixed["readings"][0]["clock"] == "corrected"
        assert abs(fixed["readings"][0]["ts"] - 1_795_000_000_000) < 5_000
        q.put([Reading("dev", "m", 2.0, None, clock.now_ms())])
        live = q.take(1, 10)
        assert "clock" not in json.loads(encode_telemetry("gw", "dev", live))["readings"][0]
    finally:
        use(None)


def test_senml_pack(synced_clock: ManualClock, tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    t = synced_clock.now_ms()
    q.put([Reading("plc", "ph", 7.1, "pH", t), Reading("plc", "pump", True, None, t + 500),
           Reading("plc", "state", "running", None, t + 500),
           Reading("plc", "flow", None, "m3/h", t + 500, "timeout")])
    pack = json.loads(encode_senml("gw-1", "plc", q.take(0, 10), historical=True))
    assert pack == [
        {"bn": "gw-1:plc:", "bt": t / 1000, "n": "ph", "u": "pH", "v": 7.1, "seq": 1,
         "historical": True},
        {"n": "pump", "vb": True, "t": 0.5, "seq": 2, "historical": True},
        {"n": "state", "vs": "running", "t": 0.5, "seq": 3, "historical": True},
    ]
