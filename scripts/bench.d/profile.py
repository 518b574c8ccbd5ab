"""Profiles one zone_sync scenario of scripts/bench with perf, to see where
the time goes:

    python3 scripts/bench.d/profile.py catchup [N]   node B joining N records (default 1M)
    python3 scripts/bench.d/profile.py lookup [N]    random-key GETs through the keyval variable
    python3 scripts/bench.d/profile.py write [N]     one keyval write per request
    python3 scripts/bench.d/profile.py idle [N]      a node holding N records, no writes (10ms)
    python3 scripts/bench.d/profile.py drain [N]     N writes, then the peer catching up

perf.data files and the reports land in build/bench-profile/. Needs perf
(Debian: linux-perf). Same binaries as scripts/bench (a private copy)."""

import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from systems import TOP, ZoneSync, key_of, value_of, wait_until  # noqa: E402
from bench import Bench, cpu_seconds  # noqa: E402

OUT = os.path.join(TOP, "build", "bench-profile")


def perf_record(name, pids, seconds, dwarf=True):
    data = os.path.join(OUT, f"{name}.data")
    cg = ["--call-graph", "dwarf,32768"] if dwarf else ["-g"]
    return subprocess.Popen(
        ["perf", "record", "-F", "999", *cg, "-o", data, "-p", ",".join(map(str, pids)),
         "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), data


def report(data, name):
    txt = os.path.join(OUT, f"{name}.txt")
    with open(txt, "w") as f:
        subprocess.run(["perf", "report", "-i", data, "--no-children", "-g", "none",
                        "--sort", "pid,dso,symbol", "--percent-limit", "0.5"],
                       stdout=f, stderr=subprocess.DEVNULL, timeout=600)
    with open(os.path.join(OUT, f"{name}-callers.txt"), "w") as f:
        subprocess.run(["perf", "report", "-i", data, "--children", "-g", "caller,0.5,callee",
                        "--sort", "symbol", "--percent-limit", "2"],
                       stdout=f, stderr=subprocess.DEVNULL, timeout=600)
    lines = [ln for ln in open(txt) if ln.strip() and not ln.startswith("#")]
    print(f"--- {name}: top symbols ({txt})")
    print("".join(lines[:25]))


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "catchup"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000000
    os.makedirs(OUT, exist_ok=True)
    run = os.path.join(OUT, "run")
    interval = "10ms" if what == "idle" else "1s"
    z = ZoneSync(run, nodes=2, interval=interval, zone_size="512m")
    pairs = [(key_of("big", i), value_of(i)) for i in range(n)]
    try:
        if what == "catchup":
            z.start_node(0)
            z.load(pairs)
            time.sleep(1)
            # every process of node 0 now, node 1's as soon as it exists
            p, data = perf_record("catchup-A", z.pids(0), 6)
            z.start_node(1)
            p2, data2 = perf_record("catchup-B", z.pids(1), 5)
            t0 = time.perf_counter()
            z.wait_ready(1)
            wait_until(lambda: z.count(1) >= n, 60, 0.002, "B complete")
            print(f"B complete after {time.perf_counter() - t0:.2f} s")
            p.wait()
            p2.wait()
            report(data, "catchup-A")
            report(data2, "catchup-B")
        elif what in ("lookup", "write"):
            z.start()
            z.load(pairs)
            b = Bench.__new__(Bench)
            b.run_dir = OUT
            b.quick = False
            Bench.pin(z.pids(0), "0")
            Bench.pin(z.pids(1), "1")
            script = b.get_script(n, "/get") if what == "lookup" else b.set_script(min(n, 100000))
            path = "/get" if what == "lookup" else "/set"
            p, data = perf_record(what, z.pids(0), 5)
            out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c16", "-d6s", "-s", script,
                                  f"http://127.0.0.1:{z.http[0]}{path}"], capture_output=True, text=True).stdout
            p.wait()
            print([ln for ln in out.splitlines() if "Requests/sec" in ln])
            report(data, what)
        elif what == "idle":
            # load node 1 alone, let node 0 take it from the snapshot,
            # restart node 1: both hold n records, nothing queued anywhere
            z.start_node(1)
            z.load(pairs, node=1)
            z.start_node(0)
            wait_until(lambda: z.count(0) >= n, 120, 0.5, "node 0 loaded")
            z.stop_node(1)
            z.start_node(1)
            wait_until(lambda: z.count(1) >= n, 120, 0.5, "node 1 loaded")
            wait_until(lambda: z.pending(0) == 0 and z.pending(1) == 0, 60, 0.5, "settled")
            time.sleep(2)
            c0 = cpu_seconds(z.pids(0))
            p, data = perf_record("idle", z.pids(0), 20)
            p.wait()
            print(f"node 0: {(cpu_seconds(z.pids(0)) - c0) / 20 * 60:.3f} CPU s per minute (incl. perf)")
            report(data, "idle")
        elif what == "idle-writer":
            # the node that made every write (the load, then a peer joins)
            z.start_node(0)
            z.load(pairs)
            z.start_node(1)
            wait_until(lambda: z.count(1) >= n, 120, 0.5, "node 1 loaded")
            wait_until(lambda: z.pending(0) == 0 and z.pending(1) == 0, 120, 0.5, "settled")
            time.sleep(2)
            c0 = cpu_seconds(z.pids(0))
            c1 = cpu_seconds(z.pids(1))
            p, data = perf_record("idle-writer", z.pids(0), 10)
            p.wait()
            print(f"node 0: {(cpu_seconds(z.pids(0)) - c0) / 10 * 60:.3f} CPU s per minute (incl. perf), "
                  f"node 1: {(cpu_seconds(z.pids(1)) - c1) / 10 * 60:.3f}")
            print(z.status(0))
            report(data, "idle-writer")
        elif what == "drain":
            z.start()
            t0, t1 = z.bulk_write(pairs)
            p, data = perf_record("drain-A", z.pids(0), 10)
            p.wait()
            print(f"after 10 s node 1 holds {z.count(1)} of {n}")
            report(data, "drain-A")
        else:
            sys.exit(__doc__)
    finally:
        z.stop()


if __name__ == "__main__":
    main()
