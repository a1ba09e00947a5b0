"""The telemetry encoder's fast path says exactly what a plain JSON encoder would, for any
reading the queue can hold (non-finite floats become null with quality not_finite)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.contract import encode_telemetry
from agent.model import Reading
from agent.queue import Queue

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True)
values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
                   st.floats(), st.text())
readings = st.builds(Reading, device=st.just("dev"), metric=names, value=values,
                     unit=st.one_of(st.none(), st.text(max_size=8)),
                     ts=st.integers(0, 2**45),
                     quality=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))


@given(batch=st.lists(readings, min_size=1, max_size=20), historical=st.booleans())
def test_encoder_matches_plain_json(batch: list[Reading], historical: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        q = Queue(Path(tmp) / "q.db")
        q.put(batch)
        rows = q.take_rows(0, 100)
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
