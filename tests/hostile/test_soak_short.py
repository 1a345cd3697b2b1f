"""The soak (scripts/soak-emberd.sh), shortened to 120 s for CI: mixed load
from two tenants (create/update/delete, cold, warm and asynchronous
invokes), one hostile client and one hostile guest against a throw-away
emberd. Acknowledged vs found: every acknowledged upload is served with its
code (GetFunction Location bytes + CodeSha256), every acknowledged delete is
404, every 202'd event ran exactly once (one Success attempt, one OnSuccess
destination record carrying its payload), every synchronous invoke was
answered with its payload. emberd's RSS stays under 100 MiB and, with each
tenant keeping at most 40 functions, its heap in use (malloc's own count,
from /metrics) is flat over the second half: at most +2 MiB/min (measured
-0.8 MiB/min). RSS itself is not held to a slope in 120 s: it climbs with
each new peak of concurrent requests (thread stacks and arena pages malloc
keeps) for about the first minute — the official CI measured +4.0 MiB/min
over 45-90 s while the heap was flat, and heaptrack over 128 s found 46 KiB
never freed. The 10-minute run (the benchmark's, see the script) holds RSS
to the slope too."""
import os
import re
import subprocess

import pytest

from conftest import REPO

pytestmark = pytest.mark.vm


def test_a_short_soak_loses_nothing_and_stays_small():
    p = subprocess.run(["bash", str(REPO / "scripts/soak-emberd.sh"), "120",
                        "--live-cap", "40", "--flat-kib-per-min", "2048",
                        "--rss-cap-mib", "100"], cwd=REPO,
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    out = p.stdout + p.stderr
    print(out)
    assert p.returncode == 0, out
    assert "soak: PASS" in out, out
    assert "lost acknowledgements: 0 functions, 0 events (and 0 destination" in out, out
    tenants = re.findall(r"acknowledged (\d+) creates, (\d+) updates, (\d+) deletes; (\d+) live "
                         r"functions, (\d+) found .*?(\d+) events 202'd, (\d+) ran exactly once",
                         out)
    assert len(tenants) == 2, out
    for creates, updates, deletes, live, found, events, once in tenants:
        assert int(creates) > 0 and int(updates) > 0 and int(deletes) > 0, out
        assert found == live and int(events) > 0 and once == events, out
    sync = re.search(r"sync invokes: (\d+) sent, (\d+) answered", out)
    assert sync and int(sync.group(1)) > 0 and sync.group(1) == sync.group(2), out
    assert re.search(r"hostile guest h-\w+ cut off", out), out
    assert re.search(r"bad signature -> 403", out), out
    rss = re.search(r"RSS \(KiB.*?start (\d+), peak (\d+), end (\d+)", out)
    assert rss and int(rss.group(2)) < 100 * 1024, out
    assert re.search(r"heap in use \(KiB, \d+ samples", out), out
