#!/usr/bin/env python3
"""SnapStart benchmark (issue 18): one heavy-init module
(tests/api/wat/heavyinit.wat, 250 ms in `_initialize`), five peers measured
in alternating rounds of the same run, at the boto3 client:

  snapstart  cold invoke of a SnapStart version (restore of its snapshot
             into a freshly started jailed VMM: --restore-slots 0)
  ss-slot    the same in a third emberd with --restore-slots 1: the restore
             loads into a jailed VMM started ahead (checked with
             ember_restore_slots_taken_total every round)
  ss-spare   the same in a second emberd with --snapstart-spares 1: the cold
             start takes an environment restored ahead of need (checked
             with ember_snapstart_spares_taken_total every round)
  spare      cold invoke of the same module without SnapStart, 128 MiB
             (a pre-booted spare VM takes it: Init on the critical path)
  boot       the same at 256 MiB (no spare of that size: VM boot + Init)
  warm       a second invoke right after a cold one (same environment)

For the restored spare and warm it also prints the REPORT line's Duration
(the handler's run as the agent reports it, else emberd's measure) beside the client
latency: the rest is emberd (taking the spare, the invoke over vsock) and
HTTP. Both emberds run with --idle-timeout 0, so an environment left idle is reaped
by the next maintenance pass (200 ms) and each round's first invoke is
cold; the REPORT line of every cold invoke is checked (Restore Duration vs
Init Duration), so a round that was not cold fails the run instead of
flattering a median. Prints medians, p90 and ratios, and the load average.
Usage: scripts/bench-snapstart.py [ROUNDS]   (default 15); BENCH_EMBERD_ARGS
(split on spaces) go to both emberds, e.g. "--mib-per-vcpu 0" (no CPU quota)."""
import base64
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/api"))
from conftest import Emberd, create  # noqa: E402


def module(name):
    out = os.path.join(tempfile.mkdtemp(), "m.wasm")
    subprocess.run(["wat2wasm", str(REPO / f"tests/api/wat/{name}.wat"), "-o", out], check=True)
    return open(out, "rb").read()


def timed(c, name, qualifier=None):
    args = dict(FunctionName=name, Payload=b"{}", LogType="Tail")
    if qualifier:
        args["Qualifier"] = qualifier
    t = time.perf_counter()
    r = c.invoke(**args)
    r["Payload"].read()
    ms = (time.perf_counter() - t) * 1000
    assert "FunctionError" not in r, r
    report = [l for l in base64.b64decode(r["LogResult"]).decode().splitlines()
              if l.startswith("REPORT")][-1]
    return ms, report


def snap_version(c, code):
    """Creates "snap" with SnapStart, publishes it and waits for Active."""
    create(c, "snap", code, SnapStart={"ApplyOn": "PublishedVersions"})
    v = c.publish_version(FunctionName="snap")["Version"]
    c.get_waiter("published_version_active").wait(
        FunctionName="snap", Qualifier=v, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    return v


def counter(e, name):
    status, _, body = e.raw("GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def spares_taken(e):
    return counter(e, "ember_snapstart_spares_taken_total")


def restore_ms_of(report):
    return float(report.split("Restore Duration: ")[1].split(" ms")[0])


def duration_ms(report):
    """The REPORT line's Duration (not Billed, Init or Restore Duration)."""
    return float(report.split("\tDuration: ")[1].split(" ms")[0])


def stats(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.9))]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    d = tempfile.mkdtemp(prefix="eb", dir="/tmp")
    extra = os.environ.get("BENCH_EMBERD_ARGS", "").split()
    e = Emberd(d, ["--idle-timeout", "0", "--spare-vms", "2", "--spare-mib", "128",
                   "--restore-slots", "0", *extra]).start()
    d3 = tempfile.mkdtemp(prefix="eb", dir="/tmp")
    e3 = Emberd(d3, ["--idle-timeout", "0", "--spare-vms", "0", "--restore-slots", "1",
                     *extra]).start()
    d2 = tempfile.mkdtemp(prefix="eb", dir="/tmp")
    e2 = Emberd(d2, ["--idle-timeout", "0", "--spare-vms", "0", "--snapstart-spares", "1",
                     *extra]).start()
    try:
        c = e.client()
        c2 = e2.client()
        c3 = e3.client()
        heavy = module("heavyinit")
        v = snap_version(c, heavy)
        v2 = snap_version(c2, heavy)
        v3 = snap_version(c3, heavy)
        create(c, "spare", heavy)
        create(c, "boot", heavy, MemorySize=256)
        times = {k: [] for k in ("snapstart", "ss-slot", "ss-spare", "spare", "boot", "warm")}
        restore_ms, spare_restore_ms, slot_restore_ms = [], [], []
        run_ms = {"ss-spare": [], "warm": []}
        timed(c, "snap", v)  # first restore decrypts the snapshot into tmpfs
        timed(c2, "snap", v2)  # ... and makes e2 keep a spare of the version
        timed(c3, "snap", v3)
        time.sleep(0.5)
        for _ in range(rounds):
            taken = counter(e3, "ember_restore_slots_taken_total")
            ms, rep = timed(c3, "snap", v3)
            assert "Restore Duration" in rep, rep
            assert counter(e3, "ember_restore_slots_taken_total") == taken + 1, \
                "the cold start did not take a restore slot"
            times["ss-slot"].append(ms)
            slot_restore_ms.append(restore_ms_of(rep))
            time.sleep(0.5)
            taken = spares_taken(e2)
            ms, rep = timed(c2, "snap", v2)
            assert "Restore Duration" in rep, rep
            assert spares_taken(e2) == taken + 1, "the cold start did not take a restored spare"
            times["ss-spare"].append(ms)
            run_ms["ss-spare"].append(duration_ms(rep))
            spare_restore_ms.append(restore_ms_of(rep))
            time.sleep(0.5)
            ms, rep = timed(c, "snap", v)
            assert "Restore Duration" in rep, rep
            times["snapstart"].append(ms)
            restore_ms.append(restore_ms_of(rep))
            ms, rep = timed(c, "snap", v)
            assert "Restore Duration" not in rep and "Init Duration" not in rep, rep
            times["warm"].append(ms)
            run_ms["warm"].append(duration_ms(rep))
            time.sleep(0.5)
            ms, rep = timed(c, "spare", None)
            assert "Init Duration" in rep, rep
            times["spare"].append(ms)
            time.sleep(0.5)
            ms, rep = timed(c, "boot", None)
            assert "Init Duration" in rep, rep
            times["boot"].append(ms)
            time.sleep(0.5)
        load = os.getloadavg()
        print(f"SnapStart benchmark: {rounds} alternating rounds, heavy-init module "
              f"(250 ms _initialize), boto3 client latency; {os.cpu_count()} CPUs, "
              f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        snap50, _ = stats(times["snapstart"])
        for k, label in (("snapstart", "cold, SnapStart restore"),
                         ("ss-slot", "cold, restore into a slot"),
                         ("ss-spare", "cold, restored spare"), ("spare", "cold, spare VM + Init"),
                         ("boot", "cold, VM boot + Init (256 MiB)"), ("warm", "warm")):
            p50, p90 = stats(times[k])
            print(f"  {label:<32} p50 {p50:8.2f} ms  p90 {p90:8.2f} ms  "
                  f"vs SnapStart {p50 / snap50:6.2f}x")
        for k, label in (("ss-spare", "restored spare"), ("warm", "warm")):
            d50, _ = stats(run_ms[k])
            c50, _ = stats(times[k])
            print(f"  {label}: REPORT Duration p50 {d50:.2f} ms (in the guest), "
                  f"client p50 {c50:.2f} ms, the rest (emberd + HTTP) {c50 - d50:.2f} ms")
        r50, r90 = stats(restore_ms)
        print(f"  emberd's Restore Duration (spawn -> restored agent's Ready): p50 {r50:.2f} ms, p90 {r90:.2f} ms")
        s50, s90 = stats(slot_restore_ms)
        print(f"  emberd's Restore Duration into a slot (claim -> Ready): p50 {s50:.2f} ms, "
              f"p90 {s90:.2f} ms, {s50 / r50:.2f}x of a restore without a slot (p90 {s90 / r90:.2f}x)")
        r50, r90 = stats(spare_restore_ms)
        print(f"  the spares' Restore Duration (off the critical path): p50 {r50:.2f} ms, p90 {r90:.2f} ms")
    finally:
        e.stop()
        e2.stop()
        e3.stop()


if __name__ == "__main__":
    main()
