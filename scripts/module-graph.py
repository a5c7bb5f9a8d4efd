#!/usr/bin/env python3
"""The layering check of host/src (docs/architecture.md, "The code: modules in layers").

Prints the graph of the top-level modules of host/src, counting the `crate::` paths of
non-test code, and fails (exit 1) when the modules form a cycle or a non-test source file is
longer than the limit (700 lines before its `#[cfg(test)]` module).

    python3 scripts/module-graph.py            the graph and the checks
    python3 scripts/module-graph.py -v         also the edges inside each cycle
"""
import os, re, sys
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host", "src")
MAX_LINES = 700
mods = set()
for f in os.listdir(root):
    if f.endswith(".rs") and f not in ("lib.rs", "main.rs"):
        mods.add(f[:-3])
    elif os.path.isdir(os.path.join(root, f)):
        mods.add(f)
edges = {m: {} for m in mods}
def strip_tests(text):
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            # skip the following item (mod tests { ... } or single item)
            j = i + 1
            depth = 0; started = False
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                if "{" in lines[j]: started = True
                if (started and depth <= 0) or (not started and lines[j].rstrip().endswith(";")):
                    break
                j += 1
            i = j + 1
            continue
        out.append(lines[i]); i += 1
    return "\n".join(out)
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs"): continue
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, root)
        top = rel.split(os.sep)[0]
        top = top[:-3] if top.endswith(".rs") else top
        if top not in mods: continue
        text = strip_tests(open(p).read())
        # Comments name modules without using them.
        text = "\n".join(l.split("//")[0] for l in text.split("\n"))
        # handle `use crate::{a, b::c}` groups
        for m in re.finditer(r"crate::\{([^}]*)", text):
            for part in re.split(r"[,\s]+", m.group(1)):
                t = part.split("::")[0]
                if t in mods and t != top:
                    edges[top].setdefault(t, set()).add(rel)
        for m in re.finditer(r"crate::(\w+)", text):
            t = m.group(1)
            if t in mods and t != top:
                edges[top].setdefault(t, set()).add(rel)
# Tarjan
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in sorted(mods):
    if v not in idx: sc(v)
for m in sorted(mods):
    print(f"{m} -> {', '.join(sorted(edges[m]))}")
cyc = [s for s in sccs if len(s) > 1]
print("cycles:", len(cyc))
long_files = []
for dp, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".rs"):
            p = os.path.join(dp, f)
            n = 0
            for line in open(p):
                if line.strip() == "#[cfg(test)]":
                    break
                n += 1
            if n > MAX_LINES:
                long_files.append((n, os.path.relpath(p, os.path.join(root, "..", ".."))))
print(f"files over {MAX_LINES} lines of non-test code:", len(long_files))
for n, p in sorted(long_files, reverse=True):
    print(f"  {p}: {n}")
for s in cyc:
    print("  SCC:", sorted(s))
    if "-v" in sys.argv:
        for a in s:
            for b, files in edges[a].items():
                if b in s: print(f"    {a} -> {b}: {sorted(files)}")
sys.exit(1 if cyc or long_files else 0)
