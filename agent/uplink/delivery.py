"""Delivery the broker can vouch for under MQTT 3.1.1, where a publish cannot be refused.

A 3.1.1 broker whose ACL denies a topic still acknowledges every publish and drops it (MQTT 5
answers with a reason code instead). A PUBACK alone then proves nothing, so under 3.1.1 the
forwarder hands acknowledged readings to `EchoCheck` instead of deleting them: after them it
publishes a small probe to `{prefix}/{gateway}/echo`, which the gateway itself subscribes to
(again before each probe while the broker drops, as a subscription the ACL refused stays gone).
When the probe comes back, the broker demonstrably delivers this gateway's messages and the
readings acknowledged before the probe are released for deletion. When it does not come back
within `timeout`, the broker accepts but drops: that is said loudly (one log line per episode,
`state`, which health, `status` and /metrics show), nothing held is deleted (it is re-sent when
a later probe comes back), and no data is sent meanwhile, only a probe every `timeout`.

What it cannot see: an ACL that lets the gateway use its echo topic but denies its telemetry
topics (the probe shares the gateway's prefix, so the common mistakes, a wrong gateway id or
prefix, are caught); and a broker that starts delivering again between a reading's PUBACK and
the probe that follows it within `probe_after` vouches for that reading too. Under MQTT 5 none of
this runs: the PUBACK's reason code says whether the broker took the message.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable

PROBE_AFTER = 0.5
"""Seconds acknowledged readings wait before a probe vouches for them."""
ECHO_TIMEOUT = 10.0
"""Seconds a probe may take to come back before the broker counts as dropping messages."""


class EchoCheck:
    """Holds acknowledged seqs until a probe published after them comes back."""

    def __init__(self, gateway: str, publish: Callable[[bytes, bool], None],
                 probe_after: float | None = None, timeout: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._gateway, self._publish, self._clock = gateway, publish, clock
        self.probe_after = PROBE_AFTER if probe_after is None else probe_after
        self.timeout = ECHO_TIMEOUT if timeout is None else timeout
        self._held: list[int] = []  # acknowledged, waiting for the next probe
        self._held_since: float | None = None
        self._probe: tuple[bytes, list[int], float] | None = None  # payload, its seqs, sent at
        self._echoes: deque[bytes] = deque(maxlen=64)  # from the network thread
        self._n = 0
        self.state = "unchecked"
        """`unchecked` (nothing probed yet), `verified` or `dropping`."""
        self.episodes = 0  # times the broker was found dropping

    @property
    def blocked(self) -> bool:
        """The broker drops what it acknowledges: send nothing but probes."""
        return self.state == "dropping"

    @property
    def held(self) -> int:
        return len(self._held) + (len(self._probe[1]) if self._probe else 0)

    def hold(self, seqs: list[int]) -> None:
        if seqs:
            self._held.extend(seqs)
            self._held_since = self._held_since or self._clock()

    def echo(self, payload: bytes) -> None:
        """Network thread: a message on the echo topic. Records only."""
        self._echoes.append(payload)

    def reset(self) -> None:
        """Forget what is held (it is still queued and will be sent again). The probe in flight
        stays: paho sends it again after a reconnect, and if it never comes back the broker
        drops (some brokers cut a 3.1.1 client's connection at a denied publish instead)."""
        self._held, self._held_since = [], None

    def tick(self) -> tuple[list[int], bool]:
        """(seqs now vouched for, True if the broker was just found dropping)."""
        now, released = self._clock(), list[int]()
        if self._probe is not None and self._probe[0] in self._echoes:
            released = self._probe[1]
            self._probe, self.state = None, "verified"
            self._echoes.clear()
        if self._probe is not None and now - self._probe[2] > self.timeout:
            self._probe = None
            if self.state != "dropping":
                self.state, self.episodes = "dropping", self.episodes + 1
                return released, True
        due = self._held_since is not None and now - self._held_since >= self.probe_after
        if self._probe is None and (due or self.blocked):
            self._n += 1
            body = json.dumps({"v": 1, "gateway": self._gateway, "probe": self._n},
                              separators=(",", ":")).encode()
            self._probe = (body, self._held, now)
            self._held, self._held_since = [], None
            self._publish(body, self.blocked)  # blocked: subscribe again (an ACL fixed since)
        return released, False

    def next_wake(self) -> float:
        """Seconds until `tick` has something to do (1.0 if nothing)."""
        if self._probe is not None:
            return 0.05 if self._echoes else max(0.01, self._probe[2] + self.timeout
                                                 - self._clock())
        if self._held_since is not None:
            return max(0.01, self._held_since + self.probe_after - self._clock())
        return 1.0
