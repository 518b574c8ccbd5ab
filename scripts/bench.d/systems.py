"""The three systems under test, each as a small cluster on 127.0.0.1 that
the scenarios drive through one interface:

    write(key, value)      one write on node 0
    read(node, key)        the value on a node (None when absent)
    count(node)            records on a node
    bulk_write(pairs)      as fast as the system's write path allows
    load(pairs)            fill node 0 (the same path as bulk_write)
    start_node(i) / stop_node(i)
    pids(node)             processes whose CPU and memory count
    sync_sockets()         which TCP sockets carry the replication (for ss)
    probe_args(node, key)  how scripts/bench.d/probe.py reads a key there

Every record expires: our zone has `timeout=1h`, so HAProxy's table has
`expire 1h` and every Redis write is `SET ... EX 3600`. Every write
carries the same payload: a 32-byte key and a 64-byte value (HAProxy: a
`gpt(16)` array, 16 x 32 bits = 64 bytes, written through its HTTP
frontend; its CLI writes element 0 only).

Every wait is bounded."""

import copy
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time

from clients import Http, HaproxyCli, Redis, pipeline, resp_cmd

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_TAKEN = set()


def free_ports(n, start=21000):
    """n TCP ports on 127.0.0.1 nobody listens on (checked by binding) and
    not handed out before by this process (clusters are made before any
    of them starts)."""
    out = []
    p = start + (os.getpid() * 7) % 2000
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 5000:
            raise RuntimeError("no free ports")
        p += 1
        if p > 32000:
            p = 21000
        if p in _TAKEN:
            continue
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
            out.append(p)
            _TAKEN.add(p)
        except OSError:
            pass
        finally:
            s.close()
    return out


# Every process the benchmark starts is noted in REGISTRY (pid and a
# string of its command line), so that a run killed half-way has its
# leftovers stopped by the next run (kill_leftovers), by pid only.
REGISTRY = None


def register(pid):
    if REGISTRY:
        with open(REGISTRY, "a") as f:
            f.write(f"{pid}\n")


def kill_leftovers(registry, marker):
    """Stops the processes a previous run left behind: those listed in
    `registry` whose command line still contains `marker` (the run
    directory, or a binary the benchmark started)."""
    try:
        with open(registry) as f:
            pids = [int(x) for x in f.read().split()]
    except OSError:
        return
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in marker):
            kill_wait(pid, signal.SIGTERM, timeout=10)


def wait_port(port, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def wait_until(pred, timeout, step=0.005, what="condition"):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(step)


def children(pid):
    """pid and its direct children."""
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def kill_wait(pid, sig=signal.SIGTERM, timeout=20.0):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # reap if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


# every record expires after an hour: our zone's `timeout=1h`
TTL_S = 3600


def key_of(prefix, i):
    """A 32-byte key."""
    k = f"{prefix}{i}"
    return k + "-" * (32 - len(k)) if len(k) < 32 else k[:32]


def value_of(i):
    """A 64-byte value: the record number and 56 hex digits of its hash, so
    that no system's transfer gains from compressing the values (Redis's
    RDB compresses strings with LZF; a run of zeros would shrink 10x)."""
    return f"v{i:07d}" + hashlib.blake2b(i.to_bytes(8, "little"), digest_size=28).hexdigest()


def num_of(value):
    """The record number a value_of() string carries, plus one: what HAProxy
    stores in its 32-bit gpt elements (never 0: `table_gpt` answers 0 for an
    absent key)."""
    return int(value[1:8]) + 1


def set_query(key, value):
    """The query string of every HTTP write, the same bytes for nginx and
    HAProxy: nginx stores `value`, HAProxy the number `n`."""
    return f"key={key}&value={value}&n={num_of(value)}"


def http_bulk_write(port, pairs):
    """Pipelined `GET /set?...` requests on 2 keep-alive connections, 256
    in flight on each: the write path of nginx and of HAProxy's frontend."""
    reqs = [f"GET /set?{set_query(k, v)} HTTP/1.1\r\nHost: b\r\n\r\n".encode() for k, v in pairs]
    return pipeline(port, reqs, b"\r\n\r\n", conns=2, depth=256)


# ================================================================ zone_sync


def private_binaries(run_dir):
    d = os.path.join(run_dir, "bin")
    nginx = os.path.join(d, "nginx")
    module = os.path.join(d, "ngx_stream_zone_sync_module.so")
    if not os.path.exists(module):
        os.makedirs(d, exist_ok=True)
        for src, dst in ((os.path.join(TOP, "build", "nginx"), nginx),
                         (os.path.join(TOP, "build", "ngx_stream_zone_sync_module.so"), module)):
            shutil.copy2(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)
    return nginx, module


class ZoneSync:
    name = "zone_sync"

    def __init__(self, run_dir, nodes=2, interval="1s", zone_size="512m", tag="main"):
        self.dir = os.path.join(run_dir, f"zone_sync-{tag}")
        self.n = nodes
        self.interval = interval
        self.zone_size = zone_size
        ports = free_ports(2 * nodes)
        self.http = ports[:nodes]
        self.sync = ports[nodes:]
        # Private copies: a rebuild of build/ (make build, other sessions)
        # must not change the files under a running nginx.
        self.nginx, self.module = private_binaries(run_dir)
        self.master = [None] * nodes
        self.conns = {}

    # -- processes

    def conf(self, i):
        with open(os.path.join(TOP, "nginx-conf", "bench-node.conf")) as f:
            t = f.read()
        servers = "\n".join(f"        zone_sync_server 127.0.0.1:{p};" for p in self.sync)
        d = self.node_dir(i)
        for k, v in {
            "@MODULE@": self.module,
            "@DIR@": d,
            "@INTERVAL@": self.interval,
            "@SYNC_PORT@": str(self.sync[i]),
            "@SYNC_SERVERS@": servers,
            "@ZONE_SIZE@": self.zone_size,
            "@HTTP_PORT@": str(self.http[i]),
        }.items():
            t = t.replace(k, v)
        return t

    def node_dir(self, i):
        return os.path.join(self.dir, f"node{i}")

    def start_node(self, i, wait=True):
        d = self.node_dir(i)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "logs"))
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(self.conf(i))
        subprocess.run(
            [self.nginx, "-p", d + "/", "-c", os.path.join(d, "nginx.conf"), "-e", os.path.join(d, "error.log")],
            check=True, timeout=30,
        )
        pidfile = os.path.join(d, "nginx.pid")
        wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(), 20, 0.005, "nginx.pid")
        with open(pidfile) as f:
            self.master[i] = int(f.read())
        register(self.master[i])
        if wait:
            self.wait_ready(i)

    def wait_ready(self, i):
        """Until node i answers requests."""
        wait_port(self.http[i])

    def stop_node(self, i):
        if self.master[i]:
            kill_wait(self.master[i], signal.SIGTERM)
            self.master[i] = None
        c = self.conns.pop(i, None)
        if c:
            c.close()

    def start(self):
        for i in range(self.n):
            self.start_node(i)
        self.wait_online()

    def stop(self):
        for i in range(self.n):
            self.stop_node(i)

    def reload_interval(self, interval):
        """Changes zone_sync_interval on every running node (HUP): the
        zones survive, the sync connections are made anew."""
        self.interval = interval
        for i in range(self.n):
            if not self.master[i]:
                continue
            old = set(children(self.master[i])[1:])
            with open(os.path.join(self.node_dir(i), "nginx.conf"), "w") as f:
                f.write(self.conf(i))
            os.kill(self.master[i], signal.SIGHUP)
            wait_until(lambda: (lambda k: len(k) == 2 and not (set(k) & old))(children(self.master[i])[1:]),
                       60, 0.05, "new workers after reload")
            c = self.conns.pop(i, None)
            if c:
                c.close()
        self.wait_online()

    def pids(self, i):
        return children(self.master[i]) if self.master[i] else []

    def shm_pids(self, i):
        return self.pids(i)

    # -- API

    def c(self, i):
        if i not in self.conns:
            self.conns[i] = Http(self.http[i])
        return self.conns[i]

    def status(self, i):
        import json
        st, body = self.c(i).get("/api/9/stream/zone_sync/")
        if st != 200:
            raise RuntimeError(f"zone_sync status: {st} {body[:200]!r}")
        return json.loads(body)

    def wait_online(self, timeout=30.0):
        for i in range(self.n):
            if self.master[i]:
                wait_until(lambda: self.status(i)["status"]["nodes_online"] >= self.live_nodes() - 1,
                           timeout, 0.02, f"node {i} online")

    def live_nodes(self):
        return sum(1 for m in self.master if m)

    def write(self, key, value):
        st, _ = self.c(0).get(f"/set?{set_query(key, value)}")
        if st != 204:
            raise RuntimeError(f"set: {st}")

    def read(self, i, key):
        st, body = self.c(i).get(f"/get?key={key}")
        if st != 200:
            raise RuntimeError(f"get: {st}")
        return body.decode() if body else None

    def count(self, i):
        return self.status(i)["zones"]["bench"]["records_total"]

    def pending(self, i):
        return self.status(i)["zones"]["bench"]["records_pending"]

    def bulk_write(self, pairs, node=0):
        return http_bulk_write(self.http[node], pairs)

    def load(self, pairs, node=0):
        """Pipelined writes through the `set` location. (The API's POST
        takes several keys only into an empty zone and at most 16 MiB of
        body, ~150k records, so it cannot load 1M records.)"""
        return self.bulk_write(pairs, node)

    def sync_sockets(self):
        # every sync connection once: the end on a node's listening port
        return {"sport": set(self.sync)}

    def probe_args(self, node, key):
        return ["http", str(self.http[node]), f"/get?key={key}"]

    def has_all(self, i, expected, last_keys):
        """Cheap completeness check: the keys known to arrive last are
        there, then one exact count."""
        for k in last_keys:
            if self.read(i, k) is None:
                return False
        return self.count(i) >= expected


# ================================================================ HAProxy


HAPROXY_CONF = """global
    stats socket {dir}/cli.sock mode 600 level admin
    stats timeout 10m
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m

peers cluster
{peers}

# A string key of 32 bytes and the same 64-byte payload as our records:
# 16 general-purpose tags of 32 bits. Entries expire as our zone's records
# do (timeout=1h).
backend st
    stick-table type string len 32 size {size} expire 1h store gpt(16) peers cluster

# The same locations as nginx-conf/bench-node.conf, the same requests:
# GET /set?key=K&value=V&n=N stores N in all 16 elements (HAProxy's CLI
# can set element 0 only), GET /get?key=K answers element 0 padded to the
# 64 bytes of /static, which needs no table.
frontend web
    mode http
    bind 127.0.0.1:{http_port}
    timeout client 1m
    http-request return status 200 content-type text/plain string "0123456789012345678901234567890123456789012345678901234567890123" if {{ path /static }}
    http-request return status 200 content-type text/plain lf-string "%[url_param(key),table_gpt(0,st)] 012345678901234567890123456789012345678901234567890123" if {{ path /get }}
    http-request set-var(txn.n) url_param(n) if {{ path /set }}
    http-request track-sc0 url_param(key) table st if {{ path /set }}
{set_gpts}
    http-request return status 204 if {{ path /set }}
"""

# Element 0 holds N (read back by /get and the CLI); elements 1-15 a 32-bit
# scramble of N, so that they travel as full-size integers (the peers
# protocol sends integers as varints: small ones would make HAProxy's
# payload on the wire smaller than 64 bytes).
SET_GPTS = "\n".join(
    ["    http-request set-var(txn.m) var(txn.n),mul(2654435761),and(4294967295) if { path /set }"]
    + [f"    http-request sc-set-gpt({i},0) var(txn.{'n' if i == 0 else 'm'}) if {{ path /set }}"
       for i in range(16)])


class Haproxy:
    """A HAProxy cluster: `peers` between stick tables. Writes and reads go
    through its HTTP frontend (path "http", the kind of path nginx's are);
    cli_view() is the same cluster driven through the stats socket."""

    name = "HAProxy"
    path = "http"

    def __init__(self, run_dir, nodes=2, size="2m", tag="main"):
        self.dir = os.path.join(run_dir, f"haproxy-{tag}")
        self.n = nodes
        self.size = size
        ports = free_ports(2 * nodes, start=23000)
        self.peer_ports = ports[:nodes]
        self.http_ports = ports[nodes:]
        self.proc = [None] * nodes
        self.clis = {}
        self.https = {}
        self.bin = shutil.which("haproxy") or "/usr/sbin/haproxy"

    def cli_view(self):
        """The same processes, written and read through the CLI."""
        v = copy.copy(self)  # shares proc, clis, https: one cluster
        v.name = "HAProxy CLI"
        v.path = "cli"
        return v

    def node_dir(self, i):
        return os.path.join(self.dir, f"node{i}")

    def start_node(self, i, wait=True):
        d = self.node_dir(i)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        peers = "\n".join(f"    peer n{j} 127.0.0.1:{p}" for j, p in enumerate(self.peer_ports))
        cfg = os.path.join(d, "haproxy.cfg")
        conf = HAPROXY_CONF.format(dir=d, peers=peers, size=self.size, http_port=self.http_ports[i],
                                   set_gpts=SET_GPTS)
        with open(cfg, "w") as f:
            f.write(conf)
        log = open(os.path.join(d, "haproxy.log"), "w")
        self.proc[i] = subprocess.Popen([self.bin, "-f", cfg, "-L", f"n{i}", "-db"],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        register(self.proc[i].pid)
        if wait:
            self.wait_ready(i)

    def wait_ready(self, i):
        """Until node i answers on its CLI and its HTTP frontend."""
        sock = os.path.join(self.node_dir(i), "cli.sock")
        wait_until(lambda: os.path.exists(sock), 20, 0.002, "haproxy cli socket")
        wait_until(lambda: self._try_cli(i), 20, 0.002, "haproxy cli")
        wait_port(self.http_ports[i])

    def _try_cli(self, i):
        try:
            self.cli(i)
            return True
        except OSError:
            self.clis.pop(i, None)
            return False

    def stop_node(self, i):
        for conns in (self.clis, self.https):
            c = conns.pop(i, None)
            if c:
                try:
                    c.close()
                except OSError:
                    pass
        p = self.proc[i]
        if p:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            self.proc[i] = None

    def start(self):
        for i in range(self.n):
            self.start_node(i)
        self.wait_online()

    def wait_online(self, timeout=30.0):
        # Every node sees every other peer connected.
        def ok():
            for i in range(self.n):
                if not self.proc[i]:
                    continue
                out = self.cli(i).cmd("show peers")
                if out.count("state=EST") < self.live_nodes() - 1:
                    return False
            return True
        wait_until(ok, timeout, 0.02, "haproxy peers established")

    def live_nodes(self):
        return sum(1 for p in self.proc if p)

    def stop(self):
        for i in range(self.n):
            self.stop_node(i)

    def pids(self, i):
        return children(self.proc[i].pid) if self.proc[i] else []

    def cli(self, i):
        if i not in self.clis:
            self.clis[i] = HaproxyCli(os.path.join(self.node_dir(i), "cli.sock"))
        return self.clis[i]

    def http(self, i):
        if i not in self.https:
            self.https[i] = Http(self.http_ports[i])
        return self.https[i]

    def write(self, key, value):
        if self.path == "cli":
            out = self.cli(0).cmd(f"set table st key {key} data.gpt {num_of(value)}")
            if out.strip():
                raise RuntimeError(f"set table: {out!r}")
            return
        st, _ = self.http(0).get(f"/set?{set_query(key, value)}")
        if st != 204:
            raise RuntimeError(f"haproxy /set: {st}")

    def read(self, i, key):
        """The value whose number element 0 holds, None when absent."""
        if self.path == "cli":
            out = self.cli(i).cmd(f"show table st key {key}")
            j = out.find("gpt0=")
            num = int(out[j + 5:].split()[0]) if j >= 0 else 0
        else:
            st, body = self.http(i).get(f"/get?key={key}")
            if st != 200:
                raise RuntimeError(f"haproxy /get: {st}")
            head = body.split(b" ", 1)[0]
            num = int(head) if head.isdigit() else 0
        return value_of(num - 1) if num > 0 else None

    def count(self, i):
        out = self.cli(i).cmd("show table")
        j = out.find("used:")
        return int(out[j + 5:].split()[0].strip(",")) if j >= 0 else 0

    def bulk_write(self, pairs, node=0):
        if self.path == "http":
            return http_bulk_write(self.http_ports[node], pairs)
        lines = [f"set table st key {k} data.gpt {num_of(v)}" for k, v in pairs]
        c = self.cli(node)
        t0 = time.perf_counter()
        c.pipeline(lines)
        return t0, time.perf_counter()

    load = bulk_write

    def has_all(self, i, expected, last_keys):
        return self.count(i) >= expected

    def sync_sockets(self):
        return {"sport": set(self.peer_ports)}

    def probe_args(self, node, key):
        return ["http", str(self.http_ports[node]), f"/get?key={key}"]


# ================================================================ Redis


class Redis_:
    name = "Redis"

    def __init__(self, run_dir, nodes=2, tag="main"):
        self.dir = os.path.join(run_dir, f"redis-{tag}")
        self.n = nodes
        self.ports = free_ports(nodes, start=25000)
        self.proc = [None] * nodes
        self.conns = {}
        self.bin = shutil.which("redis-server") or "/usr/bin/redis-server"

    def node_dir(self, i):
        return os.path.join(self.dir, f"node{i}")

    def start_node(self, i, wait=True):
        d = self.node_dir(i)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        args = [self.bin, "--port", str(self.ports[i]), "--bind", "127.0.0.1", "--dir", d,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                # start a full sync at once (the default waits 5 s for more
                # replicas), streamed to the replica's socket, and loaded
                # from that socket (no RDB file on the replica's disk)
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                "--repl-diskless-load", "on-empty-db",
                "--logfile", os.path.join(d, "redis.log")]
        if i > 0:
            args += ["--replicaof", "127.0.0.1", str(self.ports[0])]
        self.proc[i] = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        register(self.proc[i].pid)
        if wait:
            self.wait_ready(i)

    def wait_ready(self, i):
        wait_port(self.ports[i])

    def stop_node(self, i):
        c = self.conns.pop(i, None)
        if c:
            c.close()
        p = self.proc[i]
        if p:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            self.proc[i] = None

    def start(self):
        for i in range(self.n):
            self.start_node(i)
        self.wait_online()

    def wait_online(self, timeout=30.0):
        def ok():
            for i in range(1, self.n):
                if self.proc[i] and self.c(i).info("replication").get("master_link_status") != "up":
                    return False
            return True
        wait_until(ok, timeout, 0.02, "redis replicas up")

    def stop(self):
        for i in range(self.n):
            self.stop_node(i)

    def live_nodes(self):
        return sum(1 for p in self.proc if p)

    def pids(self, i):
        return [self.proc[i].pid] if self.proc[i] else []

    def c(self, i):
        if i not in self.conns:
            self.conns[i] = Redis(self.ports[i])
        return self.conns[i]

    def write(self, key, value):
        self.c(0).cmd("SET", key, value, "EX", TTL_S)

    def read(self, i, key):
        v = self.c(i).cmd("GET", key)
        return v.decode() if v is not None else None

    def count(self, i):
        try:
            return self.c(i).cmd("DBSIZE")
        except RuntimeError as e:  # LOADING: a replica taking in the RDB
            if "LOADING" in str(e):
                return 0
            raise

    def bulk_write(self, pairs, node=0):
        # pipelined SETs, at most 1024 unanswered
        c = self.c(node)
        t0 = time.perf_counter()
        step = 1024
        for s in range(0, len(pairs), step):
            chunk = pairs[s:s + step]
            c.sock.sendall(b"".join(resp_cmd("SET", k, v, "EX", TTL_S) for k, v in chunk))
            for _ in chunk:
                c._reply()
        return t0, time.perf_counter()

    load = bulk_write

    def has_all(self, i, expected, last_keys):
        if self.c(i).info("replication").get("master_link_status") != "up":
            return False
        return self.count(i) >= expected

    def sync_sockets(self):
        # the replica's end of its link to the master (the master's port
        # also serves the benchmark's own clients)
        return {"dport": self.ports[0], "pids": {p.pid for p in self.proc[1:] if p}}

    def probe_args(self, node, key):
        return ["redis", str(self.ports[node]), key]
