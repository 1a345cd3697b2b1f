"""Every host binary answers `--version` and `--help` the way command-line
tools do (issue 17): on stdout, exit code 0, the version from the
workspace's Cargo.toml. (`ember-vmm --version` keeps Firecracker's format;
its API-socket tests check it.)"""
import re
import subprocess

import pytest

from conftest import REPO, bin_dir

BINARIES = ["emberd", "ember", "ember-run", "ember-jailer", "ember-wasm-compile"]


def workspace_version():
    text = (REPO / "Cargo.toml").read_text()
    m = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', text, re.M | re.S)
    assert m, "no [workspace.package] version"
    return m.group(1)


@pytest.mark.parametrize("name", BINARIES)
def test_version_and_help_exit_zero_on_stdout(name):
    exe = bin_dir() / name
    v = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0, (v.stdout, v.stderr)
    assert v.stdout.strip() == f"{name} {workspace_version()}", v.stdout
    h = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    assert h.returncode == 0, (h.stdout, h.stderr)
    assert "usage" in h.stdout.lower(), h.stdout
    # A usage error stays distinct from success and from a function error.
    bad = subprocess.run([exe, "--no-such-option"], capture_output=True, text=True, timeout=10)
    assert bad.returncode not in (0, 1), (name, bad.returncode, bad.stderr)


@pytest.mark.vm
def test_ember_exit_codes_are_distinct(emberd):
    from conftest import create, wasm
    c = emberd.client()
    create(c, "ok", wasm("echo"))
    create(c, "bad", wasm("fail"))
    ok = emberd.ember("invoke", "ok", "--payload", '{"a": 1}')
    assert ok.returncode == 0, ok.stderr
    # The function ran and failed: its own code, not clap's usage code 2.
    failed = emberd.ember("invoke", "bad", "--payload", "{}")
    assert failed.returncode == 3, (failed.returncode, failed.stdout, failed.stderr)
    assert "errorMessage" in failed.stdout, failed.stdout
    # The request failed (no such function): 1.
    missing = emberd.ember("invoke", "nope", "--payload", "{}")
    assert missing.returncode == 1, (missing.returncode, missing.stderr)
    assert "ResourceNotFoundException" in missing.stderr, missing.stderr
    # A usage error: 2.
    usage = emberd.ember("invoke")
    assert usage.returncode == 2, (usage.returncode, usage.stderr)
    assert "Exit codes:" in emberd.ember("--help").stdout


def complete(script, words):
    """What bash's completion for `ember` offers after `words` (the last one
    being completed), with the script `ember completions bash` printed."""
    probe = (f'source {script}\n'
             f'COMP_WORDS=({" ".join(words)}); COMP_CWORD={len(words) - 1}\n'
             f'COMP_LINE="{" ".join(words)}"; COMP_POINT=${{#COMP_LINE}}\n'
             '_ember ember "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
             'printf "%s\\n" "${COMPREPLY[@]}"\n')
    r = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completions_come_from_the_cli_definition(tmp_path):
    """`ember completions bash` prints a script that bash sources and that
    completes ember's real subcommands and flags; the other shells get one too."""
    exe = bin_dir() / "ember"
    r = subprocess.run([exe, "completions", "bash"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "ember.bash"
    script.write_text(r.stdout)
    assert complete(script, ["ember", "au"]) == ["audit"]
    assert set(complete(script, ["ember", "audit", ""])) >= {"list", "verify"}
    assert "--since" in complete(script, ["ember", "logs", "--si"])
    assert "--audit-data-events" in complete(script, ["ember", "serve", "--audit-d"])
    for shell in ["zsh", "fish", "elvish", "powershell"]:
        out = subprocess.run([exe, "completions", shell], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0 and "audit" in out.stdout, (shell, out.stderr)
    bad = subprocess.run([exe, "completions", "tcsh"], capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2, bad.stderr
    # `ember completions bash | head`: a reader that goes away is no panic.
    p = subprocess.Popen([exe, "completions", "bash"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(100)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=10)
    assert "panicked" not in err, err
