"""The soak's load and its verdict (run by scripts/soak-emberd.sh against a
throw-away emberd whose every environment runs the hostile test agent; its
`honest` handler echoes the payload, the others misbehave).

For SECONDS, at once:
- two tenants (accounts 000000000000 and 111111111111), each with
  * control-plane churn: CreateFunction with code of its own (a wasm module
    with a distinct custom section), a cold invoke of it, UpdateFunctionCode,
    DeleteFunction of about half of them;
  * synchronous invokes of a warm echo function (the response must be the
    payload);
  * asynchronous invokes (Event) of an echo function;
- one hostile client from 127.0.0.2: idle and half-sent-header connections
  kept open, and requests with bad signatures (must get 403);
- one hostile guest: invocations of functions whose guest trickles its
  Result, floods logs or announces a huge frame (each must end with its
  function error, by its deadline);
- emberd's VmRSS (from /proc) and its heap in use (the
  ember_process_heap_bytes gauge of /metrics) sampled every second.
Then, acknowledged vs found:
- every function whose create (201) or update (200) was acknowledged and
  that was not deleted serves exactly the code of its last acknowledged
  upload: GetFunction's Code.Location is fetched and compared byte for byte,
  and its CodeSha256 must be that code's; every deleted (204) one is 404;
- every event that got 202 ran exactly once: the echo function's result
  reached the function's OnSuccess destination (a local queue) exactly once
  with the event's own payload as responsePayload, and the attempt log holds
  exactly one attempt for it, a Success;
- every synchronous invoke was answered, with its payload (the cold ones
  too); every hostile-guest invoke ended with its error by its deadline;
- emberd still answers.
Prints the tallies, emberd's RSS and heap in use (start/peak/end, a sample a
minute, the least-squares slope over the whole run and over its second half,
in KiB per minute); exits 1 on any lost acknowledgement, unanswered call or
wrong answer; with --flat-kib-per-min X, when the heap's second-half slope
exceeds X (and RSS's too in runs of 300 s or more: shorter ones are still
warming up); with --rss-cap-mib N, when RSS ever exceeds N MiB.

Usage: soak-emberd.py SECONDS ENDPOINT CREDENTIALS_JSON EMBERD_PID [--flat-kib-per-min X]
       [--rss-cap-mib N] [--live-cap N (functions each tenant keeps, default 200)]"""
import base64
import hashlib
import json
import random
import socket
import statistics
import sys
import threading
import time
import http.client

import boto3
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

SECONDS, EP, CREDS, PID = float(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
OPTS = dict(zip(sys.argv[5::2], sys.argv[6::2]))
FLAT = float(OPTS["--flat-kib-per-min"]) if "--flat-kib-per-min" in OPTS else None
# Runs at least this long hold RSS (not only the heap in use) to --flat-kib-per-min.
RSS_FLAT_AFTER = 300
RSS_CAP = float(OPTS["--rss-cap-mib"]) if "--rss-cap-mib" in OPTS else None
# Functions a tenant keeps: past this, every churn round deletes one (a
# steady state, so a growing RSS is not just more live functions).
LIVE_CAP = int(OPTS.get("--live-cap", 200))
HOST = EP.removeprefix("http://")
B_ACCOUNT = "111111111111"
MODULE = b"\0asm\x01\0\0\0"
stop = threading.Event()
lock = threading.Lock()
tally = {}
problems = []


def count(what, n=1):
    with lock:
        tally[what] = tally.get(what, 0) + n


def problem(msg):
    with lock:
        problems.append(msg)
    count("PROBLEM")


def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def module(tag):
    """A wasm module with a custom section holding `tag`: a distinct blob."""
    name = b"ember-soak"
    body = leb(len(name)) + name + tag.encode()
    return MODULE + b"\x00" + leb(len(body)) + body


def keys():
    return json.load(open(CREDS))["Keys"]


def client(key):
    return boto3.client(
        "lambda", endpoint_url=EP, region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=5,
                      max_pool_connections=4))


def raw(key, method, path, body=b"", headers=None, secret=None):
    """One SigV4-signed request (with a wrong secret if `secret` is given)."""
    req = AWSRequest(method=method, url=EP + path, data=body, headers=dict(headers or {}))
    botocore.auth.SigV4Auth(Credentials(key["AccessKeyId"], secret or key["SecretAccessKey"]),
                            "lambda", "us-east-1").add_auth(req)
    conn = http.client.HTTPConnection(HOST, timeout=60)
    try:
        conn.request(method, path, body=body, headers=dict(req.headers.items()))
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def create(c, name, code, handler="honest", timeout=3):
    return c.create_function(FunctionName=name, Runtime="wasm", Handler=handler, Timeout=timeout,
                             Role="arn:aws:iam::000000000000:role/ember", MemorySize=128,
                             Code={"ZipFile": code})


def echo(c, name, payload):
    """A synchronous invoke that must be answered with its payload; raises
    when no answer came."""
    r = c.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    body = r["Payload"].read()
    if "FunctionError" in r or json.loads(body) != payload:
        problem(f"{name}: wrong answer {body[:200]!r} for {payload}")
        return False
    return True


def unanswered(what, e):
    """A call emberd did not answer (or answered with an error)."""
    detail = e.response["Error"]["Code"] if isinstance(e, ClientError) else type(e).__name__
    count(f"{what} unanswered ({detail})")
    problem(f"{what}: {detail}: {e}")


class Tenant:
    def __init__(self, tag, key):
        self.tag, self.key, self.c = tag, key, client(key)
        self.live = {}       # name -> [code]: its last acknowledged upload
        self.unsure = {}     # name -> codes it may hold (an upload whose answer never came)
        self.deleted = set()
        self.events = {}     # request id that got 202 -> its payload
        self.acked = {"create": 0, "update": 0, "delete": 0}

    def churn(self):
        n = 0
        while not stop.is_set():
            n += 1
            name = f"churn-{self.tag}-{n}"
            code = module(f"{self.tag}-{n}-{random.random()}")
            try:
                create(self.c, name, code)
                with lock:
                    self.live[name] = code
                    self.acked["create"] += 1
                count("create 201")
            except ClientError as e:
                unanswered("create", e)
                continue
            except Exception as e:  # noqa: BLE001 (no answer: unknown outcome)
                count(f"create no answer ({type(e).__name__})")
                with lock:
                    self.unsure[name] = [None, code]
                continue
            try:
                if echo(self.c, name, {"cold": n}):
                    count("cold invoke answered")
            except Exception as e:  # noqa: BLE001
                unanswered("cold invoke", e)
            if n % 3 == 0:
                new = module(f"{self.tag}-{n}-updated-{random.random()}")
                try:
                    self.c.update_function_code(FunctionName=name, ZipFile=new)
                    with lock:
                        self.live[name] = new
                        self.acked["update"] += 1
                    count("update 200")
                except ClientError as e:
                    unanswered("update", e)
                except Exception as e:  # noqa: BLE001
                    count(f"update no answer ({type(e).__name__})")
                    with lock:
                        del self.live[name]
                        self.unsure[name] = [code, new]
            if (n % 2 == 0 or len(self.live) > LIVE_CAP) and self.live:
                with lock:
                    victim = random.choice(sorted(self.live))
                try:
                    self.c.delete_function(FunctionName=victim)
                    with lock:
                        del self.live[victim]
                        self.deleted.add(victim)
                        self.acked["delete"] += 1
                    count("delete 204")
                except ClientError as e:
                    unanswered("delete", e)
                except Exception as e:  # noqa: BLE001
                    count(f"delete no answer ({type(e).__name__})")
                    with lock:
                        self.unsure[victim] = [None, self.live.pop(victim)]
            stop.wait(0.05)

    def sync_invokes(self):
        n = 0
        while not stop.is_set():
            n += 1
            count("sync invoke sent")
            try:
                if echo(self.c, "echo", {"sync": n, "t": self.tag}):
                    count("sync invoke answered")
            except Exception as e:  # noqa: BLE001
                unanswered("sync invoke", e)
            stop.wait(0.02)

    def async_invokes(self):
        n = 0
        while not stop.is_set():
            n += 1
            payload = {"event": n, "t": self.tag}
            try:
                r = self.c.invoke(FunctionName="events", InvocationType="Event",
                                  Payload=json.dumps(payload).encode())
                if r["StatusCode"] == 202:
                    with lock:
                        self.events[r["ResponseMetadata"]["RequestId"]] = payload
                    count("event 202")
                else:
                    problem(f"event answered {r['StatusCode']}")
            except ClientError as e:
                unanswered("event", e)
            except Exception as e:  # noqa: BLE001 (no answer: the event may or may not exist)
                count(f"event no answer ({type(e).__name__})")
            stop.wait(0.2)


def hostile_client(key):
    """Idle and half-header connections from 127.0.0.2, and bad signatures."""
    conns = []

    def opened():
        s = socket.create_connection((HOST.split(":")[0], int(HOST.split(":")[1])), timeout=5,
                                     source_address=("127.0.0.2", 0))
        return s

    while not stop.is_set():
        conns = [s for s in conns if s.fileno() >= 0]
        try:
            while len(conns) < 200 and not stop.is_set():
                s = opened()
                count("hostile connections opened")
                if len(conns) % 2:
                    s.sendall(b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: x\r\n")
                conns.append(s)
        except OSError:
            count("hostile connect refused")
        # Drop the ones emberd closed (timeouts) so they are reopened.
        for s in list(conns):
            try:
                s.setblocking(False)
                if s.recv(1, socket.MSG_PEEK) == b"":
                    s.close()
                    conns.remove(s)
                    count("hostile connection closed by emberd")
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                conns.remove(s)
        try:
            status, _ = raw(key, "GET", "/2015-03-31/functions/", secret="not-the-secret")
            count(f"bad signature -> {status}")
            if status != 403:
                problem(f"a bad signature got {status}")
        except OSError as e:
            count(f"bad signature error {type(e).__name__}")
        stop.wait(0.5)
    for s in conns:
        s.close()


def hostile_guest(c):
    kinds = {"h-trickle": "Sandbox.Timedout", "h-flood": "Sandbox.Timedout",
             "h-bomb": "Runtime.ExitError"}
    while not stop.is_set():
        for name, expected in kinds.items():
            if stop.is_set():
                return
            t0 = time.monotonic()
            try:
                r = c.invoke(FunctionName=name, Payload=b"{}")
                body = json.loads(r["Payload"].read())
                took = time.monotonic() - t0
                if r.get("FunctionError") != "Unhandled" or body.get("errorType") != expected:
                    problem(f"hostile guest {name}: {body}")
                elif took > 1 + 1 + 5:
                    problem(f"hostile guest {name} took {took:.1f} s")
                else:
                    count(f"hostile guest {name} cut off")
            except Exception as e:  # noqa: BLE001
                unanswered(f"hostile guest {name}", e)


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def heap_kib(key):
    """emberd's heap in use (its ember_process_heap_bytes gauge), or None."""
    try:
        status, body = raw(key, "GET", "/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("ember_process_heap_bytes "):
            return int(float(line.split()[1])) // 1024
    return None


def sampler(samples, key):
    t0 = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - t0, rss_kib(), heap_kib(key)))
        stop.wait(1.0)


def slope(points):
    """Least-squares slope of (seconds, KiB) points, in KiB per minute."""
    if len(points) < 2:
        return 0.0
    mt = statistics.fmean(t for t, _ in points)
    mv = statistics.fmean(v for _, v in points)
    var = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / var if var else 0.0


def memory_report(what, points, ran):
    """Prints start/peak/end/median and slopes; returns the second half's."""
    if not points:
        print(f"emberd {what}: no samples")
        return 0.0
    v = [kib for _, kib in points]
    s_all, s_half = slope(points), slope([p for p in points if p[0] >= ran / 2])
    print(f"emberd {what} (KiB, {len(v)} samples, 1/s): start {v[0]}, peak {max(v)}, "
          f"end {v[-1]}, median {int(statistics.median(v))}; slope {s_all:+.0f} KiB/min "
          f"over the run, {s_half:+.0f} KiB/min over its second half")
    print(f"emberd {what} each minute (KiB): "
          + ", ".join(f"{t / 60:.0f}m {kib}" for t, kib in points[::60]))
    return s_half


def paged(key, path, items, marker_in, marker_out):
    """Every item of a paginated emberd listing."""
    out, marker = [], None
    while True:
        sep = "&" if "?" in path else "?"
        status, body = raw(key, "GET", path + (f"{sep}{marker_in}={marker}" if marker else ""))
        if status != 200:
            raise RuntimeError(f"{path}: {status} {body[:200]!r}")
        v = json.loads(body)
        out += v[items]
        marker = v.get(marker_out)
        if not marker:
            return out


def deliveries(t):
    """request id -> [responsePayload] of the OnSuccess records in the
    tenant's destination queue, and request id -> [attempt results]."""
    records, attempts = {}, {}
    for m in paged(t.key, f"/ember/queues/soak-{t.tag}?MaxItems=5000", "Messages",
                   "Marker", "NextMarker"):
        b = m["Body"]
        records.setdefault(b["requestContext"]["requestId"], []).append(
            (b["requestContext"]["condition"], b.get("requestPayload"), b.get("responsePayload")))
    for a in paged(t.key, "/ember/async/attempts?MaxItems=5000", "Attempts", "After",
                   "NextAfter"):
        if a["FunctionName"] == "events":
            attempts.setdefault(a["RequestId"], []).append(a["Result"])
    return records, attempts


def check_events(t):
    """Waits (up to 180 s) for every 202'd event to settle, then lists the
    ones that did not run exactly once with their own payload."""
    end = time.monotonic() + 180
    while True:
        records, attempts = deliveries(t)
        if all(rid in records for rid in t.events) or time.monotonic() > end:
            break
        time.sleep(2)
    bad, once = [], 0
    for rid, payload in sorted(t.events.items()):
        got, tries = records.get(rid, []), attempts.get(rid, [])
        if got != [("Success", payload, payload)] or tries != ["Success"]:
            bad.append(f"{t.tag}/{rid} {payload}: destination records {got}, attempts {tries}")
        else:
            once += 1
    stray = [rid for rid in records if rid not in t.events]
    return once, bad, stray


def check_functions(t):
    """Acknowledged uploads vs the code found; acknowledged deletions."""
    found, lost = 0, []
    for name, code in sorted(t.live.items()):
        try:
            f = t.c.get_function(FunctionName=name)
        except ClientError as e:
            lost.append(f"{t.tag}/{name}: GetFunction {e.response['Error']['Code']}")
            continue
        loc = f["Code"]["Location"]
        status, body = raw(t.key, "GET", "/" + loc.split("/", 3)[3])
        sha = base64.b64encode(hashlib.sha256(code).digest()).decode()
        if status != 200 or body != code or f["Configuration"]["CodeSha256"] != sha:
            lost.append(f"{t.tag}/{name}: {status} {body[:80]!r} sha {f['Configuration']['CodeSha256']}")
        else:
            found += 1
    for name in sorted(t.deleted):
        status, _ = raw(t.key, "GET", f"/2015-03-31/functions/{name}")
        if status != 404:
            lost.append(f"{t.tag}/{name} was deleted (204) but answers {status}")
    for name, maybe in sorted(t.unsure.items()):
        status, body = raw(t.key, "GET", f"/ember/code/{name}/$LATEST")
        held = body if status == 200 else None
        if held not in maybe:
            lost.append(f"{t.tag}/{name} (no answer to its last call): {status} {body[:80]!r}")
    return found, lost


def main():
    ks = keys()
    a_key = next(k for k in ks if k["Account"] == "000000000000")
    b_key = next(k for k in ks if k["Account"] == B_ACCOUNT)
    tenants = [Tenant("a", a_key), Tenant("b", b_key)]
    for t in tenants:
        create(t.c, "echo", module(f"echo-{t.tag}"))
        create(t.c, "events", module(f"events-{t.tag}"))
        account = t.key["Account"]
        t.c.put_function_event_invoke_config(
            FunctionName="events", MaximumRetryAttempts=2,
            DestinationConfig={"OnSuccess": {
                "Destination": f"arn:aws:sqs:us-east-1:{account}:soak-{t.tag}"}})
    guest = tenants[0].c
    create(guest, "h-trickle", module("trickle"), handler="trickle-result", timeout=1)
    create(guest, "h-flood", module("flood"), handler="flood", timeout=1)
    create(guest, "h-bomb", module("bomb"), handler="bomb", timeout=1)
    samples = []
    threads = [threading.Thread(target=sampler, args=(samples, a_key)),
               threading.Thread(target=hostile_client, args=(a_key,)),
               threading.Thread(target=hostile_guest, args=(guest,))]
    for t in tenants:
        threads += [threading.Thread(target=t.churn), threading.Thread(target=t.sync_invokes),
                    threading.Thread(target=t.async_invokes)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    stop.wait(SECONDS)
    stop.set()
    for th in threads:
        th.join(timeout=120)
    ran = time.monotonic() - t0

    print(f"soak: {ran:.0f} s of mixed load against emberd pid {PID}")
    for k in sorted(tally):
        print(f"  {k}: {tally[k]}")
    lost, undelivered, stray = [], [], []
    for t in tenants:
        found, l = check_functions(t)
        lost += l
        once, bad, s = check_events(t)
        undelivered += bad
        stray += s
        a = t.acked
        print(f"tenant {t.tag} ({t.key['Account']}): acknowledged {a['create']} creates, "
              f"{a['update']} updates, {a['delete']} deletes; {len(t.live)} live functions, "
              f"{found} found with their last acknowledged code (Location bytes + CodeSha256), "
              f"{len(t.deleted)} deleted ones checked 404, {len(t.unsure)} unanswered uploads; "
              f"{len(t.events)} events 202'd, {once} ran exactly once with their payload")
    answers = raw(a_key, "GET", "/2015-03-31/functions/")[0] == 200
    sent, answered = tally.get("sync invoke sent", 0), tally.get("sync invoke answered", 0)
    print(f"sync invokes: {sent} sent, {answered} answered with their payload")
    print(f"lost acknowledgements: {len(lost)} functions, {len(undelivered)} events "
          f"(and {len(stray)} destination records of events never acknowledged)")
    rss = [(t, kib) for t, kib, _ in samples]
    heap = [(t, kib) for t, _, kib in samples if kib is not None]
    s_rss, s_heap = memory_report("RSS", rss, ran), memory_report("heap in use", heap, ran)
    for p in problems[:20]:
        print(f"  problem: {p}")
    for x in (lost + undelivered)[:20]:
        print(f"  lost: {x}")
    flat = True
    if FLAT is not None:
        # The leak detector is the heap in use: RSS also holds freed pages
        # malloc keeps, cached thread stacks and code, and climbs with each
        # new peak of concurrent requests for the first minutes of a run
        # (a running maximum, not a leak), so only a long run's RSS is held
        # to the same slope.
        if len(heap) < len(rss) / 2:
            print(f"  heap in use unreadable ({len(heap)} of {len(rss)} samples from /metrics)")
            flat = False
        elif s_heap > FLAT:
            print(f"  heap in use not flat: {s_heap:+.0f} KiB/min over the second half (limit {FLAT})")
            flat = False
        if ran >= RSS_FLAT_AFTER and s_rss > FLAT:
            print(f"  RSS not flat: {s_rss:+.0f} KiB/min over the second half (limit {FLAT})")
            flat = False
    if RSS_CAP is not None and rss and max(k for _, k in rss) > RSS_CAP * 1024:
        print(f"  RSS peak {max(k for _, k in rss)} KiB over the cap of {RSS_CAP} MiB")
        flat = False
    ok = not lost and not undelivered and not problems and answers and flat
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
