"""scripts/bench: zone_sync against HAProxy peers and Redis replication, in
one invocation, on 127.0.0.1. See BENCHMARKS.md for what each scenario
measures; `scripts/bench --help` for the options."""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from systems import (TOP, Haproxy, Redis_, ZoneSync, children, fnv1a32, key_of,  # noqa: E402
                     value_of, wait_until, free_ports)

HZ = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- helpers


def cpu_seconds(pids):
    t = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return t / HZ


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
    """rows: (scenario, metric, unit, {system: [per-run values]}, notes)."""

    def __init__(self):
        self.rows = []
        self.notes = {}

    def add(self, scen, metric, unit, system, value, note=None):
        for r in self.rows:
            if r["scenario"] == scen and r["metric"] == metric:
                break
        else:
            r = {"scenario": scen, "metric": metric, "unit": unit, "values": {}, "notes": {}}
            self.rows.append(r)
        r["values"].setdefault(system, []).append(value)
        if note:
            r["notes"][system] = note


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
        return [s for s in ("zone_sync", "HAProxy", "Redis") if s in self.a.systems]

    def make(self, system, nodes=2, interval="1s"):
        if system == "zone_sync":
            return ZoneSync(self.run_dir, nodes=nodes, interval=interval, zone_size=self.a.zone_size)
        if system == "HAProxy":
            return Haproxy(self.run_dir, nodes=nodes)
        return Redis_(self.run_dir, nodes=nodes)

    # 1. propagation latency

    def latency(self):
        n_writes = 100 if self.quick else 500
        budget = 6.0 if self.quick else 10.0
        configs = []
        for nodes in ([2] if self.quick else [2, 3]):
            for system in self.systems():
                intervals = ["1s", "10ms"] if system == "zone_sync" else [None]
                for iv in intervals:
                    configs.append((nodes, system, iv))
        for nodes, system, iv in configs:
            label = system if iv is None else f"{system} ({iv})"
            log(f"latency: {label}, {nodes} nodes")
            c = self.make(system, nodes=nodes, interval=iv or "1s")
            try:
                c.start()
                # one warm-up write, not counted
                self._lat_one(c, key_of(f"w{nodes}", 0), value_of(0), nodes, 10.0)
                for run in range(self.runs):
                    lat = []
                    wr = []
                    timeouts = 0
                    end = time.monotonic() + budget
                    for i in range(n_writes):
                        if time.monotonic() > end:
                            break
                        k = key_of(f"l{nodes}r{run}-", i)
                        t = self._lat_one(c, k, value_of(i), nodes, 5.0)
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
                    scen = "1. latency" if nodes == 2 else "1. latency, 3 nodes (on both peers)"
                    suffix = {None: "", "1s": " @ default (1s)", "10ms": " @ 10ms"}[iv]
                    for q, name in ((0.5, "p50"), (0.99, "p99")):
                        # a reference's figure stands beside both of ours
                        for sfx in ([suffix] if iv else [" @ default (1s)", " @ 10ms"]):
                            self.res.add(scen, f"{name}{sfx}", "ms", system, pct(lat, q) * 1000, note)
                    if nodes == 2 and iv in ("1s", None):
                        # the write's own round trip, part of every figure above
                        self.res.add(scen, "p50 of the write request alone (node A answers)", "ms", system,
                                     pct(wr, 0.5) * 1000)
                    log(f"  run {run}: {len(lat)} writes, p50 {pct(lat, .5) * 1000:.3f} ms, "
                        f"p99 {pct(lat, .99) * 1000:.3f} ms")
                if nodes == 2 and iv in ("1s", None):
                    # A quiet node: one write every 1.1 s, longer than the
                    # default zone_sync_interval.
                    n_quiet = 4 if self.quick else 8
                    for run in range(self.runs):
                        lat = []
                        for i in range(n_quiet):
                            time.sleep(1.1)
                            t = self._lat_one(c, key_of(f"q{run}-", i), value_of(i), nodes, 5.0)
                            if t is not None:
                                lat.append(t)
                        lat.sort()
                        self.res.add("1. latency", "p50, quiet node (a write every 1.1 s)", "ms", system,
                                     pct(lat, 0.5) * 1000)
                        self.res.add("1. latency", "max, quiet node (a write every 1.1 s)", "ms", system,
                                     lat[-1] * 1000 if lat else "none arrived")
                        log(f"  quiet run {run}: {len(lat)} writes, p50 {pct(lat, .5) * 1000:.3f} ms")
            finally:
                c.stop()

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
        for system in self.systems():
            for iv in (["1s", "10ms"] if system == "zone_sync" else [None]):
                label = system if iv is None else f"{system} ({iv})"
                log(f"throughput: {label}, {n} writes")
                c = self.make(system, nodes=2, interval=iv or "1s")
                suffix = {None: "", "1s": " @ default (1s)", "10ms": " @ 10ms"}[iv]
                try:
                    c.start()
                    for run in range(self.runs):
                        pairs = [(key_of(f"t{run}-", i), value_of(i)) for i in range(n)]
                        expected = n * (run + 1)
                        t0, t1 = c.bulk_write(pairs)
                        rate = n / (t1 - t0)
                        # the keys written last, on each connection
                        last = [pairs[-1][0], pairs[-2][0]]
                        try:
                            wait_until(lambda: c.has_all(1, expected, last), max_lag, 0.0005,
                                       "peer holding every key")
                            lag = time.perf_counter() - t1
                            lag_v = lag * 1000
                            note = None
                        except TimeoutError:
                            got = c.count(1) - n * run
                            lag_v = f"> {max_lag:.0f} s"
                            note = f"after {max_lag:.0f} s the peer held {got} of {n}"
                            lag = None
                        for sfx in ([suffix] if iv else [" @ default (1s)", " @ 10ms"]):
                            self.res.add("2. throughput", f"write rate{sfx}", "/s", system, rate)
                            self.res.add("2. throughput", f"lag after last write{sfx}", "ms", system, lag_v, note)
                        log(f"  run {run}: {rate:.0f} writes/s, lag "
                            + (f"{lag * 1000:.1f} ms" if lag is not None else lag_v + f" ({note})"))
                        if lag is None:
                            log("  (a timed-out run is not repeated)")
                            break
                finally:
                    c.stop()

    # 3. catch-up, 5. idle, 6. memory, 4. request path: on loaded clusters

    def catchup_small(self):
        n = 20000 if self.quick else 100000
        for system in self.systems():
            log(f"catch-up: {system}, {n} records")
            c = self.make(system, nodes=2)
            try:
                c.start_node(0)
                pairs = [(key_of("s", i), value_of(i)) for i in range(n)]
                c.load(pairs)
                wait_until(lambda: c.count(0) >= n, 30, 0.01, "records loaded")
                for run in range(self.runs):
                    ok = self._catchup_run(c, system, pairs, f"{nlabel(n)} records")
                    c.stop_node(1)
                    if not ok:
                        break
            finally:
                c.stop()

    def _catchup_run(self, c, system, pairs, label, max_wait=60.0):
        n = len(pairs)
        first = last = None
        if system == "zone_sync":
            # The snapshot goes out in (FNV-1a hash, key) order: the key
            # with the largest hash arrives last, the smallest first.
            order = sorted(pairs, key=lambda kv: (fnv1a32(kv[0].encode()), kv[0].encode()))
            first, last = order[0][0], order[-1][0]
        t0 = time.perf_counter()
        c.start_node(1, wait=False)
        t_first = None
        try:
            if first is not None:
                from systems import wait_port
                wait_port(c.http[1])
                wait_until(lambda: c.read(1, first) is not None, max_wait, 0.001, "first record")
                t_first = time.perf_counter()
                wait_until(lambda: c.read(1, last) is not None, max_wait, 0.001, "last record")
                t1 = time.perf_counter()
                total = c.count(1)
                if total < n:
                    # the order assumption failed: fall back to counting
                    wait_until(lambda: c.count(1) >= n, max_wait, 0.05, "all records")
                    t1 = time.perf_counter()
            else:
                if system == "HAProxy":
                    sock = os.path.join(c.node_dir(1), "cli.sock")
                    wait_until(lambda: os.path.exists(sock) and c._try_cli(1), 20, 0.001, "cli")
                    wait_until(lambda: c.count(1) > 0, max_wait, 0.001, "first record")
                    t_first = time.perf_counter()
                    wait_until(lambda: c.count(1) >= n, max_wait, 0.001, "all records")
                else:
                    from systems import wait_port
                    wait_port(c.ports[1])
                    wait_until(lambda: c.count(1) > 0, max_wait, 0.001, "first record")
                    t_first = time.perf_counter()
                    wait_until(lambda: c.has_all(1, n, []), max_wait, 0.001, "all records")
                t1 = time.perf_counter()
            v = t1 - t0
            note = None
        except TimeoutError:
            v = f"> {max_wait:.0f} s"
            note = f"timed out; the new node held {c.count(1)} of {n}"
            t1 = None
        self.res.add("3. catch-up", f"{label}: join until complete", "s", system, v, note)
        if t_first is not None and t1 is not None:
            self.res.add("3. catch-up", f"{label}: … until the first record", "s", system, t_first - t0)
            self.res.add("3. catch-up", f"{label}: … first record to last", "s", system, t1 - t_first)
        log(f"  catch-up {label}: " + (f"{v:.3f} s (first record after {t_first - t0:.3f} s)"
                                      if t1 is not None else f"{v} ({note})"))
        return t1 is not None

    def big(self):
        """One loaded cluster per system: memory (6), catch-up of 1M (3),
        request-path cost (4), idle cost (5)."""
        n = 200000 if self.quick else 1000000
        label = f"{nlabel(n)} records"
        pairs = [(key_of("big", i), value_of(i)) for i in range(n)]
        clusters = {}
        try:
            for system in self.systems():
                log(f"loading {label} into {system}")
                c = self.make(system, nodes=2)
                clusters[system] = c
                c.start_node(0)
                time.sleep(0.3)
                before = self._mem(system, c)
                t0, t1 = c.load(pairs)
                wait_until(lambda: c.count(0) >= n, 60, 0.05, "records loaded")
                self.res.add("3. catch-up", f"load {label} on one node (write rate)", "/s", system, n / (t1 - t0))
                after = self._mem(system, c)
                per = (after - before) / n
                what = {"zone_sync": "shared-memory bytes per record",
                        "HAProxy": "resident bytes per entry",
                        "Redis": "used_memory bytes per key"}[system]
                self.res.add("6. memory", f"bytes per record at {label}", "B", system, per, what)
                if system == "zone_sync":
                    self.res.add("6. memory", "zone overhead per record beyond key and value", "B",
                                 system, per - 96)
                log(f"  {per:.1f} bytes per record ({what})")
                for run in range(self.runs):
                    ok = self._catchup_run(c, system, pairs, label, max_wait=60.0 if not self.quick else 30.0)
                    if run < self.runs - 1 or not ok:
                        c.stop_node(1)
                    if not ok:
                        break
                if c.live_nodes() < 2:
                    c.start_node(1)
                    wait_until(lambda: c.count(1) >= n, 60, 0.2, "peer loaded")
                c.wait_online()
            if "zone_sync" in clusters:
                self.request_path(clusters["zone_sync"], n)
            if "HAProxy" in clusters:
                self.request_path_haproxy(clusters["HAProxy"], n)
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

    def _settle(self, c, timeout=None):
        """Waits (bounded) until nothing is pending on any zone_sync node;
        returns what is still pending then (0 when settled)."""
        timeout = timeout or (10.0 if self.quick else 30.0)

        def pending():
            return sum(c.pending(i) for i in range(c.n) if c.master[i])
        try:
            wait_until(lambda: pending() == 0, timeout, 0.2, "sync settled")
            return 0
        except TimeoutError:
            p = pending()
            log(f"  sync not settled after {timeout:.0f} s: {p} records still pending")
            return p

    # 4. request path

    @staticmethod
    def pin(pids, cpus):
        """Moves every thread of `pids` to `cpus` (e.g. "0", "0-1")."""
        for pid in pids:
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)],
                           capture_output=True, timeout=10)

    def wrk(self, port, path, script=None, dur=None, server=()):
        """wrk on CPU 1 (the server under test is on CPU 0). Returns
        (requests/s, CPU µs of the `server` processes per request)."""
        dur = dur or (2 if self.quick else 4)
        cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{dur}s", "--timeout", "5s"]
        if script:
            cmd += ["-s", script]
        cmd.append(f"http://127.0.0.1:{port}{path}")
        cpu0 = cpu_seconds(server)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 60).stdout
        cpu = cpu_seconds(server) - cpu0
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
        return rps, cpu / total * 1e6

    def get_script(self, n_keys, path):
        """GET path?key=K with K drawn at random from the loaded keys."""
        p = os.path.join(self.run_dir, f"wrk-get-{path.strip('/')}.lua")
        with open(p, "w") as f:
            f.write(f"""-- a random key of the {n_keys} loaded ones per request
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  math.randomseed(12345 + (tid or 0))
end
function request()
  local k = "big" .. math.random(0, {n_keys - 1})
  k = k .. string.rep("-", 32 - #k)
  return wrk.format("GET", "{path}?key=" .. k)
end
""")
        return p

    def set_script(self, n_keys, path="/set"):
        p = os.path.join(self.run_dir, "wrk-set.lua")
        with open(p, "w") as f:
            f.write(f"""-- one keyval write per request: an existing key, a new value
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
  return wrk.format("GET", string.format("{path}?key=%s&value=v%063d", k, n))
end
""")
        return p

    def request_path(self, c, n):
        log("request path: zone_sync")
        self._settle(c)
        key = key_of("big", n // 2)
        assert c.read(0, key) == value_of(n // 2), "lookup key missing"
        self._request_path("zone_sync", c, c.http[0], key, n)
        self._settle(c)

    def request_path_haproxy(self, c, n):
        log("request path: HAProxy")
        key = key_of("big", n // 2)
        self._request_path("HAProxy", c, c.start_http_frontend(0), key, n)

    def _request_path(self, system, c, port, key, n):
        """wrk on CPU 1 against node 0 alone on CPU 0 (its peer on CPU 1).
        Requests/s swing with whatever else the machine runs, so the cost
        is taken from the CPU time node 0 spends per request (its master
        and workers, user + system): capacity per core = 1 / that, and a
        lookup's cost is 1 − capacity(lookup) / capacity(plain). Plain and
        lookup alternate, so drift hits both alike."""
        script = self.set_script(min(n, 100000))
        rnd_plain = self.get_script(n, "/static")
        rnd_get = self.get_script(n, "/get")
        self.pin(c.pids(0), "0")
        self.pin(c.pids(1), "1")
        sc = "4. request path"
        srv = c.pids(0)
        try:
            self.wrk(port, "/static", dur=1)  # warm-up
            for run in range(self.runs):
                # one hot key: the lookup itself
                p1 = self.wrk(port, f"/static?key={key}", server=srv)
                hot = self.wrk(port, f"/get?key={key}", server=srv)
                p2 = self.wrk(port, f"/static?key={key}", server=srv)
                # a random key per request: the lookup with cache misses
                rp1 = self.wrk(port, "/static", rnd_plain, server=srv)
                rnd = self.wrk(port, "/get", rnd_get, server=srv)
                rp2 = self.wrk(port, "/static", rnd_plain, server=srv)
                write = self.wrk(port, "/set", script, server=srv)
                plain = (p1[1] + p2[1]) / 2
                rplain = (rp1[1] + rp2[1]) / 2
                self.res.add(sc, "plain location: requests/s", "/s", system, (p1[0] + p2[0]) / 2)
                self.res.add(sc, "plain location: CPU per request", "us", system, plain)
                self.res.add(sc, "lookup, one key: CPU per request", "us", system, hot[1])
                self.res.add(sc, "lookup cost, one key", "%", system, (1 - plain / hot[1]) * 100)
                self.res.add(sc, f"lookup, random key of {nlabel(n)}: CPU per request", "us", system, rnd[1])
                self.res.add(sc, f"lookup cost, random key of {nlabel(n)}", "%", system,
                             (1 - rplain / rnd[1]) * 100)
                self.res.add(sc, "write per request: CPU per request", "us", system, write[1])
                self.res.add(sc, "write cost", "%", system, (1 - plain / write[1]) * 100)
                log(f"  run {run}: µs/request (requests/s): plain {p1[1]:.2f} ({p1[0]:.0f}) "
                    f"{p2[1]:.2f} ({p2[0]:.0f}), lookup {hot[1]:.2f} ({hot[0]:.0f}); random: plain "
                    f"{rp1[1]:.2f} {rp2[1]:.2f}, lookup {rnd[1]:.2f} ({rnd[0]:.0f}); "
                    f"write {write[1]:.2f} ({write[0]:.0f})")
        finally:
            self.pin(c.pids(0), "0-%d" % (os.cpu_count() - 1))
            self.pin(c.pids(1), "0-%d" % (os.cpu_count() - 1))

    # 5. idle

    def idle(self, clusters, label, n):
        window = 5.0 if self.quick else 15.0

        def measure(tag, only=None):
            for run in range(self.runs):
                sel = {s: c for s, c in clusters.items() if only is None or s == only}
                t0 = time.monotonic()
                before = {s: [cpu_seconds(c.pids(i)) for i in range(2)] for s, c in sel.items()}
                time.sleep(window)
                dt = time.monotonic() - t0
                for s, c in sel.items():
                    after = [cpu_seconds(c.pids(i)) for i in range(2)]
                    per_node = [(a - b) / dt * 60 for a, b in zip(after, before[s])]
                    v = sum(per_node) / len(per_node)
                    # a reference's figure stands beside both of ours
                    for sfx in ([f" @ {tag}"] if s == "zone_sync" else [" @ default (1s)", " @ 10ms"]):
                        self.res.add("5. idle", f"CPU s per minute per node, {label}{sfx}", "cpu-s/min", s, v)
                        self.res.add("5. idle", f"share of one core{sfx}", "%", s, v / 60 * 100)
                    log(f"  idle {s} @ {tag} run {run}: {v:.4f} CPU s/min per node "
                        f"(nodes: {', '.join(f'{x:.3f}' for x in per_node)})")

        log(f"idle: {window:.0f} s windows")
        if "zone_sync" in clusters:
            c = clusters["zone_sync"]
            p = self._settle(c, timeout=5.0)
            if p:
                # The steady state of a loaded cluster is nothing pending.
                # Node 0 still holds the queue of its local writes (the
                # load, the request-path writes); its peer only applied
                # what it received, and queued nothing. Restarting node 0
                # gives the same records on both nodes (node 0 catches up
                # from node 1) with nothing queued.
                log(f"  {p} records pending on node 0: restarting it to reach the steady state")
                self.res.notes["idle"] = (
                    f"node 0 still had {p} local writes queued when the idle scenario began (see 2.): "
                    "it was restarted and caught up from node 1, so the idle figures are for a "
                    "cluster that holds every record with nothing pending")
                c.stop_node(0)
                c.start_node(0)
                wait_until(lambda: c.count(0) >= n, 120, 0.5, "node 0 caught up")
                c.wait_online()
            p = self._settle(c)
            if p:
                self.res.notes[f"idle @ default (1s)"] = (
                    f"{p} records were still pending (not yet sent) when the idle windows began: "
                    "the figure includes that backlog draining")
        measure("default (1s)")
        if "zone_sync" in clusters:
            c = clusters["zone_sync"]
            log("idle: zone_sync at zone_sync_interval 10ms (reload)")
            c.reload_interval("10ms")
            p = self._settle(c)
            if p:
                self.res.notes[f"idle @ 10ms"] = (
                    f"{p} records were still pending (not yet sent) when the idle windows began: "
                    "the figure includes that backlog draining")
            time.sleep(2)
            measure("10ms", only="zone_sync")

    # ------------------------------------------------------------ output

    def table(self):
        systems = self.systems()
        refs = [s for s in systems if s != "zone_sync"]
        head = ["scenario", "metric"] + systems + [f"ours ÷ {r}" for r in refs if "zone_sync" in systems]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows = sorted(self.res.rows, key=lambda r: r["scenario"].split(".")[0])  # stable
        for r in rows:
            cells = [r["scenario"], r["metric"]]
            meds = {}
            for s in systems:
                txt, med = summary(r["values"].get(s, []), r["unit"])
                cells.append(txt)
                meds[s] = med
            if "zone_sync" in systems:
                for ref in refs:
                    a, b = meds.get("zone_sync"), meds.get(ref)
                    bound = timeout_bound(r["values"].get("zone_sync", []), r["unit"])
                    if a is not None and b not in (None, 0):
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
        """The issue's targets, checked against this run's medians."""
        def med(scen, metric, system):
            for r in self.res.rows:
                if r["scenario"] == scen and r["metric"] == metric:
                    vals = r["values"].get(system, [])
                    for v in vals:
                        if isinstance(v, str):
                            return v  # a timeout: "> 30 s"
                    return statistics.median(vals) if vals else None
            return None

        out = []

        def check(name, ok, detail):
            if ok is None:
                out.append(f"| {name} | not measured | {detail} |")
            else:
                out.append(f"| {name} | {'met' if ok else 'MISSED'} | {detail} |")

        def below(v, limit, eq=False):
            if isinstance(v, str):
                return False
            return v <= limit if eq else v < limit

        ours = med("1. latency", "p50 @ default (1s)", "zone_sync")
        hap = med("1. latency", "p50 @ default (1s)", "HAProxy")
        check("latency p50 at defaults ≤ HAProxy's",
              None if ours is None or hap is None else below(ours, hap, True),
              f"ours {fmt(ours, 'ms')}, HAProxy {fmt(hap, 'ms')}")
        lag = med("2. throughput", "lag after last write @ default (1s)", "zone_sync")
        check(f"lag after the last of {'20k' if self.quick else '100k'} writes < 100 ms (defaults)",
              None if lag is None else below(lag, 100), f"ours {fmt(lag, 'ms')}")
        lag10 = med("2. throughput", "lag after last write @ 10ms", "zone_sync")
        check("… and at zone_sync_interval 10ms", None if lag10 is None else below(lag10, 100),
              f"ours {fmt(lag10, 'ms')}")
        lbl = "1M records" if not self.quick else "200k records"
        cu = med("3. catch-up", f"{lbl}: join until complete", "zone_sync")
        cuh = med("3. catch-up", f"{lbl}: join until complete", "HAProxy")
        check(f"catch-up of {lbl} ≥ 1.5× faster than HAProxy",
              None if cu is None or cuh is None else below(cu, cuh / 1.5, True),
              f"ours {fmt(cu, 's')}, HAProxy {fmt(cuh, 's')}")
        rp = med("4. request path", "lookup cost, one key", "zone_sync")
        check("keyval lookup costs < 3 % of requests/s (one key)", None if rp is None else below(rp, 3),
              f"ours {fmt(rp, '%')}")
        n_big = "200k" if self.quick else "1M"
        rr = med("4. request path", f"lookup cost, random key of {n_big}", "zone_sync")
        check(f"… a random key of {n_big}", None if rr is None else below(rr, 3), f"ours {fmt(rr, '%')}")
        idle = med("5. idle", "share of one core @ 10ms", "zone_sync")
        check(f"idle CPU < 0.5 % of a core at 10ms, {lbl}", None if idle is None else below(idle, 0.5),
              f"ours {fmt(idle, '%')}")
        mem = med("6. memory", "zone overhead per record beyond key and value", "zone_sync")
        check("zone overhead < 128 bytes per record", None if mem is None else below(mem, 128), f"ours {fmt(mem, 'B')}")
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


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small counts, short windows (~3 min)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    ap.add_argument("--only", default="latency,throughput,catchup,big",
                    help="comma-separated: latency, throughput, catchup (100k), big (1M: memory, "
                         "catch-up, request path, idle)")
    ap.add_argument("--systems", default="zone_sync,HAProxy,Redis")
    ap.add_argument("--zone-size", default="512m")
    ap.add_argument("--dir", default=os.path.join(TOP, "build", "bench"))
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    args.systems = args.systems.split(",")
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
    only = args.only.split(",")
    failed = []
    for name in ("latency", "throughput", "catchup", "big"):
        if name not in only:
            continue
        fn = {"latency": b.latency, "throughput": b.throughput, "catchup": b.catchup_small, "big": b.big}[name]
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
        f"- {args.runs} runs per figure: median (min–max); took {took / 60:.1f} min",
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
    raw = {"machine": m, "cmdline": cmdline, "rows": b.res.rows, "took_s": took}
    with open(args.json or os.path.join(args.dir, "results.json"), "w") as f:
        json.dump(raw, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
