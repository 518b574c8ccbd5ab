"""Small, fast clients for the benchmark: HTTP/1.1 keep-alive (with
pipelining), the Redis protocol and the HAProxy CLI. Python stdlib only;
every call has a timeout."""

import select
import socket
import time

TIMEOUT = 30.0


class HttpError(Exception):
    pass


class Http:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=TIMEOUT):
        self.port = port
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self.connect()

    def connect(self):
        if self.sock:
            self.sock.close()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.buf = b""

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _fill(self):
        d = self.sock.recv(1 << 20)
        if not d:
            raise HttpError("connection closed")
        self.buf += d

    def request(self, method, path, body=None, headers=None):
        """Returns (status, body bytes)."""
        h = [f"{method} {path} HTTP/1.1", "Host: bench"]
        if body is not None:
            h.append(f"Content-Length: {len(body)}")
        for k, v in (headers or {}).items():
            h.append(f"{k}: {v}")
        data = ("\r\n".join(h) + "\r\n\r\n").encode()
        if body is not None:
            data += body
        try:
            self.sock.sendall(data)
            return self._response(method)
        except (OSError, HttpError):
            # One reconnect (e.g. nginx closed an idle keep-alive).
            self.connect()
            self.sock.sendall(data)
            return self._response(method)

    def get(self, path):
        return self.request("GET", path)

    def _response(self, method):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        chunked = False
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v.strip())
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if method == "HEAD" or status in (204, 304):
            length = 0
        self.buf = rest
        if chunked:
            return status, self._chunked()
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def _chunked(self):
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, _, self.buf = self.buf.partition(b"\r\n")
            n = int(line.split(b";")[0], 16)
            while len(self.buf) < n + 2:
                self._fill()
            out += self.buf[:n]
            self.buf = self.buf[n + 2:]
            if n == 0:
                return out


def pipeline(port, requests, terminator, conns=2, depth=256, deadline=300.0):
    """Sends `requests` (a list of bytes, each one whole request) over
    `conns` keep-alive connections, at most `depth` outstanding per
    connection, and counts the responses by `terminator` (a byte string each
    response ends with exactly once, e.g. b"\\r\\n\\r\\n" for body-less
    answers). Returns (t_first_send, t_last_response) in perf_counter time.
    """
    socks = []
    parts = [requests[i::conns] for i in range(conns)]
    state = []
    for p in parts:
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
        state.append({"reqs": p, "sent": 0, "got": 0, "out": b"", "tail": b""})
    t0 = time.perf_counter()
    end = t0 + deadline
    live = {s.fileno(): (s, st) for s, st in zip(socks, state)}
    tlen = len(terminator)
    while any(st["got"] < len(st["reqs"]) for st in state):
        if time.perf_counter() > end:
            raise TimeoutError("pipelined writes did not finish in time")
        rl, wl = [], []
        for fd, (s, st) in live.items():
            if st["got"] < len(st["reqs"]):
                rl.append(s)
            if st["out"] or (st["sent"] < len(st["reqs"]) and st["sent"] - st["got"] < depth):
                wl.append(s)
        r, w, _ = select.select(rl, wl, [], 1.0)
        for s in w:
            st = live[s.fileno()][1]
            if not st["out"]:
                n = min(depth - (st["sent"] - st["got"]), len(st["reqs"]) - st["sent"])
                st["out"] = b"".join(st["reqs"][st["sent"]:st["sent"] + n])
                st["sent"] += n
            try:
                k = s.send(st["out"])
                st["out"] = st["out"][k:]
            except BlockingIOError:
                pass
        for s in r:
            st = live[s.fileno()][1]
            try:
                d = s.recv(1 << 20)
            except BlockingIOError:
                continue
            if not d:
                raise HttpError("connection closed during pipelined writes")
            chunk = st["tail"] + d
            st["got"] += chunk.count(terminator)
            st["tail"] = chunk[-(tlen - 1):] if tlen > 1 else b""
            # a terminator split over two reads is counted once: the tail
            # keeps fewer bytes than a whole terminator
    t1 = time.perf_counter()
    for s in socks:
        s.close()
    return t0, t1


# ---------------------------------------------------------------- Redis


def resp_cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Redis:
    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(1 << 20)
            if not d:
                raise ConnectionError("redis closed")
            self.buf += d
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+",):
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                d = self.sock.recv(1 << 20)
                if not d:
                    raise ConnectionError("redis closed")
                self.buf += d
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"bad reply {line!r}")

    def cmd(self, *args):
        self.sock.sendall(resp_cmd(*args))
        return self._reply()

    def info(self, section):
        txt = self.cmd("INFO", section).decode()
        out = {}
        for ln in txt.splitlines():
            if ":" in ln:
                k, _, v = ln.partition(":")
                out[k] = v
        return out


# ---------------------------------------------------------------- HAProxy CLI


class HaproxyCli:
    """The stats socket in interactive mode ("prompt"): one connection,
    commands answered in order, each answer ending with the prompt."""

    PROMPT = b"\n> "

    def __init__(self, path, timeout=TIMEOUT):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.sock.sendall(b"prompt\n")
        self._answer()

    def close(self):
        try:
            self.sock.sendall(b"quit\n")
        except OSError:
            pass
        self.sock.close()

    def _answer(self):
        while True:
            i = self.buf.find(b"> ")
            # the prompt is "> " at the start of a line (or of the stream)
            while i != -1 and not (i == 0 or self.buf[i - 1:i] == b"\n"):
                i = self.buf.find(b"> ", i + 1)
            if i != -1:
                ans, self.buf = self.buf[:i], self.buf[i + 2:]
                return ans
            d = self.sock.recv(1 << 20)
            if not d:
                raise ConnectionError("haproxy cli closed")
            self.buf += d

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self._answer().decode(errors="replace")

    def pipeline(self, lines, depth=512, deadline=300.0):
        """Sends many commands, at most `depth` unanswered at once."""
        end = time.monotonic() + deadline
        sent = got = 0
        n = len(lines)
        while got < n:
            if time.monotonic() > end:
                raise TimeoutError("haproxy cli pipeline did not finish in time")
            if sent < n and sent - got < depth:
                k = min(depth - (sent - got), n - sent)
                self.sock.sendall(b"".join(l.encode() + b"\n" for l in lines[sent:sent + k]))
                sent += k
            self._answer()
            got += 1
