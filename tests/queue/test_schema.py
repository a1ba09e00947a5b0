"""The queue file's layout (agent.queue.schema) is the one `Row` names: same columns, same
order; a 0.1.0 file is brought up to date."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.core.model import (
    DEVICE,
    METRIC,
    QUALITY,
    ROW_FIELDS,
    SEQ,
    TS,
    UNIT,
    UNSYNCED,
    VALUE,
    Reading,
)
from agent.queue import Queue, schema


def test_the_table_has_rows_columns_in_order_and_the_meta_keys(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put([Reading("d", "m", 1.5, "u", 7)])
    con = sqlite3.connect(tmp_path / "q.db")
    columns = tuple(row[1] for row in con.execute(f"PRAGMA table_info({schema.READINGS})"))
    keys = {key for (key,) in con.execute(f"SELECT key FROM {schema.META}")}
    con.close()
    assert columns == schema.COLUMNS == ROW_FIELDS
    names = {SEQ: "seq", DEVICE: "device", METRIC: "metric", VALUE: "value", UNIT: "unit",
             TS: "ts", QUALITY: "quality", UNSYNCED: "unsynced"}
    assert [ROW_FIELDS[i] for i in sorted(names)] == [names[i] for i in sorted(names)]
    assert keys == set(schema.META_KEYS)
    (row,) = q.take(0, 10)
    assert (row[SEQ], row[DEVICE], row[VALUE], row[QUALITY]) == (1, "d", "1.5", "good")
    q.close()


def test_a_queue_written_by_0_1_0_gets_its_unsynced_column(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "q.db")  # the 0.1.0 layout: no unsynced column
    con.executescript("""
        CREATE TABLE readings (seq INTEGER PRIMARY KEY, device TEXT NOT NULL, metric TEXT NOT NULL,
                               value TEXT NOT NULL, unit TEXT, ts INTEGER NOT NULL,
                               quality TEXT NOT NULL);
        INSERT INTO readings VALUES (5, 'd', 'm', '2', NULL, 9, 'good');
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('depth', 1), ('evicted', 0), ('dropped', 0), ('next_seq', 6);
    """)
    con.close()
    q = Queue(tmp_path / "q.db")
    assert q.take(0, 10) == [(5, "d", "m", "2", None, 9, "good", None)]
    assert q.put([Reading("d", "m", 3, None, 10)]) == [6]
    q.close()
