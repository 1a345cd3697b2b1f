"""GET /metrics on a real emberd with real microVMs: the Prometheus text
exposition is parsed with the reference parser (prometheus_client), and the
numbers are checked against what the test did."""
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import create, wasm

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
