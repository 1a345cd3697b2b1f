"""One tenant's log follows must not starve another tenant (issue 13, item 6).

Before the fix every `ember logs --follow` long-poll (`GET /ember/logs/F?
wait=N`) held one of tokio's 512 blocking threads for up to 20 s: 600 of them
from account A made account B's ListFunctions take 16.5 s. Now a waiting read
holds no thread (it awaits the log writer's watermark), and one account may
have `--log-follows-per-account` (16) open at once; more get 429
TooManyRequestsException.

The latency test raises the cap so that account A really holds 600 waits:
the cap alone would hide a blocking implementation.
"""
import json
import selectors
import socket
import statistics
import time

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from conftest import create, latencies, p99

A, B = "111111111111", "222222222222"


def client(e, key):
    return boto3.client(
        "lambda", endpoint_url=e.endpoint, region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30, connect_timeout=5),
    )


def follow(e, key, function, wait):
    """Sends a signed waiting log read on a new socket; returns the socket."""
    path = f"/ember/logs/{function}?since=1m&wait={wait}"
    req = AWSRequest(method="GET", url=e.endpoint + path)
    SigV4Auth(Credentials(key["AccessKeyId"], key["SecretAccessKey"]),
              "lambda", "us-east-1").add_auth(req)
    host = e.endpoint.removeprefix("http://")
    head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    s = socket.create_connection(tuple([host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1])]),
                                 timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
    return s


def answers(socks, within):
    """{socket: (status, head+body bytes)} of the sockets answered within `within` s."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    got, bufs = {}, {s: b"" for s in socks}
    end = time.monotonic() + within
    while len(got) < len(socks) and time.monotonic() < end:
        for k, _ in sel.select(timeout=max(0.0, end - time.monotonic())):
            s = k.fileobj
            try:
                b = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                b = b""
            bufs[s] += b
            if b"\r\n\r\n" in bufs[s] or not b:
                got[s] = (int(bufs[s].split(b" ", 2)[1]) if bufs[s] else 0, bufs[s])
                sel.unregister(s)
    sel.close()
    return got


def test_600_held_follows_of_one_account_leave_another_accounts_calls_fast(make_emberd):
    e = make_emberd(["--log-follows-per-account", "1000"])
    ka, kb = e.add_key(account=A), e.add_key(account=B)
    ca, cb = client(e, ka), client(e, kb)
    create(ca, "fa")
    create(cb, "fb")
    latencies(cb, 20, time.monotonic() + 10)  # warm up the connection and the caches
    clean = latencies(cb, 300, time.monotonic() + 30)
    socks = [follow(e, ka, "fa", 20) for _ in range(600)]
    try:
        # Every follow is in and waiting (none answered yet).
        assert answers(socks, 1.0) == {}, "the 600 follows are held"
        during = latencies(cb, 300, time.monotonic() + 12)
        early = answers(socks, 0.1)
        # B's own follow is answered while A's 600 wait.
        s = follow(e, kb, "fb", 1)
        [(status, _)] = answers([s], 10).values()
        assert status == 200
        s.close()
        # A's follows end with their 200 at the end of their wait.
        done = answers(socks, 30)
    finally:
        for s in socks:
            s.close()
    # The machine's own noise once more, after the follows.
    clean_after = latencies(cb, 300, time.monotonic() + 30)
    print(f"\nB ListFunctions p99 (median): clean {p99(clean) * 1000:.1f} ms "
          f"({statistics.median(clean) * 1000:.1f}), with 600 follows of A held "
          f"{p99(during) * 1000:.1f} ms ({statistics.median(during) * 1000:.1f}, "
          f"{len(during)} calls), clean after {p99(clean_after) * 1000:.1f} ms "
          f"({statistics.median(clean_after) * 1000:.1f}); follows answered early: {len(early)}")
    # Before the fix: 16.5 s per call (every blocking thread held).
    assert len(during) == 300, f"only {len(during)} calls in 12 s"
    assert early == {}, "follows must wait their 20 s"
    # 100 ms, or twice this run's clean p99 when the shared machine is
    # itself slower than that (2 cores shared with other builds).
    bound = max(0.100, 2 * max(p99(clean), p99(clean_after)))
    assert p99(during) < bound, \
        f"p99 {p99(during) * 1000:.1f} ms (clean {p99(clean) * 1000:.1f} ms)"
    assert sorted(set(st for st, _ in done.values())) == [200], \
        sorted(set(st for st, _ in done.values()))
    assert len(done) == 600


def test_beyond_16_follows_an_account_gets_429_and_others_stay_fast(emberd):
    e = emberd
    ka, kb = e.add_key(account=A), e.add_key(account=B)
    ca, cb = client(e, ka), client(e, kb)
    create(ca, "fa")
    create(cb, "fb")
    latencies(cb, 20, time.monotonic() + 10)
    clean = latencies(cb, 300, time.monotonic() + 30)
    socks = [follow(e, ka, "fa", 20) for _ in range(600)]
    try:
        # B calls while A's 600 arrive and 584 of them are refused.
        during = latencies(cb, 300, time.monotonic() + 12)
        quick = answers(socks, 2)
        held = [s for s in socks if s not in quick]
        statuses = [st for st, _ in quick.values()]
    finally:
        for s in socks:
            s.close()
    clean_after = latencies(cb, 300, time.monotonic() + 30)
    print(f"\nB ListFunctions p99: clean {p99(clean) * 1000:.1f} ms, during A's 600 follows "
          f"{p99(during) * 1000:.1f} ms, clean after {p99(clean_after) * 1000:.1f} ms; "
          f"A: {statuses.count(429)} x 429, {len(held)} held; first {during[0] * 1000:.0f} ms, slowest {[round(x * 1000) for x in sorted(during)[-5:]]} ms")
    assert statuses.count(429) == 600 - 16, sorted(set(statuses))
    assert len(held) == 16
    body = next(b for st, b in quick.values() if st == 429)
    assert b"TooManyRequestsException" in body, body
    # Lambda's model puts the 429's retryAfterSeconds in this header.
    assert b"\r\nretry-after: 1\r\n" in body.lower(), body
    assert len(during) == 300
    noise = max(p99(clean), p99(clean_after))
    assert p99(during) < max(0.100, 2 * noise), during
    # Each refused follow is audited, durably, before its 429. One record at
    # a time (two fdatasyncs each, every caller on a blocking thread in line
    # for the log) B's call into the burst took 0.75-1.9 s; with the group
    # commit 0.06-0.37 s on the same loaded machine.
    assert max(during) < max(0.500, 3 * noise), during


def test_an_accounts_17th_concurrent_follow_gets_429(emberd):
    e = emberd
    ka, kb = e.add_key(account=A), e.add_key(account=B)
    create(client(e, ka), "fa")
    create(client(e, kb), "fb")
    first = [follow(e, ka, "fa", 3) for _ in range(16)]
    assert answers(first, 0.5) == {}, "the 16 follows are waiting"
    s17 = follow(e, ka, "fa", 3)
    t = time.monotonic()
    [(status, head)] = answers([s17], 2).values()
    assert status == 429, head
    assert time.monotonic() - t < 1.0
    assert b"x-amzn-errortype: TooManyRequestsException" in head.lower().replace(
        b"toomanyrequestsexception", b"TooManyRequestsException"), head
    payload = json.loads(head.split(b"\r\n\r\n", 1)[1] or b"{}")
    assert payload.get("Reason") == "CallerRateLimitExceeded", payload
    # Another account is not affected.
    sb = follow(e, kb, "fb", 1)
    [(status, _)] = answers([sb], 5).values()
    assert status == 200
    # Once the 16 are answered, A may follow again.
    done = answers(first, 10)
    assert sorted(st for st, _ in done.values()) == [200] * 16
    s = follow(e, ka, "fa", 1)
    [(status, _)] = answers([s], 5).values()
    assert status == 200
    for x in first + [s17, sb, s]:
        x.close()
