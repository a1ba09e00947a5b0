"""The payload examples the README shows the platform team are valid against the schemas."""

from __future__ import annotations

import json
import re

from tests.support import HEALTH, ROOT, SENML, STATUS, TELEMETRY


def test_readme_payload_examples_match_the_schemas() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]
    kinds = set()
    for body in blocks:
        if isinstance(body, list):
            validator, kind = SENML, "senml"
        elif "readings" in body:
            validator, kind = TELEMETRY, "telemetry"
        elif "uptime_s" in body:
            validator, kind = HEALTH, "health"
        else:
            validator, kind = STATUS, "status"
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, f"README {kind} example: {errors}"
        kinds.add(kind)
    assert kinds == {"senml", "telemetry", "health", "status"}
