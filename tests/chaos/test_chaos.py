"""The short chaos profile, in the suite: every fault kind once, in a seeded random order,
against the real agent process, broker, Modbus servers and serial lines; then the ledger."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.chaos import SHORT, run


@pytest.mark.timeout(300)
def test_short_chaos_profile_accounts_for_every_reading(tmp_path: Path,
                                                        mosquitto_bin: str) -> None:
    seed = random.randrange(2**32)
    ledger = run(SHORT, seed, tmp_path)
    print(ledger.summary())  # shown on failure, with the seed to replay it
    assert ledger.ok, ledger.summary()
    assert ledger.produced > 500 and not ledger.lost
    assert set(ledger.faults) == {k for k in ledger.recovery_max_s}, "every fault recovered"
