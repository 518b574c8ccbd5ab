"""scripts/bench: zone_sync against HAProxy peers and Redis replication, in
one invocation, on 127.0.0.1. See BENCHMARKS.md for what each scenario
measures and the fairness rules; `scripts/bench --help` for the options.

The systems are interleaved run by run: every system's cluster of a
scenario is up at once, and run r of every system comes before run r+1 of
any, so a change in the machine's load hits all of them alike. A ratio is
the median of the ratios within each run."""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from systems import (TOP, Haproxy, Redis_, ZoneSync, children, free_ports,  # noqa: E402
                     key_of, value_of, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
KV_BYTES = 96  # a 32-byte key and a 64-byte value
SYSTEMS = ("zone_sync", "HAProxy", "HAProxy CLI", "Redis")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- helpers


def cpu_ns(pids):
    """CPU time of every thread of `pids`, in nanoseconds, from
    /proc/PID/task/TID/schedstat (the scheduler's own count of time on a
    CPU: exact, where /proc/PID/stat counts 10 ms ticks)."""
    t = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    t += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return t


def cpu_seconds(pids):
    return cpu_ns(pids) / 1e9


def ss_sockets():
    """Every established TCP socket on this machine with its ports, the
    pids that hold it and its byte counts (`ss -tinp`: bytes_acked is
    what this end sent and the other end acknowledged, bytes_received
    what it received; payload only, no TCP/IP headers)."""
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True,
                         timeout=30).stdout
    socks = []
    cur = None
    for ln in out.splitlines():
        if not ln[:1].isspace():
            parts = ln.split()
            if len(parts) < 4:
                cur = None
                continue
            cur = {"lport": int(parts[2].rsplit(":", 1)[1]), "rport": int(parts[3].rsplit(":", 1)[1]),
                   "pids": set(), "acked": 0, "received": 0}
            socks.append(cur)
            rest = ln
        elif cur is None:
            continue
        else:
            rest = ln
        for tok in rest.replace(",", " ").replace("(", " ").replace(")", " ").split():
            if tok.startswith("pid="):
                cur["pids"].add(int(tok[4:]))
            elif tok.startswith("bytes_acked:"):
                cur["acked"] = int(tok.split(":")[1])
            elif tok.startswith("bytes_received:"):
                cur["received"] = int(tok.split(":")[1])
    return socks


def wire_bytes(c):
    """Bytes the cluster's replication connections carried so far, both
    directions, each connection counted from one end (for HAProxy and
    us the end on a node's listening port; for Redis the replica's end)."""
    spec = c.sync_sockets()
    total = 0
    for s in ss_sockets():
        if "sport" in spec and s["lport"] in spec["sport"]:
            total += s["acked"] + s["received"]
        elif "dport" in spec and s["rport"] == spec["dport"] and s["pids"] & spec["pids"]:
            total += s["acked"] + s["received"]
    return total


class Probe:
    """scripts/bench.d/probe.py against one node: a request every `ms`
    milliseconds on one connection, in its own process."""

    def __init__(self, args, ms=1.0):
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "probe.py"), *args, str(ms)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"probe did not start: {line!r}")

    def stop(self):
        """[(send time, latency s)], monotonic clock."""
        try:
            out, _ = self.p.communicate("stop\n", timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, _ = self.p.communicate()
        return [tuple(map(float, ln.split())) for ln in out.splitlines() if ln.strip()]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def shm_pss_bytes(pids, size_kb):
    """Resident bytes of the shared mappings of exactly `size_kb` (the
    keyval zone), summed over `pids` as Pss: each resident page counted once
    however many processes touched it."""
    total = 0
    for pid in pids:
        cur = False
        try:
            with open(f"/proc/{pid}/smaps") as f:
                for ln in f:
                    first = ln.split(maxsplit=1)[0]
                    if "-" in first and not first.endswith(":"):
                        cur = "/dev/zero" in ln or "SYSV" in ln
                        size_ok = None
                    elif cur and first == "Size:":
                        size_ok = int(ln.split()[1]) == size_kb
                    elif cur and first == "Pss:" and size_ok:
                        total += int(ln.split()[1]) * 1024
        except OSError:
            pass
    return total


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


class Results:
    """rows: scenario, metric, unit, {system: [(run, value)]}, notes."""

    def __init__(self):
        self.rows = []
        self.notes = {}

    def row(self, scen, metric, unit="x"):
        for r in self.rows:
            if r["scenario"] == scen and r["metric"] == metric:
                return r
        r = {"scenario": scen, "metric": metric, "unit": unit, "values": {}, "runs": {}, "notes": {}}
        self.rows.append(r)
        return r

    def add(self, scen, metric, unit, system, value, note=None, run=0):
        r = self.row(scen, metric, unit)
        r["values"].setdefault(system, []).append(value)
        r["runs"].setdefault(system, []).append(run)
        if note:
            r["notes"][system] = note

    def get(self, scen, metric):
        for r in self.rows:
            if r["scenario"] == scen and r["metric"] == metric:
                return r
        return None


def run_ratios(r, a, b):
    """The ratios a/b of the runs where both systems have a number."""
    va = dict(zip(r["runs"].get(a, []), r["values"].get(a, [])))
    vb = dict(zip(r["runs"].get(b, []), r["values"].get(b, [])))
    out = []
    for run, x in va.items():
        y = vb.get(run)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x >= 0 and y > 0:
            out.append(x / y)
    return out


def fmt(v, unit):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if unit == "ms":
        return f"{v:.3g} ms" if v < 100 else f"{v:.0f} ms"
    if unit == "s":
        return f"{v:.3g} s"
    if unit == "/s":
        return f"{v / 1000:.1f}k/s" if v >= 1000 else f"{v:.0f}/s"
    if unit == "%":
        return f"{v:.2f} %"
    if unit == "B":
        return f"{v:.0f} B"
    if unit == "us":
        return f"{v:.2f} µs"
    if unit == "cpu-s/min":
        return f"{v:.3f} s"
    return f"{v:.3g}"


def summary(vals, unit):
    """median (min–max), over the runs; a string value (timeout) wins."""
    if not vals:
        return "—", None
    strs = [v for v in vals if isinstance(v, str)]
    nums = [v for v in vals if not isinstance(v, str)]
    if strs and not nums:
        return strs[0], None
    med = statistics.median(nums)
    s = fmt(med, unit)
    if len(nums) > 1:
        s += f" ({fmt(min(nums), unit).split()[0]}–{fmt(max(nums), unit)})"
    if strs:
        s += f"; {strs[0]}"
    return s, med


def ratio(x):
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def nlabel(n):
    return f"{n // 1000000}M" if n >= 1000000 and n % 1000000 == 0 else f"{n // 1000}k"


def timeout_bound(vals, unit):
    """The lower bound a timed-out figure ("> 30 s") stands for, in unit."""
    for v in vals:
        if isinstance(v, str) and v.startswith("> ") and v.endswith(" s"):
            x = float(v[2:-2])
            return x * 1000 if unit == "ms" else x
    return None


# ---------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, args):
        self.a = args
        self.res = Results()
        self.run_dir = args.dir
        self.quick = args.quick
        self.runs = args.runs

    def systems(self):
        """The systems asked for, each a cluster type (HAProxy's CLI is a
        second way into the HAProxy cluster, not a cluster of its own)."""
        return [s for s in ("zone_sync", "HAProxy", "Redis") if s in self.a.systems]

    def make(self, system, nodes=2, interval="1s", tag="main"):
        if system == "zone_sync":
            return ZoneSync(self.run_dir, nodes=nodes, interval=interval, zone_size=self.a.zone_size, tag=tag)
        if system == "HAProxy":
            return Haproxy(self.run_dir, nodes=nodes, tag=tag)
        return Redis_(self.run_dir, nodes=nodes, tag=tag)

    def targets_for(self, nodes, tag, with_cli=True):
        """[(column, cluster or view, zone_sync_interval or None, key tag)]
        and the clusters to start: ours at the default interval and at
        10ms, HAProxy through its HTTP frontend and through its CLI (the
        same cluster), Redis."""
        targets, clusters = [], []
        for system in self.systems():
            if system == "zone_sync":
                for iv in ("1s", "10ms"):
                    c = self.make(system, nodes=nodes, interval=iv, tag=f"{tag}-{iv}")
                    clusters.append(c)
                    targets.append(("zone_sync", c, iv, "z" + iv))
            elif system == "HAProxy":
                c = self.make(system, nodes=nodes, tag=tag)
                clusters.append(c)
                targets.append(("HAProxy", c, None, "h"))
                if with_cli:
                    targets.append(("HAProxy CLI", c.cli_view(), None, "c"))
            else:
                c = self.make(system, nodes=nodes, tag=tag)
                clusters.append(c)
                targets.append(("Redis", c, None, "r"))
        return targets, clusters

    @staticmethod
    def suffixes(iv):
        """A reference's figure stands beside both of ours (1s and 10ms)."""
        return {"1s": [" @ default (1s)"], "10ms": [" @ 10ms"]}.get(iv, [" @ default (1s)", " @ 10ms"])

    # 1. propagation latency

    def latency(self):
        n_writes = 100 if self.quick else 500
        budget = 6.0 if self.quick else 10.0
        for nodes in ([2] if self.quick else [2, 3]):
            targets, clusters = self.targets_for(nodes, f"lat{nodes}")
            scen = "1. latency" if nodes == 2 else "1. latency, 3 nodes (on both peers)"
            try:
                for c in clusters:
                    c.start()
                for s, c, iv, kt in targets:
                    # one warm-up write, not counted
                    self._lat_one(c, key_of(f"w{nodes}{kt}", 0), value_of(0), nodes, 10.0)
                for run in range(self.runs):
                    for s, c, iv, kt in targets:
                        lat, wr, timeouts = [], [], 0
                        end = time.monotonic() + budget
                        for i in range(n_writes):
                            if time.monotonic() > end:
                                break
                            t = self._lat_one(c, key_of(f"l{nodes}{kt}r{run}-", i), value_of(i), nodes, 5.0)
                            if t is None:
                                timeouts += 1
                            else:
                                lat.append(t)
                                wr.append(self.last_write_s)
                        lat.sort()
                        wr.sort()
                        note = None
                        if len(lat) < n_writes:
                            note = (f"{len(lat)} of {n_writes} writes in the {budget:.0f} s budget per run"
                                    + (f", {timeouts} over 5 s" if timeouts else ""))
                        for q, name in ((0.5, "p50"), (0.99, "p99")):
                            for sfx in self.suffixes(iv):
                                self.res.add(scen, f"{name}{sfx}", "ms", s, pct(lat, q) * 1000, note, run)
                        if nodes == 2 and iv in ("1s", None):
                            # the write's own round trip, part of every figure above
                            self.res.add(scen, "p50 of the write request alone (node A answers)", "ms", s,
                                         pct(wr, 0.5) * 1000, None, run)
                        log(f"  latency {nodes} nodes, {s}{' @ ' + iv if iv else ''}, run {run}: {len(lat)} "
                            f"writes, p50 {pct(lat, .5) * 1000:.3f} ms, p99 {pct(lat, .99) * 1000:.3f} ms")
                if nodes == 2:
                    self._quiet(targets)
            finally:
                for c in clusters:
                    c.stop()

    def _quiet(self, targets):
        """A quiet node: one write every 1.1 s (longer than the default
        zone_sync_interval), the systems taking turns in each slot."""
        quiet = [t for t in targets if t[2] in ("1s", None) and t[0] != "HAProxy CLI"]
        n_quiet = 4 if self.quick else 8
        for run in range(self.runs):
            lat = {t[0]: [] for t in quiet}
            for i in range(n_quiet):
                time.sleep(1.1)
                for s, c, iv, kt in quiet:
                    t = self._lat_one(c, key_of(f"q{kt}{run}-", i), value_of(i), 2, 5.0)
                    if t is not None:
                        lat[s].append(t)
            for s, v in lat.items():
                v.sort()
                self.res.add("1. latency", "p50, quiet node (a write every 1.1 s)", "ms", s, pct(v, 0.5) * 1000,
                             None, run)
                self.res.add("1. latency", "max, quiet node (a write every 1.1 s)", "ms", s,
                             v[-1] * 1000 if v else "none arrived", None, run)
                log(f"  quiet run {run}, {s}: {len(v)} writes, p50 {pct(v, .5) * 1000:.3f} ms")

    def _lat_one(self, c, k, v, nodes, timeout):
        t0 = time.perf_counter()
        c.write(k, v)
        self.last_write_s = time.perf_counter() - t0
        end = t0 + timeout
        for node in range(1, nodes):
            while c.read(node, k) != v:
                if time.perf_counter() > end:
                    return None
        return time.perf_counter() - t0

    # 2. replication throughput

    def throughput(self):
        n = 20000 if self.quick else 100000
        max_lag = 10.0 if self.quick else 30.0
        sc = "2. throughput"
        targets, clusters = self.targets_for(2, "tp")
        broken = set()
        try:
            for c in clusters:
                c.start()
            for run in range(self.runs):
                for s, c, iv, kt in targets:
                    if (s, iv) in broken:
                        continue
                    pairs = [(key_of(f"t{kt}{run}-", i), value_of(i)) for i in range(n)]
                    base = c.count(1)
                    w0, cpu0 = wire_bytes(c), cpu_ns(c.pids(1))
                    t0, t1 = c.bulk_write(pairs)
                    rate = n / (t1 - t0)
                    last = [pairs[-1][0], pairs[-2][0]]  # the keys written last, on each connection
                    try:
                        wait_until(lambda: c.has_all(1, base + n, last), max_lag, 0.0005, "peer holding every key")
                        lag = time.perf_counter() - t1
                        cpu1, w1 = cpu_ns(c.pids(1)), wire_bytes(c)
                    except TimeoutError:
                        lag = None
                    for sfx in self.suffixes(iv):
                        self.res.add(sc, f"write rate{sfx}", "/s", s, rate, None, run)
                        if lag is None:
                            got = c.count(1) - base
                            self.res.add(sc, f"lag after last write{sfx}", "ms", s, f"> {max_lag:.0f} s",
                                         f"after {max_lag:.0f} s the peer held {got} of {n}", run)
                            continue
                        self.res.add(sc, f"lag after last write{sfx}", "ms", s, lag * 1000, None, run)
                        self.res.add(sc, f"receiver CPU per applied update{sfx}", "us", s,
                                     (cpu1 - cpu0) / n / 1000, None, run)
                        self.res.add(sc, f"bytes on the wire per update{sfx}", "B", s, (w1 - w0) / n, None, run)
                        self.res.add(sc, f"… beyond key and value{sfx}", "B", s, (w1 - w0) / n - KV_BYTES, None,
                                     run)
                    if lag is None:
                        log(f"  throughput {s} run {run}: {rate:.0f} writes/s, peer incomplete after "
                            f"{max_lag:.0f} s (not repeated)")
                        broken.add((s, iv))
                        continue
                    log(f"  throughput {s}{' @ ' + iv if iv else ''} run {run}: {rate:.0f} writes/s, lag "
                        f"{lag * 1000:.1f} ms, receiver {(cpu1 - cpu0) / n / 1000:.2f} µs/update, "
                        f"{(w1 - w0) / n:.1f} B/update on the wire")
        finally:
            for c in clusters:
                c.stop()

    # 3. catch-up

    def catchup_small(self):
        n = 20000 if self.quick else 100000
        pairs = [(key_of("s", i), value_of(i)) for i in range(n)]
        clusters = {}
        try:
            for system in self.systems():
                c = self.make(system, nodes=2, tag="cu")
                clusters[system] = c
                c.start_node(0)
                c.load(pairs)
                wait_until(lambda: c.count(0) >= n, 60, 0.01, "records loaded")
            self._catchup_runs(clusters, n, f"{nlabel(n)} records")
        finally:
            for c in clusters.values():
                c.stop()

    # 7. resume: a link down while records change, then back

    def resume(self):
        """Two of our nodes hold n records in sync (1M; --quick 200k); the
        link goes down (node 1 is reloaded onto a sync port nobody dials,
        dialling a port nobody listens on: its zones stay), 1,000 records
        change on node 0, and the link comes back (reloaded again). Bytes
        both nodes sent (the API's bytes_out) and the time from both nodes
        node 1's reload signal (new workers started, connected, resumed) to
        node 1 holding every change, beside a full snapshot's (from node
        1's start, empty)."""
        if "zone_sync" not in self.systems():
            return
        n = 200000 if self.quick else 1000000
        changes = 1000
        sc = "7. resume"
        pairs = [(key_of("r", i), value_of(i)) for i in range(n)]
        c = ZoneSync(self.run_dir, nodes=2, interval="10ms", zone_size=self.a.zone_size, tag="resume")
        dead = free_ports(2)
        up = c.conf(1)
        down = up.replace(f"listen 127.0.0.1:{c.sync[1]};", f"listen 127.0.0.1:{dead[0]};")
        down = "\n".join(
            line for line in down.split("\n") if "zone_sync_server" not in line or f":{c.sync[0]};" in line
        ).replace(f"zone_sync_server 127.0.0.1:{c.sync[0]};", f"zone_sync_server 127.0.0.1:{dead[1]};")

        def sent():
            return sum(c.status(i)["status"]["bytes_out"] for i in range(2))

        def reload1(conf):
            old = set(children(c.master[1])[1:])
            with open(os.path.join(c.node_dir(1), "nginx.conf"), "w") as f:
                f.write(conf)
            os.kill(c.master[1], signal.SIGHUP)
            wait_until(lambda: (lambda k: len(k) == 2 and not (set(k) & old))(children(c.master[1])[1:]),
                       60, 0.01, "new workers after reload")
            cc = c.conns.pop(1, None)
            if cc:
                cc.close()

        def online(i):
            return c.status(i)["status"]["nodes_online"] >= 1

        try:
            c.start()
            c.load(pairs)
            wait_until(lambda: c.count(1) >= n, 300, 0.05, "records in sync")
            for run in range(self.runs):
                # the full snapshot: node 1 restarted with empty zones
                c.stop_node(1)
                b0 = c.status(0)["status"]["bytes_out"]
                t0 = time.monotonic()
                c.start_node(1, wait=True)
                wait_until(lambda: c.count(1) >= n, 300, 0.002, "full snapshot")
                t_full = time.monotonic() - t0
                time.sleep(1.5)  # positions settle (the engine's 1 s tick)
                b_full = c.status(0)["status"]["bytes_out"] - b0
                # the link down, 1,000 changes, the link back
                reload1(down)
                wait_until(lambda: not online(0), 30, 0.01, "link down")
                changed = [(key_of("r", (i * 997 + run) % n), value_of(n + run * changes + i)) for i in range(changes)]
                c.bulk_write(changed)
                last = changed[-1]
                b1 = sent()
                t1 = time.monotonic()
                reload1(up)
                wait_until(lambda: all(c.read(1, k) == v for k, v in changed[-20:]), 60, 0.002, "changes")
                t_resume = time.monotonic() - t1
                wait_until(lambda: c.pending(0) == 0 and c.pending(1) == 0, 60, 0.01, "quiet")
                time.sleep(0.5)
                b_resume = sent() - b1
                assert c.read(1, last[0]) == last[1]
                self.res.add(sc, f"bytes to converge, {changes} changed of {nlabel(n)}", "B", "zone_sync", b_resume, run=run)
                self.res.add(sc, f"bytes of a full snapshot of {nlabel(n)}", "B", "zone_sync", b_full, run=run)
                self.res.add(sc, "resume bytes ÷ snapshot bytes", "%", "zone_sync", 100.0 * b_resume / max(b_full, 1), run=run)
                self.res.add(sc, f"time to converge, {changes} changed", "s", "zone_sync", t_resume, run=run)
                self.res.add(sc, f"time of a full snapshot of {nlabel(n)}", "s", "zone_sync", t_full, run=run)
                log(f"resume run {run}: {b_resume} B in {t_resume:.3f} s; full snapshot {b_full} B in {t_full:.3f} s")
        finally:
            c.stop()

    def resume3(self):
        """Three of our nodes hold n records in sync (1M; --quick 200k).
        Each node in turn is reloaded (HUP) while 1,000 records change on
        the next node: bytes all three nodes sent (the API's bytes_out)
        from the reload signal until every node holds the changes and
        nothing is pending, and that time, beside the bytes of one full
        snapshot (node 2 restarted empty, fed by both others)."""
        if "zone_sync" not in self.systems():
            return
        n = 200000 if self.quick else 1000000
        changes = 1000
        sc = "7. resume, 3 nodes: a reload of each node"
        pairs = [(key_of("t", i), value_of(i)) for i in range(n)]
        c = ZoneSync(self.run_dir, nodes=3, interval="10ms", zone_size=self.a.zone_size, tag="resume3")

        def sent():
            # a node stopped, or started since, counts from 0
            return sum(c.status(i)["status"]["bytes_out"] for i in range(3) if c.master[i])

        def settled():
            return all(c.status(i)["status"]["nodes_online"] >= 2 and c.pending(i) == 0 for i in range(3))

        try:
            c.start()
            c.load(pairs)
            wait_until(lambda: c.count(1) >= n and c.count(2) >= n, 300, 0.05, "records in sync")
            c.stop_node(2)
            b0 = sent()
            c.start_node(2, wait=True)
            wait_until(lambda: c.count(2) >= n, 300, 0.002, "full snapshot")
            wait_until(settled, 60, 0.01, "quiet")
            b_full = sent() - b0
            log(f"resume3: a full snapshot to node 2 took {b_full} B")
            for run in range(self.runs):
                for node in range(3):
                    writer = (node + 1) % 3
                    changed = [(key_of("t", (i * 991 + run * 7 + node) % n), value_of(n + i + 10 * run + node))
                               for i in range(changes)]
                    b1 = sent()
                    t1 = time.monotonic()
                    old = set(children(c.master[node])[1:])
                    os.kill(c.master[node], signal.SIGHUP)
                    c.bulk_write(changed, node=writer)
                    wait_until(lambda: (lambda k: len(k) == 2 and not (set(k) & old))(children(c.master[node])[1:]),
                               60, 0.01, "new workers after reload")
                    cc = c.conns.pop(node, None)
                    if cc:
                        cc.close()
                    wait_until(lambda: all(c.read(i, k) == v for i in range(3) for k, v in changed[-20:])
                               and settled(), 60, 0.002, "converged")
                    t = time.monotonic() - t1
                    b = sent() - b1
                    self.res.add(sc, f"bytes to converge, node {node} reloaded, {changes} changed",
                                 "B", "zone_sync", b, run=run)
                    self.res.add(sc, f"÷ a full snapshot of {nlabel(n)} ({b_full} B)", "%", "zone_sync",
                                 100.0 * b / max(b_full, 1), run=run)
                    self.res.add(sc, f"time to converge, node {node} reloaded", "s", "zone_sync", t, run=run)
                    log(f"resume3 run {run}, node {node} reloaded: {b} B in {t:.3f} s")
        finally:
            c.stop()

    def _catchup_runs(self, clusters, n, label, joiner=1, probe_key=None, keep=False):
        """Run r of every system, then run r+1: node `joiner` starts empty
        and takes every record; stopped again after each run (`keep`: not
        after the last)."""
        broken = set()
        for run in range(self.runs):
            for system, c in clusters.items():
                if system in broken:
                    continue
                ok = self._catchup_run(c, system, n, label, run, joiner, probe_key)
                if not ok:
                    broken.add(system)
                if not ok or not keep or run < self.runs - 1:
                    c.stop_node(joiner)
        return broken

    def _catchup_run(self, c, system, n, label, run, joiner, probe_key, max_wait=None):
        max_wait = max_wait or (30.0 if self.quick else 60.0)
        sc = "3. catch-up"
        probe = Probe(c.probe_args(0, probe_key)) if probe_key else None
        if probe:
            time.sleep(1.0)  # the probe's baseline: node A with nothing to send
        w0 = wire_bytes(c)
        t0 = time.monotonic()
        c.start_node(joiner, wait=False)
        t_first = t1 = None
        try:
            c.wait_ready(joiner)
            # Every system is polled the same way: its own count of records
            # (ours: records_total; HAProxy: the table's `used`; Redis:
            # DBSIZE, once the replica's link is up).
            wait_until(lambda: c.count(joiner) > 0, max_wait, 0.001, "first record")
            t_first = time.monotonic()
            wait_until(lambda: c.has_all(joiner, n, []), max_wait, 0.001, "all records")
            t1 = time.monotonic()
        except TimeoutError:
            pass
        cpu = cpu_ns(c.pids(joiner))
        w1 = wire_bytes(c)
        lats = probe.stop() if probe else []
        if t1 is None:
            try:
                got = c.count(joiner)
            except (OSError, RuntimeError):
                got = "?"
            self.res.add(sc, f"{label}: join until complete", "s", system, f"> {max_wait:.0f} s",
                         f"timed out; the new node held {got} of {n}", run)
            log(f"  catch-up {label}, {system}, run {run}: timed out, {got} of {n}")
            return False
        self.res.add(sc, f"{label}: join until complete", "s", system, t1 - t0, None, run)
        self.res.add(sc, f"{label}: … until the first record", "s", system, t_first - t0, None, run)
        self.res.add(sc, f"{label}: … first record to last", "s", system, t1 - t_first, None, run)
        # all of the new node's CPU from its start: start-up and the poll included
        self.res.add(sc, f"{label}: receiver CPU per record", "us", system, cpu / n / 1000, None, run)
        self.res.add(sc, f"{label}: bytes on the wire per record", "B", system, (w1 - w0) / n, None, run)
        msg = (f"  catch-up {label}, {system}, run {run}: {t1 - t0:.3f} s (first record after "
               f"{t_first - t0:.3f} s), receiver {cpu / n / 1000:.2f} µs/record, {(w1 - w0) / n:.0f} B/record")
        if lats:
            before = sorted(d for t, d in lats if t < t0)
            during = sorted(d for t, d in lats if t0 <= t <= t1)
            self.res.add(sc, f"{label}: request p99 on node A while it sends them", "ms", system,
                         pct(during, 0.99) * 1000, f"{len(during)} probe requests, 1 per ms", run)
            self.res.add(sc, f"{label}: … the same probe before the join", "ms", system,
                         pct(before, 0.99) * 1000, None, run)
            msg += (f", node A p99 {pct(during, .99) * 1000:.3f} ms during ({len(during)} requests), "
                    f"{pct(before, .99) * 1000:.3f} ms before")
        log(msg)
        return True

    def catchup3(self):
        """A third node joins two that hold every record."""
        n = 200000 if self.quick else 1000000
        label = f"{nlabel(n)} records, 3 nodes"
        pairs = [(key_of("big", i), value_of(i)) for i in range(n)]
        clusters = {}
        try:
            for system in self.systems():
                log(f"catch-up, 3 nodes: loading {nlabel(n)} records into {system}")
                c = self.make(system, nodes=3, tag="three")
                clusters[system] = c
                c.start_node(0)
                c.load(pairs)
                wait_until(lambda: c.count(0) >= n, 60, 0.05, "records loaded")
                c.start_node(1)
                wait_until(lambda: c.has_all(1, n, []), 120, 0.05, "second node loaded")
            self._catchup_runs(clusters, n, label, joiner=2)
        finally:
            for c in clusters.values():
                c.stop()

    def big(self):
        """One loaded cluster per system: memory (6), catch-up of 1M with
        the request p99 on the sender (3), request-path cost (4), idle
        cost (5)."""
        n = 200000 if self.quick else 1000000
        label = f"{nlabel(n)} records"
        pairs = [(key_of("big", i), value_of(i)) for i in range(n)]
        clusters = {}
        try:
            for system in self.systems():
                log(f"loading {label} into {system}")
                c = self.make(system, nodes=2, tag="big")
                clusters[system] = c
                c.start_node(0)
                time.sleep(0.3)
                before = self._mem(system, c)
                t0, t1 = c.load(pairs)
                wait_until(lambda: c.count(0) >= n, 60, 0.05, "records loaded")
                self.res.add("3. catch-up", f"load {label} on one node (write rate)", "/s", system, n / (t1 - t0))
                after = self._mem(system, c)
                per = (after - before) / n
                what = {"zone_sync": "shared-memory bytes per record (Pss of the zone's mapping)",
                        "HAProxy": "growth of the resident set per entry",
                        "Redis": "growth of used_memory per key"}[system]
                self.res.add("6. memory", f"bytes per record at {label}", "B", system, per, what)
                self.res.add("6. memory", "… beyond key and value", "B", system, per - KV_BYTES)
                log(f"  {n / (t1 - t0):.0f} writes/s, {per:.1f} bytes per record ({what})")
            broken = self._catchup_runs(clusters, n, label, probe_key=key_of("big", n // 2), keep=True)
            for system, c in clusters.items():
                if system in broken or c.live_nodes() < 2:
                    c.start_node(1)
                    wait_until(lambda: c.has_all(1, n, []), 120, 0.2, "peer loaded")
                c.wait_online()
            self.request_path(clusters, n)
            self.idle(clusters, label, n)
        finally:
            for c in clusters.values():
                c.stop()

    def _mem(self, system, c):
        if system == "zone_sync":
            return shm_pss_bytes(c.pids(0), self._zone_kb())
        if system == "HAProxy":
            return sum(rss_kb(p) for p in c.pids(0)) * 1024
        return int(c.c(0).info("memory")["used_memory"])

    def _zone_kb(self):
        s = self.a.zone_size.lower()
        mult = {"k": 1, "m": 1024, "g": 1024 * 1024}[s[-1]]
        return int(s[:-1]) * mult

    def _pending(self, c):
        return sum(c.pending(i) for i in range(c.n) if c.master[i])

    def wait_quiet(self, clusters, what, timeout=None):
        """Until nothing is pending on our nodes and no replication link of
        any system carried more than 20 kB in each of 2 consecutive
        seconds (a snapshot streams at tens of MB/s; heartbeats are bytes).
        Bounded; returns what the links carried so far (since they were
        made)."""
        timeout = timeout or (30.0 if self.quick else 120.0)
        end = time.monotonic() + timeout
        prev = {s: wire_bytes(c) for s, c in clusters.items()}
        quiet = 0
        while quiet < 2:
            if time.monotonic() > end:
                log(f"  {what}: still not quiet after {timeout:.0f} s")
                self.res.notes[what] = f"the replication links were still busy after {timeout:.0f} s"
                break
            time.sleep(1.0)
            cur = {s: wire_bytes(c) for s, c in clusters.items()}
            busy = [s for s in cur if cur[s] - prev[s] > 20000]
            if "zone_sync" in clusters and self._pending(clusters["zone_sync"]):
                busy.append("zone_sync (records pending)")
            quiet = 0 if busy else quiet + 1
            prev = cur
        return prev

    # 4. request path

    @staticmethod
    def pin(pids, cpus):
        """Moves every thread of `pids` to `cpus` (e.g. "0", "0-1")."""
        for pid in pids:
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)],
                           capture_output=True, timeout=10)

    def wrk(self, port, path, script=None, dur=None, server=()):
        """wrk on CPU 1 (the server under test is on CPU 0). Returns
        (requests/s, CPU µs of the `server` processes per request, their
        share of one core during the run)."""
        dur = dur or (2 if self.quick else 4)
        cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{dur}s", "--timeout", "5s"]
        if script:
            cmd += ["-s", script]
        cmd.append(f"http://127.0.0.1:{port}{path}")
        cpu0, t0 = cpu_ns(server), time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 60).stdout
        cpu, wall = cpu_ns(server) - cpu0, time.monotonic() - t0
        rps = total = None
        errors = 0
        for ln in out.splitlines():
            if ln.startswith("Requests/sec:"):
                rps = float(ln.split()[1])
            if " requests in " in ln:
                total = int(ln.split()[0])
            if "Non-2xx" in ln or "Socket errors" in ln:
                errors += 1
        if rps is None or not total:
            raise RuntimeError(f"wrk printed no rate:\n{out}")
        if errors:
            log(f"  wrk reported errors: {out}")
        return rps, cpu / total / 1000, cpu / 1e9 / wall * 100

    def get_script(self, n_keys, path, count=100000):
        """GET path?key=K, K drawn at random from the loaded keys. The
        requests are made in init() (the same seed, so the same keys, for
        every path and system), so that wrk's per-request work is the
        same small step for /static and /get."""
        p = os.path.join(self.run_dir, f"wrk-get-{path.strip('/')}.lua")
        with open(p, "w") as f:
            f.write(f"""-- a random key of the {n_keys} loaded ones per request
local reqs = {{}}
local i = 0
function init(args)
  math.randomseed(12345)
  for j = 1, {count} do
    local k = "big" .. math.random(0, {n_keys - 1})
    k = k .. string.rep("-", 32 - #k)
    reqs[j] = wrk.format("GET", "{path}?key=" .. k)
  end
end
function request()
  i = i % {count} + 1
  return reqs[i]
end
""")
        return p

    def set_script(self, n_keys, path="/set"):
        p = os.path.join(self.run_dir, "wrk-set.lua")
        with open(p, "w") as f:
            f.write(f"""-- one write per request: an existing key, a new value
-- (the query of systems.set_query: nginx stores value, HAProxy n)
local n = 0
local tid = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function request()
  n = n + 1
  local i = (n * 2 + tid) % {n_keys}
  local k = "big" .. i
  k = k .. string.rep("-", 32 - #k)
  local h = string.rep(string.format("%08x", (n * 2654435761) % 4294967296), 7)
  return wrk.format("GET", string.format("{path}?key=%s&value=v%07d%s&n=%d", k, n % 10000000, h,
                                         n % 10000000 + 1))
end
""")
        return p

    def request_path(self, clusters, n):
        """wrk on CPU 1 against node A alone on CPU 0 (every other process
        of the benchmark on CPU 1), the systems taking turns run by run.
        Requests/s swing with whatever else the machine runs, so the cost
        is taken from the CPU time node A spends per request (its
        processes and threads, from schedstat): capacity per core = 1 /
        that. A lookup's cost is CPU(lookup) - CPU(plain), in µs and as a
        share of the lookup request. Plain and lookup alternate, and the
        random-key baseline sends the very same requests (keys) to the
        location without the lookup."""
        systems = [s for s in ("zone_sync", "HAProxy") if s in clusters]
        if not systems:
            return
        log("request path: " + ", ".join(systems))
        sc = "4. request path"
        if "zone_sync" in clusters:
            self.wait_quiet({"zone_sync": clusters["zone_sync"]}, "before the request path")
        key = key_of("big", n // 2)
        for s in systems:
            c = clusters[s]
            assert c.read(0, key) == value_of(n // 2), f"{s}: lookup key missing"
        wscript = self.set_script(min(n, 100000))
        rnd_plain = self.get_script(n, "/static")
        rnd_get = self.get_script(n, "/get")
        ports = {"zone_sync": lambda c: c.http[0], "HAProxy": lambda c: c.http_ports[0]}
        every = "0-%d" % (os.cpu_count() - 1)
        for c in clusters.values():
            for i in range(c.n):
                self.pin(c.pids(i), "1")
        try:
            for s in systems:
                c = clusters[s]
                self.pin(c.pids(0), "0")
                self.wrk(ports[s](c), "/static", dur=1)  # warm-up
                self.pin(c.pids(0), "1")
            for run in range(self.runs):
                for s in systems:
                    c = clusters[s]
                    port, srv = ports[s](c), c.pids(0)
                    self.pin(srv, "0")  # node A alone on CPU 0 for its turn
                    p1 = self.wrk(port, f"/static?key={key}", server=srv)
                    hot = self.wrk(port, f"/get?key={key}", server=srv)
                    p2 = self.wrk(port, f"/static?key={key}", server=srv)
                    rp1 = self.wrk(port, "/static", rnd_plain, server=srv)
                    rnd = self.wrk(port, "/get", rnd_get, server=srv)
                    rp2 = self.wrk(port, "/static", rnd_plain, server=srv)
                    write = self.wrk(port, "/set", wscript, server=srv)
                    plain = (p1[1] + p2[1]) / 2
                    rplain = (rp1[1] + rp2[1]) / 2
                    rbusy = min(rp1[2], rp2[2], rnd[2])
                    add = lambda m, u, v, note=None: self.res.add(sc, m, u, s, v, note, run)  # noqa: E731
                    add("plain location: requests/s", "/s", (p1[0] + p2[0]) / 2)
                    add("plain location: CPU per request", "us", plain)
                    add("lookup, one key: CPU per request", "us", hot[1])
                    add("lookup cost, one key", "%", (1 - plain / hot[1]) * 100)
                    add(f"random key of {nlabel(n)}, the same requests without lookup: requests/s", "/s",
                        (rp1[0] + rp2[0]) / 2)
                    add(f"random key of {nlabel(n)}: requests/s", "/s", rnd[0])
                    add(f"random key of {nlabel(n)}: CPU per request", "us", rnd[1])
                    add(f"random key of {nlabel(n)}: node A busy (least of its 3 random-key wrk runs)", "%", rbusy,
                        None if rbusy >= 90 else "below 90 %: wrk, not node A, set the pace in a run")
                    add(f"lookup cost, random key of {nlabel(n)}: CPU per lookup", "us", rnd[1] - rplain)
                    add(f"lookup cost, random key of {nlabel(n)}", "%", (1 - rplain / rnd[1]) * 100)
                    add("write per request: CPU per request", "us", write[1])
                    add("write cost", "%", (1 - plain / write[1]) * 100)
                    fmt_run = lambda r: f"{r[1]:.2f} µs ({r[0]:.0f}/s, busy {r[2]:.0f} %)"  # noqa: E731
                    log(f"  {s} run {run}: plain {fmt_run(p1)}, {fmt_run(p2)}; one key {fmt_run(hot)}; "
                        f"random: plain {fmt_run(rp1)}, {fmt_run(rp2)}, lookup {fmt_run(rnd)}; "
                        f"write {fmt_run(write)}")
                    self.pin(srv, "1")
        finally:
            for c in clusters.values():
                for i in range(c.n):
                    self.pin(c.pids(i), every)

    # 5. idle

    def idle(self, clusters, label, n):
        """CPU of every node of every system over the same windows (all
        systems at once, run after run), from schedstat; at the default
        interval, then after a reload of ours at 10ms, once the reload's
        snapshots are done."""
        window = 5.0 if self.quick else 15.0
        sc = "5. idle"

        def measure(tag):
            for run in range(self.runs):
                t0 = time.monotonic()
                before = {s: [cpu_ns(c.pids(i)) for i in range(c.n)] for s, c in clusters.items()}
                time.sleep(window)
                dt = time.monotonic() - t0
                for s, c in clusters.items():
                    after = [cpu_ns(c.pids(i)) for i in range(c.n)]
                    shares = [(a - b) / 1e9 / dt * 100 for a, b in zip(after, before[s])]
                    self.res.add(sc, f"share of one core per node, {label}, mean @ {tag}", "%", s,
                                 sum(shares) / len(shares), None, run)
                    self.res.add(sc, f"… the busiest node @ {tag}", "%", s, max(shares), None, run)
                    log(f"  idle {s} @ {tag} run {run}: " + ", ".join(f"{x:.3f} %" for x in shares))

        log(f"idle: {window:.0f} s windows")
        self.wait_quiet(clusters, "idle @ default (1s)")
        measure("default (1s)")
        if "zone_sync" in clusters:
            log("idle: zone_sync at zone_sync_interval 10ms (reload)")
            t0 = time.monotonic()
            clusters["zone_sync"].reload_interval("10ms")
            seen = self.wait_quiet(clusters, "idle @ 10ms")
            log(f"  the new connections carried {seen['zone_sync'] / 1e6:.1f} MB, quiet after "
                f"{time.monotonic() - t0:.1f} s")
            self.res.notes["idle @ 10ms"] = (
                f"after the reload the 10ms windows began once the new connections' snapshots were done "
                f"({seen['zone_sync'] / 1e6:.1f} MB on the wire, {time.monotonic() - t0:.0f} s after the HUP); "
                "HAProxy and Redis were measured again in those windows")
        measure("10ms")

    # ------------------------------------------------------------ output

    def columns(self):
        cols = [s for s in SYSTEMS if any(s in r["values"] for r in self.res.rows)]
        return cols, [s for s in cols if s != "zone_sync"]

    def table(self):
        systems, refs = self.columns()
        ours = "zone_sync" in systems
        head = ["scenario", "metric"] + systems + ([f"ours ÷ {r}" for r in refs] if ours else [])
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows = sorted(self.res.rows, key=lambda r: r["scenario"].split(".")[0])  # stable
        for r in rows:
            cells = [r["scenario"], r["metric"]]
            meds = {}
            for s in systems:
                txt, med = summary(r["values"].get(s, []), r["unit"])
                cells.append(txt)
                meds[s] = med
            if ours:
                for ref in refs:
                    a, b = meds.get("zone_sync"), meds.get(ref)
                    within = run_ratios(r, "zone_sync", ref)
                    bound = timeout_bound(r["values"].get("zone_sync", []), r["unit"])
                    if within:
                        cells.append(ratio(statistics.median(within)))
                    elif a is not None and b is not None and a >= 0 and b > 0:
                        cells.append(ratio(a / b))
                    elif a is None and bound is not None and b not in (None, 0):
                        cells.append("> " + ratio(bound / b))
                    else:
                        cells.append("—")
            lines.append("| " + " | ".join(cells) + " |")
        notes = []
        for r in self.res.rows:
            for s, note in r["notes"].items():
                notes.append(f"- {r['scenario']}, {r['metric']}, {s}: {note}")
        return "\n".join(lines), "\n".join(notes)

    def targets(self):
        """Issue 12's targets (and issue 8's still standing), against this
        run: a ratio to HAProxy is the median of the ratios within each run."""
        def row(scen, metric):
            return self.res.get(scen, metric)

        def med(scen, metric, system):
            r = row(scen, metric)
            if not r:
                return None
            vals = r["values"].get(system, [])
            for v in vals:
                if isinstance(v, str):
                    return v  # a timeout: "> 30 s"
            return statistics.median(vals) if vals else None

        def rmed(scen, metric, a="zone_sync", b="HAProxy"):
            r = row(scen, metric)
            within = run_ratios(r, a, b) if r else []
            return statistics.median(within) if within else None

        out = []

        def check(name, ok, detail):
            verdict = "not measured" if ok is None else ("met" if ok else "MISSED")
            out.append(f"| {name} | {verdict} | {detail} |")

        def cmp(v, limit, le=True):
            if v is None:
                return None
            if isinstance(v, str):
                return False
            return v <= limit if le else v >= limit

        def both(scen, metric, unit, b="HAProxy"):
            return f"ours {fmt(med(scen, metric, 'zone_sync'), unit)}, {b} {fmt(med(scen, metric, b), unit)}"

        n_big = "200k" if self.quick else "1M"
        n_tp = "20k" if self.quick else "100k"
        r = rmed("1. latency", "p50 @ default (1s)")
        check("latency p50 at defaults ≤ HAProxy's (HTTP both)", cmp(r, 1.0),
              both("1. latency", "p50 @ default (1s)", "ms") + (f"; ratio {ratio(r)}" if r else ""))
        for sfx, name in ((" @ default (1s)", "defaults"), (" @ 10ms", "zone_sync_interval 10ms")):
            v = med("2. throughput", f"lag after last write{sfx}", "zone_sync")
            check(f"lag after the last of {n_tp} writes < 100 ms ({name})", cmp(v, 100), f"ours {fmt(v, 'ms')}")
        m = f"bytes per record at {n_big} records"
        v = med("6. memory", m, "zone_sync")
        check(f"≤ 150 B of memory per record at {n_big} records (32 B keys, 64 B values)", cmp(v, 150),
              both("6. memory", m, "B") + f", Redis {fmt(med('6. memory', m, 'Redis'), 'B')}")
        m = f"{n_big} records: join until complete"
        r = rmed("3. catch-up", m)
        check(f"catch-up of {n_big} records ≤ 0.5× HAProxy's time", cmp(r, 0.5),
              both("3. catch-up", m, "s") + (f"; ratio {ratio(r)}" if r else ""))
        m = f"lookup cost, random key of {n_big}: CPU per lookup"
        r = rmed("4. request path", m)
        check(f"random-key lookup (of {n_big}) costs ≤ half of HAProxy's", cmp(r, 0.5),
              both("4. request path", m, "us") + (f"; ratio {ratio(r)}" if r else ""))
        v = med("4. request path", "lookup cost, one key", "zone_sync")
        check("keyval lookup costs < 3 % of a request (one key)", cmp(v, 3), f"ours {fmt(v, '%')}")
        m = "write rate @ default (1s)"
        r = rmed("2. throughput", m)
        rc = rmed("2. throughput", m, b="HAProxy CLI")
        check("write rate into one node ≥ HAProxy's (HTTP both)", cmp(r, 1.0, le=False),
              both("2. throughput", m, "/s") + f", HAProxy CLI {fmt(med('2. throughput', m, 'HAProxy CLI'), '/s')}"
              + (f"; ratio {ratio(r)}" if r else "") + (f" (to the CLI: {ratio(rc)})" if rc else ""))
        m = "… the busiest node @ 10ms"
        v = med("5. idle", m, "zone_sync")
        check(f"idle < 0.5 % of a core per node at 10ms, {n_big} records, expiry on", cmp(v, 0.5),
              f"busiest node: {both('5. idle', m, '%')}, Redis {fmt(med('5. idle', m, 'Redis'), '%')}")
        m = "receiver CPU per applied update @ default (1s)"
        v = med("2. throughput", m, "zone_sync")
        check(f"receiver CPU ≤ 2 µs per applied update ({n_tp} writes)", cmp(v, 2.0), both("2. throughput", m, "us"))
        m = f"{n_big} records: receiver CPU per record"
        v = med("3. catch-up", m, "zone_sync")
        check(f"… per record of a {n_big}-record snapshot", cmp(v, 2.0), both("3. catch-up", m, "us"))
        m = "… beyond key and value @ default (1s)"
        v = med("2. throughput", m, "zone_sync")
        check("≤ 24 B on the wire per update beyond key and value", cmp(v, 24), both("2. throughput", m, "B"))
        return "| target | verdict | this run |\n|---|---|---|\n" + "\n".join(out)


def machine(module):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    load = os.getloadavg()
    vers = []
    for cmd in (["haproxy", "-v"], ["redis-server", "--version"]):
        try:
            vers.append(subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0])
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    build = "?"
    try:
        import hashlib
        rev = subprocess.run(["git", "-C", TOP, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", TOP, "status", "--porcelain", "--", "src", "core"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        with open(module, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()[:12]
        build = f"commit {rev}{' + uncommitted changes in src/ or core/' if dirty else ''}, module sha256 {sha}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "build": build,
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", "versions": vers,
    }


SCENARIOS = ("latency", "throughput", "catchup", "big", "catchup3", "resume", "resume3")


def main():
    ap = argparse.ArgumentParser(
        prog="scripts/bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="scenarios (--only): latency (1.), throughput (2.), catchup (3., 100k records), "
               "big (1M records: 6. memory, 3. catch-up with the sender's request p99, 4. request "
               "path, 5. idle), catchup3 (3., a third node joins two holding 1M records), resume (7., 1,000 "
               "records changed while the link is down, against a full snapshot), resume3 (7., a reload of each node "
               "of 3 while 1,000 records change).\n"
               "Installs haproxy, redis-server and wrk when missing and builds nginx + the module "
               "when build/ lacks them (not for --help).")
    ap.add_argument("--quick", action="store_true",
                    help="20k/200k records instead of 100k/1M, short windows, latency with 2 nodes only (~4 min)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios (default: all)")
    ap.add_argument("--systems", default="zone_sync,HAProxy,Redis",
                    help="comma-separated; HAProxy includes its CLI path (default: all three)")
    ap.add_argument("--zone-size", default="512m", help="our keyval zone's size (default 512m)")
    ap.add_argument("--dir", default=os.path.join(TOP, "build", "bench"),
                    help="work directory, removed and made anew (default build/bench)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    args.systems = args.systems.split(",")
    for s in args.systems:
        if s not in ("zone_sync", "HAProxy", "Redis"):
            ap.error(f"unknown system {s!r}")
    only = args.only.split(",")
    for s in only:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    import signal
    import systems
    registry = args.dir.rstrip("/") + ".pids"
    # (redis-server rewrites its command line to "redis-server host:port")
    systems.kill_leftovers(registry, [args.dir, "redis-server 127.0.0.1:"])
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    systems.REGISTRY = registry
    with open(registry, "w"):
        pass

    # SIGTERM ends the run like Ctrl-C: every cluster is stopped on the way out
    def on_term(*_):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    # the binaries every zone_sync node of this run uses (a private copy)
    _, module = systems.private_binaries(args.dir)
    m = machine(module)
    start = time.time()
    cmdline = "scripts/bench" + ("" if len(sys.argv) < 2 else " " + " ".join(sys.argv[1:]))
    log(f"{cmdline}: {m['cores']} cores, {m['cpu']}, load {m['load']}")
    b = Bench(args)
    failed = []
    for name in SCENARIOS:
        if name not in only:
            continue
        fn = {"latency": b.latency, "throughput": b.throughput, "catchup": b.catchup_small, "big": b.big,
              "catchup3": b.catchup3, "resume": b.resume, "resume3": b.resume3}[name]
        log(f"=== {name}")
        try:
            fn()
        except KeyboardInterrupt:
            log("interrupted")
            failed.append(name)
            break
        except Exception:
            failed.append(name)
            log(f"scenario {name} failed:\n{traceback.format_exc()}")
    took = time.time() - start
    table, notes = b.table()
    end_load = os.getloadavg()
    out = [
        f"## `{cmdline}`",
        "",
        f"- machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, Linux {m['kernel']}",
        f"- load average at start: {m['load']}; at end: {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}",
        f"- zone_sync: {m['build']}",
        f"- references: {'; '.join(m['versions'])}",
        f"- {args.runs} runs per figure, systems interleaved run by run: median (min–max); "
        f"ratios: median of the ratios within each run; took {took / 60:.1f} min",
        "",
        table,
        "",
    ]
    extra = "\n".join(f"- {k}: {v}" for k, v in b.res.notes.items())
    if notes or extra:
        out += ["Notes:", "", "\n".join(x for x in (notes, extra) if x), ""]
    out += [b.targets(), ""]
    if failed:
        out += [f"FAILED scenarios: {', '.join(failed)} (see the log above)", ""]
    text = "\n".join(out)
    print(text)
    with open(os.path.join(args.dir, "results.md"), "w") as f:
        f.write(text)
    raw = {"machine": m, "cmdline": cmdline, "rows": b.res.rows, "notes": b.res.notes, "took_s": took}
    with open(args.json or os.path.join(args.dir, "results.json"), "w") as f:
        json.dump(raw, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
