"""A subscriber process for the benchmarks: counts telemetry readings (and, with --latency,
records receive-minus-poll latencies) and writes its figures as JSON to a file every 0.2 s, so
that counting does not compete with the agent for its interpreter.

python -m tests.bench.counter PORT OUTFILE [--latency]
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    latency = "--latency" in sys.argv
    lock = threading.Lock()
    state: dict[str, Any] = {"readings": 0, "messages": 0, "latencies_ms": [], "ready": False}

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if not msg.topic.endswith("/telemetry"):
            return
        body = json.loads(msg.payload)
        now = time.time_ns() // 1_000_000
        with lock:
            state["messages"] += 1
            state["readings"] += len(body["readings"])
            if latency:
                state["latencies_ms"].extend(now - r["ts"] for r in body["readings"])

    def on_subscribe(*_: Any) -> None:
        with lock:
            state["ready"] = True

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{os.getpid()}")
    c.on_connect = lambda cl, *_: cl.subscribe("+/+/+/telemetry", qos=1)
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    while True:
        with lock:
            text = json.dumps(state)
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
