#!/usr/bin/env python3
"""Import cycles among a crate's files, from its `crate::`/`super::` paths.

Usage: scripts/modcycles.py [host/src] [--top] [--edges]

Every file is a node (`api/functions.rs` is `api::functions`, `api/mod.rs`
is `api`); every `crate::a::b::c` path (in `use` lines, grouped `use`
trees, or inline) and every `super::x` adds an edge to the longest module
that exists. Prints each strongly connected component with more than one
file, and whether it spans more than one folder. With --top, folds every
file into its top-level module first (the layering view).
Exit status 1 when a cycle spans more than one folder.
"""

import re
import sys
from pathlib import Path


def module_of(root: Path, f: Path) -> tuple:
    rel = f.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


def expand_tree(s: str) -> list:
    """Expands `a::{b, c::{d, e}}` into [a::b, a::c::d, a::c::e]."""
    s = s.strip()
    i = s.find("{")
    if i < 0:
        return [s]
    prefix, body = s[:i], s[i + 1 : s.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it.strip():
            out += [prefix + x for x in expand_tree(it)]
    return out


def paths_in(src: str) -> list:
    """Every `crate::...`/`super::...` path, use trees expanded."""
    out = []
    for m in re.finditer(r"\buse\s+((?:crate|super)::[^;]*);", src):
        out += expand_tree(m.group(1))
    rest = re.sub(r"\buse\s+(?:crate|super)::[^;]*;", "", src)
    out += re.findall(r"\b((?:crate|super)(?:::(?:super|[A-Za-z_][A-Za-z0-9_]*))+)", rest)
    return out


def resolve(path: str, here: tuple, is_dir_mod: bool, mods: set):
    segs = [s.strip() for s in path.split("::")]
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    else:
        # `super` in foo/bar.rs is `foo`; in foo/mod.rs it is foo's parent.
        base = list(here if is_dir_mod else here[:-1]) if here else []
        base = base[:-1] if is_dir_mod else base
        segs = segs[1:]
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
    full = base + [s.split(" as ")[0].strip() for s in segs]
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return tuple(full[:n])
    return None


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    top = "--top" in sys.argv
    root = Path(args[0] if args else "host/src")
    files = {}
    for f in sorted(root.rglob("*.rs")):
        if "bin" in f.relative_to(root).parts:
            continue
        # test modules are not part of the layering
        if f.stem == "tests" or f.stem.endswith("_tests"):
            continue
        files[module_of(root, f)] = f
    mods = set(files)
    edges = {}
    for m, f in files.items():
        is_dir_mod = f.stem == "mod" or f.stem == "lib"
        src = strip_comments(f.read_text())
        # test modules are not part of the layering
        src = re.split(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{", src)[0]
        for p in paths_in(src):
            t = resolve(p, m, is_dir_mod, mods)
            if t is not None and t != m:
                edges.setdefault(m, set()).add(t)
    if top:
        fold = lambda m: m[:1]
        e2 = {}
        for a, bs in edges.items():
            for b in bs:
                if fold(a) != fold(b):
                    e2.setdefault(fold(a), set()).add(fold(b))
        edges, mods = e2, {fold(m) for m in mods}
    bad = 0
    for comp in sorted(sccs(sorted(mods), edges), key=len, reverse=True):
        if len(comp) < 2:
            continue
        folders = {c[0] if c else "" for c in comp}
        spans = len(folders) > 1
        bad += spans
        names = sorted("::".join(c) or "crate" for c in comp)
        print(f"{len(comp)} modules{' (spans folders)' if spans else ''}: {', '.join(names)}")
        if "--edges" in sys.argv:
            for a in sorted(comp):
                inner = sorted("::".join(b) for b in edges.get(a, ()) if b in comp)
                print(f"    {'::'.join(a) or 'crate'} -> {', '.join(inner)}")
    if bad == 0:
        print("no cycle spans more than one folder")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
