"""fcgishim's WSGI runner: serves one WSGI application over HTTP/1.1 on a
private unix socket, for mysite.fcgi's proxy and nothing else.

It trusts the forwarding headers our proxy writes (X-Real-Ip,
X-Forwarded-Proto, X-Forwarded-Prefix, X-Remote-User): the proxy removes the
client's own copies. That is why it listens on a unix socket only, never on TCP.

The master imports the app, binds the socket, then forks the workers (the
app's modules are shared copy-on-write) and restarts a worker that dies.
Each worker is one thread: a selector loop over the listening socket and its
keep-alive connections, one request at a time. SIGTERM: the master passes it
on; a worker finishes the request in hand, then exits.

A connection belongs to the worker that has it, so a slow request would
hold up the requests queued behind it on that worker's other connections.
Each worker therefore has a watchdog thread: once the request in hand has
run for HANDOFF_AFTER, the worker's other connections (idle, or with a
request waiting in the kernel's buffer) are passed (SCM_RIGHTS) to a worker
that is free, which serves them from then on.

Workers join as the load needs them (Steering): the first always accepts
connections; worker k accepts only while the workers before it are busy
nearly all the time and the machine has a CPU to spare, and the busy ones
then close a connection now and then so that the proxy's next one can land
on it. On a small machine one Python process that never sleeps beside the
web server serves light pages faster than two that share both CPUs with it;
pages heavy enough to saturate it get the second.

Standard library only, Python 3.7 or later.
"""

import array
import errno
import gc
import importlib
import io
import mmap
import os
import select
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from urllib.parse import unquote_to_bytes

MAX_HEADER = 1 << 20  # the proxy's own default limit on a request header
MEMORY_BODY = 1 << 20  # larger bodies are spooled to a temporary file
IO_TIMEOUT = 60.0  # one read or write of a request in progress
IDLE_TIMEOUT = 300.0  # an idle keep-alive connection
HEADER_TIMEOUT = 30.0  # a request header that never completes
HANDOFF_AFTER = 0.05  # a request in hand this long: the worker's other connections move
HANDOFF_TICK = 0.02  # how often the watchdog looks while the worker is busy
HANDOFF_BATCH = 64  # descriptors per SCM_RIGHTS message
HOP_BY_HOP = frozenset(("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                        "proxy-connection", "proxy-authenticate", "proxy-authorization"))
# Byte classes for bytes.translate(None, ok): what is left over is not ok.
TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TARGET = bytes(range(33, 127))
HEAD = b"\t\r\n" + bytes(range(32, 127)) + bytes(range(128, 256))
NO_BODY_STATUS = ("1", "204", "304")


def log(msg):
    sys.stderr.write("wsgi[%d]: %s\n" % (os.getpid(), msg))
    sys.stderr.flush()


class BadRequest(Exception):
    """The request cannot be understood: answer 400 and close."""


class Closed(Exception):
    """The peer went away or timed out mid-request: close quietly."""


def parse_args(argv):
    opts = {"socket": "", "app": "", "workers": 0, "strip_prefix": False, "spare": "0.5"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--strip-prefix":
            opts["strip_prefix"] = True
            i += 1
            continue
        if a not in ("--socket", "--app", "--workers", "--spare") or i + 1 >= len(argv):
            raise SystemExit("wsgi runner: unknown or incomplete argument %r" % a)
        opts[a[2:]] = argv[i + 1]
        i += 2
    if not opts["socket"].startswith("/"):
        raise SystemExit("wsgi runner: --socket wants the absolute path of a unix socket (TCP is refused: "
                         "the runner trusts its peer's forwarding headers)")
    if not opts["app"]:
        raise SystemExit("wsgi runner: --app module[:callable] is required")
    try:
        opts["workers"] = int(opts["workers"])
        opts["spare"] = float(opts["spare"])  # idle CPUs a worker needs to join (see Steering)
    except ValueError:
        raise SystemExit("wsgi runner: --workers and --spare want numbers, got %r, %r" % (opts["workers"], opts["spare"]))
    if opts["workers"] <= 0:
        # One per CPU, and at least two, so that a slow request's neighbours
        # have a worker to be handed to.
        try:
            opts["workers"] = max(2, len(os.sched_getaffinity(0)))
        except AttributeError:
            opts["workers"] = max(2, os.cpu_count() or 1)
    return opts


def load_app(spec):
    module, _, name = spec.partition(":")
    obj = importlib.import_module(module)
    for part in (name or "application").split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise SystemExit("wsgi runner: %s is not callable" % spec)
    return obj


def wait(sock, event):
    """Waits up to IO_TIMEOUT until sock is ready for event (select.POLLIN
    or POLLOUT), else Closed. Connections are non-blocking: a socket with a
    timeout would make Python poll before every recv and send."""
    p = select.poll()
    p.register(sock, event)
    if not p.poll(IO_TIMEOUT * 1000):
        raise Closed()


def send(sock, data):
    """Sends all of data on the non-blocking sock, or Closed."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except BlockingIOError:
            wait(sock, select.POLLOUT)
            continue
        except OSError as e:
            raise Closed() from e
        view = view[n:]


class FileWrapper:
    """wsgi.file_wrapper: a file sent in blocks of at least 64 KiB (Django
    asks for 4 KiB), closed with the response."""

    def __init__(self, f, block_size=65536):
        self.f = f
        self.block_size = max(block_size, 65536)

    def __iter__(self):
        while True:
            data = self.f.read(self.block_size)
            if not data:
                return
            yield data

    def close(self):
        if hasattr(self.f, "close"):
            self.f.close()


class Conn:
    """One keep-alive connection from the proxy and its unread bytes."""

    __slots__ = ("sock", "buf", "last", "served", "gone")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.last = time.monotonic()
        self.served = 0
        self.gone = False  # dropped, or handed to another worker

    def fill(self, block=True):
        """Reads what is there, waiting up to IO_TIMEOUT for it if block;
        returns False at EOF, None when nothing came and not block."""
        while True:
            try:
                data = self.sock.recv(65536)
                break
            except BlockingIOError:
                if not block:
                    return None
                wait(self.sock, select.POLLIN)
            except OSError as e:
                raise Closed() from e
        if not data:
            return False
        self.buf += data
        return True

    def read(self, n):
        """Exactly n bytes, or Closed."""
        while len(self.buf) < n:
            if not self.fill():
                raise Closed()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def readline(self, limit):
        """One CRLF-terminated line without its CRLF."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            if len(self.buf) > limit:
                raise BadRequest("line too long")
            if not self.fill():
                raise Closed()


def parse_head(head):
    """The request line and header fields (bytes without the blank line) →
    (method, target, version, [(NAME, value)]). Names with "_" are dropped."""
    # Control bytes, and a CR or LF that is not part of a CRLF, anywhere in
    # the header: checked once for all lines.
    crlf = head.count(b"\r\n")
    if head.translate(None, HEAD) or head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        raise BadRequest("control byte in the request header")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method, target, version = parts
    if not method or method.translate(None, TOKEN):
        raise BadRequest("malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest("unsupported version")
    if not target.startswith(b"/") or target.translate(None, TARGET):
        raise BadRequest("malformed target")
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name:
            raise BadRequest("malformed header line")
        if name.translate(None, TOKEN):
            raise BadRequest("malformed header name")  # also obs-fold: a leading space or tab
        value = value.strip(b" \t")
        if b"_" in name:
            continue
        fields.append((name.decode("latin-1").upper().replace("-", "_"), value.decode("latin-1")))
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii"), fields


class Shared:
    """What the workers know of each other, in memory shared by the fork:
    per worker slot, the seconds it has spent answering requests, whether
    it accepts connections, since when it answers the one in hand (0:
    none), and whether it is running. Each slot is written by its worker
    only (and cleared by the master when the worker is gone)."""

    SLOT = 32

    def __init__(self, n):
        self.n = n
        self.mem = mmap.mmap(-1, self.SLOT * n)

    def begin(self, i, now):
        struct.pack_into("d", self.mem, self.SLOT * i + 16, now)

    def end(self, i, now):
        off = self.SLOT * i
        total, _, since = struct.unpack_from("ddd", self.mem, off)
        # "Not in a request" first: a reader in between sees the worker
        # less busy than it was, never busier.
        struct.pack_into("d", self.mem, off + 16, 0.0)
        struct.pack_into("d", self.mem, off, total + now - since)

    def busy(self, i, now):
        """Seconds worker i has been busy, up to now."""
        total, _, since = struct.unpack_from("ddd", self.mem, self.SLOT * i)
        return total + (now - since if since else 0.0)

    def set_accepting(self, i, on):
        struct.pack_into("d", self.mem, self.SLOT * i + 8, 1.0 if on else 0.0)

    def reset(self, i):
        """Worker i is gone: not accepting, not in a request, not running."""
        struct.pack_into("ddd", self.mem, self.SLOT * i + 8, 0.0, 0.0, 0.0)

    def set_alive(self, i):
        struct.pack_into("d", self.mem, self.SLOT * i + 24, 1.0)

    def free(self, i):
        """Whether worker i is running and not answering a request."""
        _, since, alive = struct.unpack_from("ddd", self.mem, self.SLOT * i + 8)
        return alive != 0.0 and since == 0.0

    def accepting(self, i):
        return struct.unpack_from("d", self.mem, self.SLOT * i + 8)[0] != 0.0


def idle_cpus_counter():
    """(idle ticks, all ticks) of the machine, from /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0, 0
    ticks = [int(x) for x in fields]
    return ticks[3] + (ticks[4] if len(ticks) > 4 else 0), sum(ticks)


class Steering:
    """When worker `index` accepts connections (see the module's doc). It
    looks every STEP seconds at the busy time of the workers before it and
    at the machine's idle CPUs."""

    STEP = 0.2
    SATURATED = 0.85  # busy fraction at which a worker counts as saturated
    RECYCLE = 32  # requests on a connection before a saturated worker closes it

    def __init__(self, shared, index, spare):
        self.shared, self.index, self.spare = shared, index, spare
        self.last = time.monotonic()
        self.last_busy = [shared.busy(j, self.last) for j in range(shared.n)]
        self.last_idle = idle_cpus_counter()
        self.cpus = os.cpu_count() or 1
        self.others_join = False  # a later worker accepts: recycle connections

    def rates(self, now):
        """Busy fractions of every worker and idle CPUs since the last look."""
        dt = max(now - self.last, 1e-3)
        busy = [self.shared.busy(j, now) for j in range(self.shared.n)]
        rates = [(b - a) / dt for a, b in zip(self.last_busy, busy)]
        idle = idle_cpus_counter()
        d_idle, d_all = idle[0] - self.last_idle[0], idle[1] - self.last_idle[1]
        idle_cpus = d_idle / d_all * self.cpus if d_all > 0 else 0.0
        self.last, self.last_busy, self.last_idle = now, busy, idle
        return rates, idle_cpus

    def decide(self, now, accepting):
        """Whether to accept from now on (worker 0: always)."""
        self.others_join = any(self.shared.accepting(j) for j in range(self.index + 1, self.shared.n))
        if self.index == 0:
            return True
        rates, idle_cpus = self.rates(now)
        before = rates[:self.index]
        if not accepting:
            return all(r >= self.SATURATED for r in before) and idle_cpus >= self.spare
        # Stop when the load would fit in the workers before it, with room.
        return sum(rates[:self.index + 1]) >= self.index * self.SATURATED - 0.25


class Worker:
    def __init__(self, app, listener, opts, shared=None, index=0, inboxes=None):
        self.app = app
        self.listener = listener
        # inboxes[j]: (receiving end, sending end) of worker j's datagram
        # socket pair, over which other workers hand it connections.
        self.inboxes = inboxes or []
        # The main thread holds lock whenever it uses the selector or the
        # connection table, and lets it go only while it answers a request
        # (current); the watchdog takes it to hand connections away.
        self.lock = threading.RLock()
        self.current = None  # the connection whose request is in hand
        self.current_since = 0.0
        self.handed = 0.0  # current_since of the last request handed off
        self.busy = threading.Event()  # set while the watchdog should look
        self.strip_prefix = opts["strip_prefix"]
        self.stopping = False
        self.shared = shared or Shared(1)
        self.index = index
        self.steering = Steering(self.shared, index, opts["spare"])
        self.accepting = False
        self.sel = selectors.DefaultSelector()
        self.conns = {}
        self.base = {
            "wsgi.version": (1, 0), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": "fcgishim-wsgi",
        }

    def stop(self, signum, frame):
        self.stopping = True

    def run(self):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        self.sel.register(rfd, selectors.EVENT_READ)
        inbox = None
        if len(self.inboxes) > 1:
            inbox = self.inboxes[self.index][0]
            inbox.setblocking(False)
            self.sel.register(inbox, selectors.EVENT_READ)
            threading.Thread(target=self.watch, name="handoff", daemon=True).start()
        self.listener.setblocking(False)
        self.lock.acquire()
        self.set_accepting(self.index == 0)
        self.shared.set_alive(self.index)
        parent = os.getppid()
        last_sweep = last_steer = time.monotonic()
        deferred = False
        while not self.stopping:
            # A worker waiting to join looks often; one that accepts is woken
            # by its connections anyway.
            self.lock.release()
            events = self.sel.select(1.0 if self.accepting else Steering.STEP)
            self.lock.acquire()
            # A worker with requests waiting leaves a new connection, once,
            # to a worker blocked in select (all of them are woken): the
            # connection goes to whoever has time for it.
            queued = len(events) > 1 and not deferred
            deferred = False
            if inbox is not None:
                self.spread(events)
            for key, _ in events:
                if key.fileobj is self.listener:
                    if queued:
                        deferred = True
                    else:
                        self.accept()
                elif key.fileobj == rfd:
                    try:
                        os.read(rfd, 512)
                    except OSError:
                        pass
                elif key.fileobj is inbox:
                    self.adopt(inbox)
                elif not key.data.gone:
                    self.serve(key.data)
                if self.stopping:
                    break
            now = time.monotonic()
            if now - last_steer >= Steering.STEP:
                last_steer = now
                self.set_accepting(self.steering.decide(now, self.accepting))
            if now - last_sweep >= 1.0:
                last_sweep = now
                if os.getppid() != parent:
                    break  # the master is gone
                self.sweep(now)
        for c in list(self.conns.values()):
            self.drop(c)
        self.lock.release()

    def watch(self):
        """The watchdog: while the worker answers a request that has run for
        HANDOFF_AFTER, hands its other connections to a free worker. It
        sleeps on busy while the worker is idle, so an idle site costs no
        wake-ups."""
        while not self.stopping:
            self.busy.wait()
            time.sleep(HANDOFF_TICK)
            c, since = self.current, self.current_since
            if c is None:
                self.busy.clear()
                if self.current is not None:
                    self.busy.set()  # a request began in between
                continue
            if time.monotonic() - since >= HANDOFF_AFTER:
                self.hand_off(c, since)

    def hand_off(self, c, since):
        """Once per slow request: passes every connection but c that has no
        unread bytes of ours to the first free worker, which also starts
        accepting (new connections would otherwise wait in the backlog for
        this one)."""
        with self.lock:
            if self.current is not c or self.handed == since:
                return  # the request ended meanwhile, or was dealt with
            target = self.free_peer(False)
            if target is None:
                return  # nobody is free: look again at the next tick
            if self.pass_conns(target, [x for x in self.conns.values() if x is not c and not x.buf]):
                self.handed = since

    def spread(self, events):
        """With requests waiting on more than one connection, all but the
        first go to a worker that accepts connections and is free now, so
        that a busy worker's queue does not wait while another idles."""
        ready = [key.data for key, _ in events if isinstance(key.data, Conn) and not key.data.buf]
        if len(ready) > 1:
            target = self.free_peer(True)
            if target is not None:
                self.pass_conns(target, ready[1:])

    def free_peer(self, accepting):
        """The first other worker that is running and not answering a
        request (and, if accepting, takes connections), or None."""
        for j in range(len(self.inboxes)):
            if j != self.index and self.shared.free(j) and (not accepting or self.shared.accepting(j)):
                return j
        return None

    def pass_conns(self, target, conns):
        """Passes conns to worker target (with none, asks it to accept);
        returns whether it got them all."""
        out = self.inboxes[target][1]
        try:
            if not conns:
                out.send(b"a")
            for i in range(0, len(conns), HANDOFF_BATCH):
                batch = conns[i:i + HANDOFF_BATCH]
                fds = array.array("i", [x.sock.fileno() for x in batch])
                out.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                for x in batch:
                    self.drop(x)  # the other worker has its own descriptor now
        except OSError:
            return False  # its queue is full, or it is gone: try again later
        return True

    def adopt(self, inbox):
        """Takes the connections another worker handed over, and accepts
        new ones until Steering says the load fits in fewer workers."""
        self.set_accepting(True)
        space = socket.CMSG_SPACE(HANDOFF_BATCH * array.array("i").itemsize)
        while True:
            try:
                _, ancdata, _, _ = inbox.recvmsg(1, space)
            except (BlockingIOError, InterruptedError):
                return
            for level, kind, data in ancdata:
                if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS:
                    continue
                fds = array.array("i")
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                for fd in fds:
                    self.add(socket.socket(fileno=fd))

    def set_accepting(self, on):
        """Starts or stops accepting connections. A worker that stops ends
        each of its connections with its next response (closing an idle one
        could race with a request the proxy is sending on it)."""
        if on == self.accepting:
            return
        self.accepting = on
        self.shared.set_accepting(self.index, on)
        if on:
            self.sel.register(self.listener, selectors.EVENT_READ)
            return
        self.sel.unregister(self.listener)

    def accept(self):
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker won it
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log("accept: %s" % e)
                return
            raise
        self.add(sock)

    def add(self, sock):
        sock.setblocking(False)
        c = Conn(sock)
        self.conns[sock.fileno()] = c
        self.sel.register(sock, selectors.EVENT_READ, c)

    def sweep(self, now):
        for c in list(self.conns.values()):
            limit = HEADER_TIMEOUT if c.buf else IDLE_TIMEOUT
            if now - c.last > limit:
                self.drop(c)

    def drop(self, c):
        with self.lock:
            c.gone = True
            fd = c.sock.fileno()
            if self.conns.pop(fd, None) is not None:
                self.sel.unregister(c.sock)
            c.sock.close()

    def serve(self, c):
        """Reads what is waiting on c, then answers every complete request
        in its buffer; keeps c for the next one unless it must close."""
        try:
            got = c.fill(block=False)
            if got is None:
                return  # woken for nothing
            if not got:
                self.drop(c)
                return
            c.last = time.monotonic()
            self.shared.begin(self.index, c.last)
            self.current, self.current_since = c, c.last
            self.lock.release()
            try:
                if not self.busy.is_set():
                    self.busy.set()
                self.answer(c)
            finally:
                self.lock.acquire()
                self.current = None
                self.shared.end(self.index, time.monotonic())
        except BadRequest as e:
            self.reject(c, str(e))
        except Closed:
            self.drop(c)
        except Exception:
            log("serving a connection failed:\n" + traceback.format_exc())
            self.drop(c)

    def answer(self, c):
        """Answers every complete request in c's buffer."""
        while True:
            end = c.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(c.buf) > MAX_HEADER:
                    raise BadRequest("request header too large")
                return  # wait for the rest of the header
            if end > MAX_HEADER:
                raise BadRequest("request header too large")
            head, c.buf = c.buf[:end], c.buf[end + 4:]
            if not self.handle(c, head) or self.stopping:
                self.drop(c)
                return
            if not c.buf:
                return

    def reject(self, c, why):
        body = ("Bad Request: %s\n" % why).encode()
        try:
            send(c.sock, b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))
        except Closed:
            pass
        self.drop(c)

    def handle(self, c, head):
        """Answers one request; returns whether the connection stays open."""
        method, target, version, fields = parse_head(head)
        env = self.environ(method, target, version, fields)
        keep = version == "HTTP/1.1"
        conn_hdr = env.get("HTTP_CONNECTION", "").lower()
        if "close" in conn_hdr:
            keep = False
        elif "keep-alive" in conn_hdr and version == "HTTP/1.0":
            keep = True
        c.served += 1
        if not self.accepting or self.steering.others_join and c.served % Steering.RECYCLE == 0:
            keep = False  # the proxy's next connection may go to a worker with time to spare
        env["wsgi.input"] = self.read_body(c, env)
        return Response(c.sock, env, keep, self).run(self.app)

    def environ(self, method, target, version, fields):
        env = dict(self.base)
        path, _, query = target.partition("?")
        env["REQUEST_METHOD"] = method
        env["RAW_URI"] = env["REQUEST_URI"] = target
        env["QUERY_STRING"] = query
        env["SERVER_PROTOCOL"] = version
        for name, value in fields:
            if name in ("CONTENT_LENGTH", "CONTENT_TYPE"):
                if name in env and env[name] != value:
                    raise BadRequest("conflicting " + name.replace("_", "-"))
                env[name] = value
                continue
            key = "HTTP_" + name
            if key in env:
                value = env[key] + ("; " if name == "COOKIE" else ",") + value
            env[key] = value
        env["REMOTE_ADDR"] = env.get("HTTP_X_REAL_IP", "")
        if "HTTP_X_REMOTE_USER" in env:  # the web server's authenticated user
            env["REMOTE_USER"] = env["HTTP_X_REMOTE_USER"]
        scheme = env.get("HTTP_X_FORWARDED_PROTO", "http")
        env["wsgi.url_scheme"] = scheme if scheme in ("http", "https") else "http"
        if env["wsgi.url_scheme"] == "https":
            env["HTTPS"] = "on"
        host = env.get("HTTP_HOST", "")
        name, port = host, ""
        if host.startswith("["):
            end = host.find("]")
            name, port = host[:end + 1], host[end + 2:] if host[end + 1:end + 2] == ":" else ""
        elif ":" in host:
            name, _, port = host.rpartition(":")
        env["SERVER_NAME"] = name or "localhost"
        env["SERVER_PORT"] = port or ("443" if env["wsgi.url_scheme"] == "https" else "80")
        path = unquote_to_bytes(path).decode("latin-1")
        prefix = "" if self.strip_prefix else env.get("HTTP_X_FORWARDED_PREFIX", "").rstrip("/")
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            env["SCRIPT_NAME"], env["PATH_INFO"] = prefix, path[len(prefix):]
        else:
            env["SCRIPT_NAME"], env["PATH_INFO"] = "", path
        return env

    def read_body(self, c, env):
        if "HTTP_TRANSFER_ENCODING" in env:
            if env["HTTP_TRANSFER_ENCODING"].lower() != "chunked" or "CONTENT_LENGTH" in env:
                raise BadRequest("unsupported Transfer-Encoding")
            body = self.read_chunked(c)
            env["CONTENT_LENGTH"] = str(body.seek(0, io.SEEK_END))
            body.seek(0)
            return body
        cl = env.get("CONTENT_LENGTH", "")
        if not cl:
            return io.BytesIO(b"")
        if not cl.isdigit() or not cl.isascii() or len(cl) > 18:
            raise BadRequest("malformed Content-Length")
        n = int(cl)
        if n <= MEMORY_BODY:
            return io.BytesIO(c.read(n))
        body = tempfile.TemporaryFile()
        while n > 0:
            piece = c.read(min(n, 65536))
            body.write(piece)
            n -= len(piece)
        body.seek(0)
        return body

    def read_chunked(self, c):
        body = io.BytesIO()
        total = 0
        while True:
            line = c.readline(4096)
            size = line.split(b";", 1)[0].strip(b" \t")
            if not size or len(size) > 15 or any(ch not in b"0123456789abcdefABCDEF" for ch in size):
                raise BadRequest("malformed chunk size")
            n = int(size, 16)
            if n == 0:
                break
            if total + n > MEMORY_BODY and isinstance(body, io.BytesIO):
                spool = tempfile.TemporaryFile()
                spool.write(body.getvalue())
                body = spool
            body.write(c.read(n))
            total += n
            if c.read(2) != b"\r\n":
                raise BadRequest("malformed chunk")
        while c.readline(8192):  # trailer fields: ignored
            pass
        return body


class Response:
    """One response: start_response, the body's framing, the writes."""

    def __init__(self, sock, env, keep, worker):
        self.sock = sock
        self.worker = worker  # its stopping flag: the last response says Connection: close
        self.env = env
        self.keep = keep
        self.head_only = env["REQUEST_METHOD"] == "HEAD"
        self.status = None
        self.headers = None
        self.sent = False
        self.chunked = False
        self.length = None  # the app's Content-Length, if any
        self.written = 0

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise ValueError("malformed status %r" % (status,))
        self.status, self.headers = status, headers
        return self.write

    def head(self, body_len):
        """The response header; body_len is the length when known here."""
        out = ["HTTP/1.1 ", self.status, "\r\n"]
        no_body = self.status.startswith(NO_BODY_STATUS)
        if no_body:
            self.head_only = True  # 1xx, 204 and 304 have no body, whatever the app gives
        if self.worker.stopping:
            self.keep = False
        for name, value in self.headers:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("header %r: name and value must be str" % (name,))
            if not name or ":" in name or "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError("header %r: malformed" % (name,))
            low = name.lower()
            if low in HOP_BY_HOP:
                continue
            if low == "content-length":
                if not value.strip().isdigit():
                    raise ValueError("Content-Length %r is not a number" % (value,))
                self.length = int(value)
            out += (name, ": ", value, "\r\n")
        if self.length is None and not no_body:
            if body_len is not None:
                self.length = body_len
                out += ("Content-Length: ", str(body_len), "\r\n")
            elif self.env["SERVER_PROTOCOL"] == "HTTP/1.1" and not self.head_only:
                self.chunked = True
                out.append("Transfer-Encoding: chunked\r\n")
            elif not self.head_only:
                self.keep = False  # the end of the body is the end of the connection
        if not self.keep:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        return "".join(out).encode("latin-1")

    def write(self, data, body_len=None):
        """Sends a piece of the body (and the header before the first)."""
        if self.status is None:
            raise AssertionError("write before start_response")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("the body must be bytes, got %s" % type(data).__name__)
        out = b""
        if not self.sent:
            out = self.head(body_len)
            self.sent = True
        if data and not self.head_only:
            if self.length is not None and self.written + len(data) > self.length:
                data = data[:self.length - self.written]
                self.keep = False
            self.written += len(data)
            if self.chunked:
                out += b"%x\r\n%s\r\n" % (len(data), data)
            else:
                out += data
        if out:
            send(self.sock, out)

    def run(self, app):
        """Calls the app and sends its answer; returns whether to keep the
        connection. An exception before the header went out is a 500."""
        body = None
        try:
            body = app(self.env, self.start_response)
            if isinstance(body, (list, tuple)) and len(body) <= 1:
                data = body[0] if body else b""
                self.write(data, len(data))
            else:
                for data in body:
                    if data:
                        self.write(data)
                if not self.sent:
                    self.write(b"", 0 if self.env["SERVER_PROTOCOL"] == "HTTP/1.1" else None)
            if self.chunked:
                send(self.sock, b"0\r\n\r\n")
            if self.length is not None and self.written != self.length and not self.head_only:
                self.keep = False  # the app sent less than it announced
        except Closed:
            return False
        except Exception:
            self.fail()
            return False
        finally:
            if hasattr(body, "close"):
                try:
                    body.close()
                except Exception:
                    log("close() of the response failed:\n" + traceback.format_exc())
        return self.keep

    def fail(self):
        env = self.env
        log("%s %s: the app raised:\n%s" % (env["REQUEST_METHOD"], env["SCRIPT_NAME"] + env["PATH_INFO"],
                                            traceback.format_exc()))
        if self.sent:
            return  # too late for a 500: closing the connection tells the proxy
        body = b"Internal Server Error\n"
        try:
            send(self.sock, b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        except Closed:
            pass


class Master:
    def __init__(self, app, listener, opts):
        self.app, self.listener, self.opts = app, listener, opts
        self.shared = Shared(opts["workers"])
        self.inboxes = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(opts["workers"])]
        for _, out in self.inboxes:
            out.setblocking(False)
        self.children = {}  # pid → (start time, worker index)
        self.stopping = False

    def stop(self, signum, frame):
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    def spawn(self, index):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                Worker(self.app, self.listener, self.opts, self.shared, index, self.inboxes).run()
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = (time.monotonic(), index)

    def run(self):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if hasattr(gc, "freeze"):
            gc.freeze()  # the app's objects stay shared with the workers
        for index in range(self.opts["workers"]):
            self.spawn(index)
        failures = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            child = self.children.pop(pid, None)
            if child is None or self.stopping:
                continue
            started, index = child
            self.shared.reset(index)
            log("worker %d exited (status %d); starting another" % (pid, status))
            failures = failures + 1 if time.monotonic() - started < 5 else 0
            if failures:
                time.sleep(min(0.1 * (2 ** min(failures, 6)), 5.0))
            if not self.stopping:
                self.spawn(index)


def main(argv):
    opts = parse_args(argv)
    # sys.path[0] is the runner's own directory (the private runtime
    # directory); the app's directory takes its place, as gunicorn --chdir.
    sys.path[0] = os.getcwd()
    app = load_app(opts["app"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(opts["socket"])
    except FileNotFoundError:
        pass
    listener.bind(opts["socket"])
    listener.listen(1024)
    log("serving %s on %s with %d worker(s)" % (opts["app"], opts["socket"], opts["workers"]))
    Master(app, listener, opts).run()


if __name__ == "__main__":
    main(sys.argv[1:])
