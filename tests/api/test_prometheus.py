"""A stock Prometheus (Debian's `prometheus` package, installed by
scripts/setup.sh) scrapes emberd (issue 17): Prometheus cannot sign SigV4,
so emberd serves `GET /metrics` to a bearer token from
`--metrics-token-file`; the scrape target's `up` is 1 and emberd's
`ember_build_info` and `process_*` series arrive. Without the token, or
with a wrong one, /metrics stays closed (403)."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from conftest import bin_dir, wait_for

pytestmark = pytest.mark.vm

TOKEN = "scrape-token-4f1d2a9c7e"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def token_file():
    d = tempfile.mkdtemp(prefix="ember-prom")
    path = os.path.join(d, "metrics.token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, (TOKEN + "\n").encode())
    os.close(fd)
    yield path
    shutil.rmtree(d, ignore_errors=True)


def query(port, promql):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())["data"]["result"]
    except OSError:
        return None


def test_stock_prometheus_scrapes_emberd_with_a_bearer_token(make_emberd, token_file):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is not installed: run scripts/setup.sh (apt-get install prometheus)"
    e = make_emberd(["--metrics-token-file", token_file])
    # Closed without the token, and with a wrong one; open with it.
    assert e.raw("GET", "/metrics", sign=False)[0] == 403
    wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
    assert e.raw("GET", "/metrics", sign=False, headers=wrong)[0] == 403
    status, _, body = e.raw("GET", "/metrics", sign=False, headers={"Authorization": "Bearer " + TOKEN})
    assert status == 200, body
    assert b'ember_build_info{version="' in body and b"process_resident_memory_bytes " in body
    # The token opens /metrics only.
    assert e.raw("GET", "/2015-03-31/functions", sign=False,
                 headers={"Authorization": "Bearer " + TOKEN})[0] == 403

    target = e.endpoint.removeprefix("http://")
    port = free_port()
    work = tempfile.mkdtemp(prefix="ember-prom-run")
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: emberd
    scrape_interval: 1s
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
""")
    p = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
                          f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "log"), "wb"))
    try:
        def up():
            r = query(port, 'up{job="emberd"}')
            return r and r[0]["value"][1] == "1" and r
        assert wait_for(up, timeout=60, interval=0.5), \
            (query(port, "up"), open(os.path.join(work, "log")).read()[-3000:])
        build = wait_for(lambda: query(port, 'ember_build_info{job="emberd"}'), timeout=30, interval=0.5)
        assert build and build[0]["metric"]["version"], build
        rss = query(port, 'process_resident_memory_bytes{job="emberd"}')
        assert rss and float(rss[0]["value"][1]) > 1 << 20, rss
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)
    assert e.proc.poll() is None


def test_an_exposed_or_weak_token_file_stops_emberd_at_start(token_file):
    def start():
        with tempfile.TemporaryDirectory() as d:
            return subprocess.run(
                [str(bin_dir() / "emberd"), "--listen", "127.0.0.1:0", "--data-dir", d,
                 "--control-plane-only", "--metrics-token-file", token_file],
                capture_output=True, text=True, timeout=20)
    os.chmod(token_file, 0o644)
    r = start()
    assert r.returncode != 0 and "listening" not in r.stdout, (r.stdout, r.stderr)
    assert "readable by other users" in r.stderr and token_file in r.stderr, r.stderr
    os.chmod(token_file, 0o600)
    with open(token_file, "w") as f:
        f.write("short\n")
    r = start()
    assert r.returncode != 0 and "16 or more" in r.stderr, r.stderr
