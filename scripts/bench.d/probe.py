"""A latency probe that scripts/bench runs as a separate process (so that
the benchmark's own polling does not delay it): one request at a time on
one keep-alive connection, one every INTERVAL_MS, until a line arrives on
stdin; then it prints "SEND_TIME LATENCY" per request (seconds, the
CLOCK_MONOTONIC of time.monotonic(), comparable across processes).

    probe.py http PORT PATH INTERVAL_MS     GET PATH on 127.0.0.1:PORT
    probe.py redis PORT KEY INTERVAL_MS     GET KEY on a Redis server
"""

import os
import select
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clients import Http, Redis  # noqa: E402

MAX_SAMPLES = 1_000_000


def main():
    kind, port, what, interval_ms = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    if kind == "http":
        c = Http(port)

        def once():
            st, _ = c.get(what)
            if st != 200:
                raise RuntimeError(f"probe: {st}")
    elif kind == "redis":
        c = Redis(port)

        def once():
            c.cmd("GET", what)
    else:
        sys.exit(__doc__)
    step = interval_ms / 1000
    out = []
    print("ready", flush=True)
    nxt = time.monotonic()
    while len(out) < MAX_SAMPLES:
        t0 = time.monotonic()
        once()
        out.append((t0, time.monotonic() - t0))
        nxt += step
        r, _, _ = select.select([sys.stdin], [], [], max(0.0, nxt - time.monotonic()))
        if r:
            break
        if nxt < time.monotonic() - step:
            nxt = time.monotonic()  # fell behind: no burst to catch up
    sys.stdout.write("".join(f"{t:.6f} {d:.7f}\n" for t, d in out))


if __name__ == "__main__":
    main()
