"""GET /metrics on a real emberd with real microVMs: the Prometheus text
exposition is parsed with the reference parser (prometheus_client), and the
numbers are checked against what the test did."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import create, wait_for, wasm

pytestmark = pytest.mark.vm


def scrape(emberd):
    """(families by name, {(sample name, sorted labels): value})."""
    status, headers, body = emberd.raw("GET", "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    families = {}
    samples = {}
    for fam in text_string_to_metric_families(body.decode()):
        assert fam.name not in families, f"family {fam.name} declared twice"
        families[fam.name] = fam
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def check_histograms(families):
    """Every histogram series: buckets non-decreasing in `le`, the +Inf
    bucket equal to _count, and a non-negative _sum."""
    checked = 0
    for fam in families.values():
        if fam.type != "histogram":
            continue
        series = {}
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k != "le"}
            key = tuple(sorted(labels.items()))
            entry = series.setdefault(key, {"buckets": []})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                entry["count"] = s.value
            elif s.name.endswith("_sum"):
                entry["sum"] = s.value
        for key, e in series.items():
            bounds = [le for le, _ in e["buckets"]]
            counts = [n for _, n in e["buckets"]]
            assert bounds == sorted(bounds) and bounds[-1] == float("inf"), (fam.name, key)
            assert counts == sorted(counts), f"{fam.name}{key}: buckets not monotone {counts}"
            assert counts[-1] == e["count"], (fam.name, key)
            assert e["sum"] >= 0, (fam.name, key)
            checked += 1
    return checked


def invoke(c, name, payload, **kw):
    r = c.invoke(FunctionName=name, Payload=json.dumps(payload).encode(), **kw)
    return r, r["Payload"].read()


def test_host_metrics_environments_boot_time_and_rss(emberd):
    c = emberd.client()
    create(c, "hostm", wasm("echo"))
    r, _ = invoke(c, "hostm", {"a": 1})
    env_id = r["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"]
    families, samples = scrape(emberd)
    for name in ["ember_environments", "ember_vmm_boot_seconds", "ember_vmm_rss_bytes",
                 "ember_provisioned_concurrency_utilization"]:
        assert name in families, sorted(families)
    envs = emberd.envs()
    for state in ["starting", "idle", "busy", "stopping"]:
        expected = sum(1 for e in envs if e["State"] == state)
        assert value(samples, "ember_environments", state=state) == expected, state
    assert value(samples, "ember_environments", state="idle") >= 1
    assert value(samples, "ember_vmm_boot_seconds_count") >= 1
    rss = value(samples, "ember_vmm_rss_bytes", function="hostm", version="$LATEST",
                environment=env_id)
    assert rss is not None and rss > 1 << 20, rss
    assert check_histograms(families) >= 1


def test_counts_match_the_invocations_made(emberd):
    c = emberd.client()
    create(c, "cnt", wasm("echo"))
    create(c, "failing", wasm("fail"))
    for i in range(5):
        r, body = invoke(c, "cnt", {"i": i})
        assert "FunctionError" not in r and json.loads(body) == {"i": i}
    c.publish_version(FunctionName="cnt")
    for _ in range(2):
        invoke(c, "cnt", {}, Qualifier="1")
    for _ in range(3):
        r, _ = invoke(c, "failing", {})
        assert r.get("FunctionError") == "Unhandled"
    families, samples = scrape(emberd)
    expected = {("cnt", "$LATEST"): (5, 0), ("cnt", "1"): (2, 0), ("failing", "$LATEST"): (3, 3)}
    for (fn, ver), (calls, errors) in expected.items():
        labels = dict(function=fn, version=ver)
        assert value(samples, "ember_invocations_total", **labels) == calls, labels
        assert value(samples, "ember_errors_total", **labels) == errors, labels
        assert value(samples, "ember_throttles_total", **labels) == 0, labels
        assert value(samples, "ember_duration_seconds_count", **labels) == calls, labels
        assert value(samples, "ember_concurrent_executions", **labels) == 0, labels
    # Sequential calls reuse one warm environment: exactly one cold start each.
    for ver in ["$LATEST", "1"]:
        assert value(samples, "ember_init_duration_seconds_count", function="cnt", version=ver) == 1
    assert check_histograms(families) >= 3 * 3
    # Deleting a function drops its series (its environment's RSS series
    # goes once the retired VM has stopped).
    c.delete_function(FunctionName="failing")
    gone = lambda: not [k for k in scrape(emberd)[1] if ("function", "failing") in k[1]]
    assert wait_for(gone, timeout=60), scrape(emberd)[1]
    _, samples = scrape(emberd)
    assert value(samples, "ember_invocations_total", function="cnt", version="$LATEST") == 5


def test_throttles_and_concurrent_executions(emberd):
    c = emberd.client()
    create(c, "slowm", wasm("slow"))
    c.put_function_concurrency(FunctionName="slowm", ReservedConcurrentExecutions=1)
    running = dict(function="slowm", version="$LATEST")
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(invoke, c, "slowm", {})
        # The gauge shows the call while it runs (it spins for 1.5 s)...
        assert wait_for(lambda: value(scrape(emberd)[1], "ember_concurrent_executions",
                                      **running) == 1, timeout=60)
        r, body = call.result(timeout=120)
        assert json.loads(body) == {"slept": True}
    # ...and drops back when it ends.
    assert value(scrape(emberd)[1], "ember_concurrent_executions", **running) == 0
    c.put_function_concurrency(FunctionName="slowm", ReservedConcurrentExecutions=0)
    for _ in range(3):
        with pytest.raises(c.exceptions.TooManyRequestsException):
            invoke(c, "slowm", {})
    _, samples = scrape(emberd)
    assert value(samples, "ember_throttles_total", **running) == 3
    assert value(samples, "ember_invocations_total", **running) == 1
    assert value(samples, "ember_errors_total", **running) == 0
