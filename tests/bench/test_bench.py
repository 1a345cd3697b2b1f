"""`ember bench` end to end (issue 20): short runs of each scenario on real
VMMs and a real throw-away emberd produce valid JSON Lines / CSV with the
documented fields, PNGs that decode, SVGs that parse and a report.html that
headless Chromium renders with its plots; `compare` of a result with itself
finds no significant change; bad input (an unknown peer path, a peer that
fails to start, emberd unreachable) gives a clear error and keeps the
partial results.
"""
import csv
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

from PIL import Image

from conftest import CSV_COLUMNS, RECORD_FIELDS, bin_dir

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def check_data_files(run):
    recs = run.records()
    assert recs, run
    for r in recs:
        assert set(r) == RECORD_FIELDS, r
    with open(run.out / "raw.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:len(CSV_COLUMNS)] == CSV_COLUMNS
    assert all(c.startswith("phase_") and c.endswith("_ms") for c in rows[0][len(CSV_COLUMNS):])
    assert len(rows) == len(recs) + 1
    assert all(len(row) == len(rows[0]) for row in rows)
    s = run.summary()
    ctx = s["context"]
    assert ctx["cpu_model"] and ctx["cores"] >= 1 and ctx["kernel"]
    assert ctx["kvm"] in ("pvm", "hardware-vmx", "hardware-svm", "unknown", "none")
    assert ctx["mem_total_mib"] > 0 and len(ctx["load_before"]) == 3 and len(ctx["load_after"]) == 3
    md = (run.out / "summary.md").read_text()
    assert "| case | ok | failed | median ms | p90 ms | p99 ms |" in md
    return recs, s


def check_plot(path_stem):
    png = Image.open(f"{path_stem}.png")
    png.load()
    assert png.size == (900, 520)
    lo, hi = png.convert("L").getextrema()
    assert lo < 100 and hi > 200, f"{path_stem}.png looks blank ({lo}..{hi})"
    root = ET.parse(f"{path_stem}.svg").getroot()
    assert root.tag.endswith("svg")
    assert len(list(root.iter())) > 20


def screenshot(tmp_path, html):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing (scripts/setup.sh installs it)"
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome-profile'}",
                    "--window-size=1200,1800", f"--screenshot={shot}", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = Image.open(shot).convert("L")
    hist = img.histogram()
    non_white = sum(hist[:200]) / (img.size[0] * img.size[1])
    # Text alone covers well under 1% of the page; the inlined plots' lines,
    # bars and labels push it past that.
    assert non_white > 0.01, f"report.html rendered (nearly) blank: {non_white:.4f} non-white"
    return non_white


def test_vmm_boot_side_by_side_with_a_firecracker_compatible_peer(bench, tmp_path):
    run = bench("vmm-boot", "--runs", "4", "--warmup", "1",
                "--peer", f"ember-vmm-as-peer={bin_dir() / 'ember-vmm'}")
    assert run.rc == 0, run
    recs, s = check_data_files(run)
    cases = [c["case"] for c in s["cases"]]
    for name in ("ember-vmm, kernel-less null", "ember-vmm, PVH null",
                 "ember-vmm-as-peer, PVH null", "floor: exec /bin/true"):
        c = run.case(name)
        assert c["ok"] == 4 and c["failed"] == 0, (name, c, run)
        assert c["wall_ms"]["median"] > 0 and c["peak_rss_mib"]["median"] > 0
        # One warm-up run per case, recorded but not counted.
        assert sum(1 for r in recs if r["case"] == name and r["warmup"]) == 1
    for name in ("ember-vmm, kernel-less null", "ember-vmm, PVH null"):
        assert run.case(name)["boot_timer_ms"] is not None, run
    # QEMU either ran (KVM, or TCG with a note saying so) or its failure is said.
    qemu = [c for c in cases if c.startswith("QEMU")]
    if qemu:
        assert run.case(qemu[0])["ok"] == 4, run
        if "tcg" in qemu[0]:
            assert any("TCG" in n for n in s["notes"]), s["notes"]
    else:
        assert any("PEER FAILED: QEMU" in n for n in s["notes"]), s["notes"]
    # Ratios are against the first case unless --baseline says otherwise.
    assert s["baseline"] == "ember-vmm, kernel-less null"
    assert run.case(s["baseline"])["ratio_median"] == 1.0
    # Rounds interleave: each round holds every case once.
    measured = [r for r in recs if not r["warmup"]]
    by_round = {}
    for r in measured:
        by_round.setdefault(r["round"], []).append(r["case"])
    assert all(sorted(v) == sorted(cases) for v in by_round.values()), by_round
    for stem in ("latency-cdf", "peak-rss"):
        check_plot(run.out / stem)
    html = run.out / "report.html"
    assert html.read_text().count("<svg") >= 2
    screenshot(tmp_path, html)

    cmp = bench("compare", str(run.out), str(run.out))
    assert cmp.rc == 0, cmp
    rows = [l for l in cmp.stdout.splitlines() if l.startswith("| ") and "verdict" not in l]
    assert len(rows) == len(cases), cmp
    assert all("no significant change" in l for l in rows), cmp.stdout
    assert "Overall: no significant change in any case." in cmp.stdout

    # The same runs each made slower than every original run: a significant
    # change in every case (4 runs a side: complete separation gives p = 0.03).
    slow = tmp_path / "slow"
    slow.mkdir()
    with open(slow / "raw.jsonl", "w") as f:
        top = max(r["wall_ms"] or 0 for r in recs)
        for r in recs:
            if r["wall_ms"] is not None:
                r["wall_ms"] += top
            f.write(json.dumps(r) + "\n")
    cmp = bench("compare", str(run.out), str(slow))
    assert cmp.rc == 0, cmp
    rows = [l for l in cmp.stdout.splitlines() if l.startswith("| ") and "verdict" not in l]
    assert len(rows) == len(cases) and all("| significant: B is" in l and "slower" in l for l in rows), cmp.stdout


def test_unknown_and_failing_peers_are_reported_and_the_rest_kept(bench):
    run = bench("vmm-boot", "--runs", "2", "--warmup", "0", "--no-qemu",
                "--peer", "ghost=/nonexistent/firecracker", "--peer", "broken=/bin/false")
    assert run.rc == 1, run
    assert "/nonexistent/firecracker is not an executable file" in run.stderr, run
    assert "broken, PVH null: dropped after 3 failed runs" not in run.stderr  # only 2 rounds
    s = run.summary()
    assert run.case("ember-vmm, PVH null")["ok"] == 2
    assert run.case("ghost, PVH null")["ok"] == 0
    assert any(d[0] == "ghost, PVH null" for d in s["dropped"]), s["dropped"]
    broken = [r for r in run.records() if r["case"] == "broken, PVH null"]
    assert len(broken) == 2 and not any(r["ok"] for r in broken)
    assert "exit status 1" in broken[0]["error"], broken[0]
    assert run.case("broken, PVH null")["ok"] == 0
    md = (run.out / "summary.md").read_text()
    assert "FAILED:** ghost, PVH null" in md

    # Three failures in a row drop a peer; the other cases run every round.
    run = bench("vmm-boot", "--runs", "5", "--warmup", "0", "--no-qemu", "--no-floor",
                "--peer", "broken=/bin/false", out="out2")
    assert run.rc == 1, run
    assert "broken, PVH null: dropped after 3 failed runs in a row" in run.stderr, run
    assert run.case("ember-vmm, PVH null")["ok"] == 5
    assert run.case("broken, PVH null")["failed"] == 3


def test_function_through_a_throwaway_emberd(bench, tmp_path):
    run = bench("function", "--throwaway", "--runs", "3", "--warmup", "1",
                "--payload-sizes", "0,4096", "--settle-ms", "200", timeout=600)
    assert run.rc == 0, run
    recs, s = check_data_files(run)
    names = [c["case"] for c in s["cases"]]
    assert names == ["cold, VM boot", "cold, spare VM", "warm, empty payload", "warm, 4 KiB payload"]
    for c in s["cases"]:
        assert c["ok"] == 3 and c["failed"] == 0, (c, run)
        phases = [p[0] for p in c["phase_medians_ms"]]
        assert phases[0] == "platform" and phases[-1] == "invoke", c
    check_plot(run.out / "phases")
    check_plot(run.out / "latency-cdf")
    screenshot(tmp_path, run.out / "report.html")


def test_ramp_through_a_throwaway_emberd(bench):
    run = bench("ramp", "--throwaway", "--runs", "2", "--warmup", "0", "--steps", "1,2", timeout=600)
    assert run.rc == 0, run
    recs, s = check_data_files(run)
    two = [r for r in recs if r["step"] == 2]
    assert len(two) == 4 and all(r["ok"] and r["batch_ms"] >= r["wall_ms"] for r in two), two
    assert run.case("2 simultaneous")["starts_per_sec"] > 0
    check_plot(run.out / "ramp")


def test_snapshot_restore_through_the_api_socket(bench):
    run = bench("snapshot-restore", "--runs", "3", "--warmup", "1")
    assert run.rc == 0, run
    recs, s = check_data_files(run)
    for name in ("ember-vmm, snapshot load → exit", "ember-vmm, fresh boot via API → exit"):
        c = run.case(name)
        assert c["ok"] == 3 and c["failed"] == 0, (c, run)
        assert [p[0] for p in c["phase_medians_ms"]] == ["api", "run"]
    check_plot(run.out / "phases")


def test_emberd_unreachable_is_a_clear_error_with_results_kept(bench):
    run = bench("function", "--runs", "1", env={"EMBER_ENDPOINT": "http://127.0.0.1:9"})
    assert run.rc == 1, run
    assert "emberd unreachable at http://127.0.0.1:9" in run.stderr, run
    s = run.summary()
    assert s["dropped"][0][0] == "(setup)" and "unreachable" in s["dropped"][0][1]
    assert (run.out / "report.html").exists() and (run.out / "raw.jsonl").exists()
