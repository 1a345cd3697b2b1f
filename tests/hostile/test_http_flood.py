"""One unauthenticated client must not lock everyone out (issue 13, item 2).

Before the fix: 1,100 idle or half-sent-header connections made a signed
request from another client time out (a 1,024-connection semaphore, no
header-read or idle timeout, nothing closed in 55 s), and an unauthenticated
body was read up to ~69 MiB before the 403.

Every attacker here is a bounded loop of raw sockets on loopback, from the
same address as the signed client (so the per-source cap and shedding, not a
different address, is what lets the signed client in).
"""
import json
import multiprocessing
import os
import select
import socket
import threading
import time

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from conftest import create, latencies, p99

HALF_HEAD = b"POST /2015-03-31/functions HTTP/1.1\r\nHost: emberd\r\nX-Slow: "


def host_port(e):
    host, port = e.endpoint.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def signed_client(e):
    return boto3.client(
        "lambda", endpoint_url=e.endpoint, region_name="us-east-1",
        aws_access_key_id=e.key["AccessKeyId"], aws_secret_access_key=e.key["SecretAccessKey"],
        config=Config(retries={"total_max_attempts": 1}, read_timeout=5, connect_timeout=5),
    )


def closed_by_peer(s) -> bool:
    """Whether the server closed the non-blocking `s` (EOF or reset)."""
    try:
        return s.recv(65536) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class Attacker:
    """`n` hostile connections (half silent, half trickling a request head a
    byte a second), reopened as the server closes them while `churn` is set,
    at most `max_reconnects` times and `rate` per second. A process of its
    own, so its socket loop does not slow the measuring client down."""

    def __init__(self, addr, n, max_reconnects=20_000, rate=200):
        ctx = multiprocessing.get_context("fork")
        self.addr, self.n = addr, n
        self.max_reconnects, self.rate = max_reconnects, rate
        self.churn, self.stop = ctx.Event(), ctx.Event()
        self.churn.set()
        self._opened, self._closed, self._open_now, self._failures = (
            ctx.Value("i", 0) for _ in range(4))
        self.proc = ctx.Process(target=self.run, daemon=True)

    opened = property(lambda self: self._opened.value)
    closed_by_server = property(lambda self: self._closed.value)
    connect_failures = property(lambda self: self._failures.value)

    def open_count(self):
        return self._open_now.value

    def start(self):
        self.proc.start()

    def open(self, i):
        s = socket.socket()
        s.settimeout(1.0)
        try:
            s.connect(self.addr)
            if i % 2:
                s.sendall(HALF_HEAD)
        except OSError:
            s.close()
            self._failures.value += 1
            return None
        s.setblocking(False)
        self._opened.value += 1
        return s

    def run(self):
        # The attack is the connections, not this loop's CPU: epoll wakes it
        # only for sockets the server closed, and it runs niced.
        os.nice(10)
        ep = select.epoll()
        socks = [None] * self.n
        by_fd = {}

        def place(i):
            s = self.open(i)
            socks[i] = s
            if s is not None:
                by_fd[s.fileno()] = i
                ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)

        for i in range(self.n):
            if self.stop.is_set():
                return
            place(i)
        last_trickle = last_refill = time.monotonic()
        while not self.stop.is_set():
            for fd, _ in ep.poll(0.1):
                i = by_fd.get(fd)
                if i is None or socks[i] is None or not closed_by_peer(socks[i]):
                    continue
                ep.unregister(fd)
                del by_fd[fd]
                socks[i].close()
                socks[i] = None
                self._closed.value += 1
            # Reopen at most `rate` per second.
            now = time.monotonic()
            budget = int((now - last_refill) * self.rate)
            if budget:
                last_refill = now
            if self.churn.is_set():
                for i in range(self.n):
                    if budget == 0 or self._opened.value >= self.n + self.max_reconnects:
                        break
                    if socks[i] is None:
                        budget -= 1
                        place(i)
            self._open_now.value = len(by_fd)
            if time.monotonic() - last_trickle >= 1.0:
                last_trickle = time.monotonic()
                for i, s in enumerate(socks):
                    if s is not None and i % 2:
                        try:
                            s.send(b"a")
                        except OSError:
                            pass

    def close(self):
        self.stop.set()
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()


def test_2000_hostile_connections_leave_signed_calls_fast_and_are_closed(emberd):
    e = emberd
    c = signed_client(e)
    create(c, "f1")
    clean = latencies(c, 200, time.monotonic() + 60)
    attacker = Attacker(host_port(e), 2000)
    attacker.start()
    try:
        # Wait until the 2,000 were tried (the server sheds as they arrive;
        # without the fix the accept backlog filled and connects failed).
        end = time.monotonic() + 60
        while attacker.opened + attacker.connect_failures < 2000 and time.monotonic() < end \
                and attacker.proc.is_alive():
            time.sleep(0.1)
        # A fresh client (new connections) as well as the kept-alive one.
        attacked = latencies(c, 300, time.monotonic() + 60)
        attacked += latencies(signed_client(e), 100, time.monotonic() + 30)
        assert [f["FunctionName"] for f in c.list_functions()["Functions"]] == ["f1"]
        print(f"\nsigned ListFunctions p99: clean {p99(clean) * 1000:.1f} ms "
              f"({len(clean)} calls), under attack {p99(attacked) * 1000:.1f} ms "
              f"({len(attacked)} calls); attacker opened {attacker.opened}, "
              f"server closed {attacker.closed_by_server}")
        assert len(attacked) == 400
        assert attacker.opened >= 2000, (attacker.opened, attacker.connect_failures)
        # 250 ms, or three times the clean p99 of this same run when the
        # machine itself is slower than that: without the fix the signed
        # client cannot even connect (15 s timeouts), so the bound is a
        # regression guard, not a speed target (those are benchmarks). At
        # load 8-11 here (other builds sharing the 2 cores) the attacked p99
        # was 35-151 ms with a clean p99 of 24-76 ms, for either wasm engine:
        # the old 100 ms / 2x bound failed on load alone.
        bound = max(0.250, 3 * p99(clean))
        assert p99(attacked) < bound, \
            f"p99 {p99(attacked) * 1000:.1f} ms (clean {p99(clean) * 1000:.1f} ms)"
        # The attacker stops reconnecting (but keeps trickling): the server
        # closes every hostile connection by the 10 s header deadline.
        attacker.churn.clear()
        end = time.monotonic() + 10 + 4
        while attacker.open_count() and time.monotonic() < end:
            time.sleep(0.2)
        assert attacker.open_count() == 0, f"{attacker.open_count()} hostile connections still open"
    finally:
        attacker.close()
    assert c.list_functions()["Functions"][0]["FunctionName"] == "f1"


def unauthenticated_upload(e, total, headers=b""):
    """Sends a request head announcing `total` body bytes and pushes the body
    from a thread; returns (status line, seconds to it, bytes the server let
    in before closing, seconds until the sender stopped)."""
    s = socket.create_connection(host_port(e), timeout=10)
    s.sendall(b"POST /2015-03-31/functions HTTP/1.1\r\nHost: emberd\r\n"
              b"Content-Type: application/json\r\n" + headers +
              b"Content-Length: %d\r\n\r\n" % total)
    sent = [0]
    done = [None]

    def push():
        chunk = b"x" * 65536
        t = time.monotonic()
        try:
            while sent[0] < total:
                sent[0] += s.send(chunk[: total - sent[0]])
        except OSError:
            pass
        done[0] = time.monotonic() - t

    t0 = time.monotonic()
    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(4096)
        if not b:
            break
        head += b
    took = time.monotonic() - t0
    pusher.join(timeout=30)
    s.close()
    return head.split(b"\r\n", 1)[0], head, took, sent[0], done[0]


@pytest.mark.parametrize("auth", [
    b"",
    b"Authorization: AWS4-HMAC-SHA256 Credential=AKIANOTAKEY000000000/20260101/us-east-1/lambda/"
    b"aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\nX-Amz-Date: 20260101T000000Z\r\n",
], ids=["no-credentials", "unknown-key"])
def test_an_unauthenticated_100_mib_body_is_refused_without_being_read(emberd, auth):
    total = 100 << 20
    status, head, took, sent, _ = unauthenticated_upload(emberd, total, auth)
    print(f"\n403 after {took * 1000:.1f} ms; the server let in {sent / 2**20:.1f} MiB")
    assert status.startswith(b"HTTP/1.1 403"), head
    assert b"connection: close" in head.lower(), head
    assert took < 1.0, f"403 after {took:.2f} s"
    # What got through is at most the socket buffers, not the body: before
    # the fix emberd read (and threw away) up to 64 MiB of it first.
    assert sent < 16 << 20, f"{sent / 2**20:.1f} MiB were accepted"
    assert signed_client(emberd).list_functions()["Functions"] == []


def raw_conn(e):
    s = socket.create_connection(host_port(e), timeout=15)
    return s


def wait_closed(s, within):
    """Seconds until the server closed `s` (None if it did not in `within`)."""
    t = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - t < within:
        try:
            if s.recv(65536) == b"":
                return time.monotonic() - t
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t
    return None


def test_a_silent_or_trickling_head_is_closed_at_the_header_deadline(make_emberd):
    e = make_emberd(["--http-header-timeout", "2"])
    silent = raw_conn(e)
    slowloris = raw_conn(e)
    slowloris.sendall(HALF_HEAD)
    # The slowloris keeps trickling; the head deadline counts from accept.
    t = time.monotonic()
    while time.monotonic() - t < 3.0:
        try:
            slowloris.send(b"a")
        except OSError:
            break
        time.sleep(0.3)
    assert wait_closed(silent, 1.5) is not None, "silent connection not closed by 2 s + 1.5 s"
    assert wait_closed(slowloris, 1.5) is not None, "trickling head not closed by 2 s + 1.5 s"
    assert e.raw("GET", "/2015-03-31/functions")[0] == 200


def test_a_keep_alive_connection_idles_out(make_emberd):
    e = make_emberd(["--http-idle-timeout", "2", "--metrics-no-auth-on-loopback"])
    s = raw_conn(e)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    t = time.monotonic()
    closed = wait_closed(s, 6)
    assert closed is not None, "idle keep-alive connection still open after 6 s"
    assert 1.5 < time.monotonic() - t < 4.5


def test_a_stalled_body_is_abandoned(make_emberd):
    e = make_emberd(["--http-body-timeout", "2"])
    s = raw_conn(e)
    # A valid key id (so the head passes) and no signed hash: emberd must
    # read the body before it can check the signature, and the body stalls.
    kid = e.key["AccessKeyId"]
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    s.sendall(b"POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nX-Amz-Date: %s\r\n"
              b"Authorization: AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/lambda/aws4_request, "
              b"SignedHeaders=host;x-amz-date, Signature=%s\r\n"
              b"Content-Length: 1000\r\n\r\n{\"a\":" % (now.encode(), kid.encode(), now[:8].encode(), b"0" * 64))
    t = time.monotonic()
    s.settimeout(10)
    try:
        head = s.recv(65536)
    except socket.timeout:
        head = b"(nothing in 10 s)"
    took = time.monotonic() - t
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"stalled" in head, head
    assert 1.5 < took < 5, took


def test_an_oversized_head_is_refused(emberd):
    s = raw_conn(emberd)
    s.sendall(b"GET /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 431"), "a 40 KB head must be refused"


def test_when_every_connection_is_busy_newcomers_get_503_with_retry_after(make_emberd):
    e = make_emberd(["--max-connections", "3"])
    c = signed_client(e)
    create(c, "f1")
    # Three connections in long-polls (each a request in progress).
    polls = [raw_conn(e) for _ in range(3)]
    host, port = host_port(e)
    for s in polls:
        req = AWSRequest(method="GET", url=e.endpoint + "/ember/logs/f1?wait=6")
        SigV4Auth(Credentials(e.key["AccessKeyId"], e.key["SecretAccessKey"]),
                  "lambda", "us-east-1").add_auth(req)
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        s.sendall(f"GET /ember/logs/f1?wait=6 HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n"
                  .encode())
    time.sleep(0.5)
    s = raw_conn(e)
    s.settimeout(5)
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert b"retry-after: 1" in answer.lower(), answer
    for p in polls:
        p.settimeout(15)
        assert p.recv(65536).startswith(b"HTTP/1.1 200")
    # Once the long-polls are answered their connections can be shed again.
    assert c.list_functions()["Functions"][0]["FunctionName"] == "f1"
