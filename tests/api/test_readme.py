"""The README cannot name what the binaries do not have: every command line
in its code blocks that runs one of ember's binaries names subcommands that
exist and flags that the subcommand's --help lists, and every `--flag` the
prose puts in backticks is one of some binary's flags (or, from a short list
below, another tool's). The help texts are the binaries' own (clap's); no
microVM is started."""
import re
import subprocess

from conftest import REPO, bin_dir

BINARIES = ["ember", "emberd", "ember-run", "ember-vmm", "ember-jailer"]

# Flags the README gives to tools that are not ember's binaries.
OTHER_TOOLS = {
    "--cli-binary-format": "aws (AWS CLI v2)",
    "--endpoint-url": "aws",
    "--function-name": "aws",
    "--release": "cargo",
    "--bins": "cargo",
    "--test": "cargo",
    "--include-ignored": "cargo test (libtest)",
    "--python": "images/build-images.sh",
    "--flat-kib-per-min": "scripts/soak-emberd.sh",
    "--rss-cap-mib": "scripts/soak-emberd.sh",
    "--live-cap": "scripts/soak-emberd.sh",
    "--test-hook": "ember-vmm built with the test-hooks feature only",
    "--vmm-test-hook": "emberd's hidden test flag (not in --help by design)",
}

FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def help_of(path):
    r = subprocess.run([str(bin_dir() / path[0]), *path[1:], "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(path)} --help exited {r.returncode}: {r.stderr}"
    return r.stdout


def subcommands(text):
    """The names in a clap help text's `Commands:` section."""
    m = re.search(r"^Commands:\n((?:[ ]{2}.*\n)+)", text, re.M)
    if not m:
        return []
    return [l.split()[0] for l in m.group(1).splitlines()
            if re.match(r"^ {2}\S", l) and l.split()[0] != "help"]


def help_tree():
    """{("ember", "fn", "create"): help text, …} for every binary and subcommand."""
    tree = {}

    def walk(path):
        text = help_of(path)
        tree[tuple(path)] = text
        for s in subcommands(text):
            walk(path + [s])

    for b in BINARIES:
        walk([b])
    return tree


def readme():
    return (REPO / "README.md").read_text()


def command_lines(text):
    """(line number, command) for each command of an indented code line that
    runs one of the binaries (`target/release/` or not, `sudo` or not, also
    inside `<(…)` or `$(…)`)."""
    for no, line in enumerate(text.splitlines(), 1):
        if not line.startswith("    "):
            continue
        for cmd in re.split(r"&&|\||<\(|\$\(", line.split("  #")[0]):
            toks = cmd.replace(")", " ").split()
            if toks and toks[0] == "sudo":
                toks = toks[1:]
            if toks and toks[0].removeprefix("target/release/") in BINARIES:
                yield no, [toks[0].removeprefix("target/release/"), *toks[1:]]


def check_command(tree, toks):
    """What is wrong with one README command (None if nothing)."""
    path = [toks[0]]
    for t in toks[1:]:
        if t.startswith("-") or t.startswith("["):
            break
        if tuple(path + [t]) in tree:
            path.append(t)
        elif subcommands(tree[tuple(path)]):
            return f"{' '.join(path)} has no subcommand {t!r}"
        else:
            break
    text = tree[tuple(path)]
    missing = [f for f in FLAG.findall(" ".join(toks)) if f not in text]
    return f"{' '.join(path)} --help lists no {missing}" if missing else None


def test_readme_commands_name_real_subcommands_and_flags():
    tree = help_tree()
    found = list(command_lines(readme()))
    assert len(found) >= 15, found  # the extraction still finds the README's commands
    bad = [(no, why) for no, toks in found if (why := check_command(tree, toks))]
    assert not bad, bad


def test_readme_prose_flags_exist():
    every = set()
    for text in help_tree().values():
        every |= set(FLAG.findall(text))
    named = set()
    for span in re.findall(r"`([^`\n]+)`", readme()):
        named |= set(FLAG.findall(span))
    unknown = sorted(named - every - set(OTHER_TOOLS))
    assert not unknown, f"the README names flags no binary has: {unknown}"
    stale = sorted(f for f in OTHER_TOOLS if f not in set(FLAG.findall(readme())))
    assert not stale, f"OTHER_TOOLS lists flags the README no longer names: {stale}"


def test_the_checks_catch_a_wrong_subcommand_and_flag():
    """The checker itself: a renamed subcommand and a made-up flag fail."""
    tree = help_tree()
    assert check_command(tree, ["ember", "logs", "f", "--since", "1h"]) is None
    assert "no subcommand 'function'" in check_command(tree, ["ember", "function", "create", "x"])
    assert "--sinse" in check_command(tree, ["ember", "logs", "f", "--sinse", "1h"])
