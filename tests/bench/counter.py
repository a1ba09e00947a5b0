"""A subscriber process for the benchmarks: counts telemetry readings per device and writes its
figures as JSON to a file every 0.2 s, so that counting does not compete with the agent for its
interpreter. With --latency it also keeps, for each reading, when it arrived and how long after
its `ts` (the poll) that was, and writes them once, on SIGTERM. `--exclude=DEVICE` leaves a
device out of the latencies (a streamed sensor's `ts` is a frame's arrival, not a poll).

python -m tests.bench.counter PORT OUTFILE [--latency] [--exclude=DEVICE ...]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    latency = "--latency" in sys.argv
    exclude = {a.split("=", 1)[1] for a in sys.argv if a.startswith("--exclude=")}
    lock = threading.Lock()
    state: dict[str, Any] = {"readings": 0, "messages": 0, "ready": False}
    devices: Counter[str] = Counter()
    qualities: Counter[str] = Counter()
    arrivals: list[tuple[int, int]] = []  # (received ms, received - ts ms)
    done = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if not msg.topic.endswith("/telemetry"):
            return
        now = time.time_ns() // 1_000_000
        body = json.loads(msg.payload)
        readings = body["readings"]
        with lock:
            state["messages"] += 1
            state["readings"] += len(readings)
            devices[body["device"]] += len(readings)
            qualities.update(r["quality"] for r in readings)
            if latency and body["device"] not in exclude:
                arrivals.extend((now, now - r["ts"]) for r in readings)

    def on_subscribe(*_: Any) -> None:
        with lock:
            state["ready"] = True

    def write(final: bool) -> None:
        with lock:
            body = dict(state, devices=dict(devices), qualities=dict(qualities), final=final)
            if final and latency:
                body["arrivals"] = arrivals
            text = json.dumps(body)
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out)

    signal.signal(signal.SIGTERM, lambda *_: done.set())
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{os.getpid()}")
    c.on_connect = lambda cl, *_: cl.subscribe("+/+/+/telemetry", qos=1)
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    while not done.wait(0.2):
        write(final=False)
    c.disconnect()
    c.loop_stop()
    write(final=True)


if __name__ == "__main__":
    main()
