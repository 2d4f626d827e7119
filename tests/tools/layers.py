#!/usr/bin/env python3
"""Which gateway source file calls which, measured from the built objects (issue 14).

For every object of gateway/ (gateway/ctl/ apart: a separate program), `nm` says which
symbols it defines and which it uses; file A depends on file B when A uses a symbol that
B defines.  Prints the largest sets of files that call each other in a circle (strongly
connected components), the edges inside them, and the source files past the line limit.

    /usr/bin/python3 tests/tools/layers.py [--build build] [--max-cycle 2] [--max-lines 1500]

Exit status 1 when a circle is larger than --max-cycle files, a file calls one in a layer
above its own (LAYERS, bottom to top), or a file passes --max-lines.
"""
import argparse
import collections
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sources():
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "gateway", "**", "*.c"), recursive=True)):
        rel = os.path.relpath(path, ROOT)
        if not rel.startswith("gateway/ctl/"):
            out.append(rel)
    return out


def graph(build):
    defs, uses = {}, collections.defaultdict(set)
    for src in sources():
        obj = os.path.join(ROOT, build, src[:-2] + ".o")
        if not os.path.exists(obj):
            sys.exit("no %s: build first (make programs)" % obj)
        name = src[len("gateway/"):-2]
        out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
        uses[name]
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDBRCV":
                defs[parts[2]] = name
            elif len(parts) == 2 and parts[0] == "U":
                uses[name].add(parts[1])
    g = {f: set() for f in uses}
    edges = collections.defaultdict(list)
    for f, syms in uses.items():
        for s in sorted(syms):
            d = defs.get(s)
            if d is not None and d != f:
                g[f].add(d)
                edges[(f, d)].append(s)
    return g, edges


# Bottom to top: a file may call files of its own layer (without a circle of more than
# --max-cycle files) and of layers below it.  routing/ is split: pool.c (the node table and
# its health) sits under backend, route.c (the decision, from what failover publishes) over
# failover.  docs/ARCHITECTURE.md draws it.
LAYERS = ["base", "loop", "protocol", "routing/pool", "backend", "store", "replication",
          "failover", "routing/route", "transfer", "frontend", "admin", "server", "main"]


def layer(name):
    for i, l in enumerate(LAYERS):
        if name == l or name.startswith(l + "/") or name.startswith(l + "_"):
            return i
    return None


def sccs(g):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out, key=len, reverse=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--max-cycle", type=int, default=2)
    ap.add_argument("--max-lines", type=int, default=1500)
    args = ap.parse_args()
    g, edges = graph(args.build)
    comps = sccs(g)
    bad = False
    print("largest circles of files that call each other:")
    for comp in comps[:5]:
        print("  %d: %s" % (len(comp), " ".join(comp)))
    for comp in comps:
        if len(comp) > args.max_cycle:
            bad = True
            inside = set(comp)
            print("circle of %d files (at most %d allowed); its edges:" % (len(comp), args.max_cycle))
            for (a, b), syms in sorted(edges.items()):
                if a in inside and b in inside:
                    print("  %s -> %s: %s" % (a, b, " ".join(syms)))
    upward = [(a, b, syms) for (a, b), syms in sorted(edges.items())
              if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    for a, b, syms in upward:
        bad = True
        print("upward call %s -> %s: %s" % (a, b, " ".join(syms)))
    unplaced = sorted(f for f in g if layer(f) is None)
    if unplaced:
        bad = True
        print("files in no layer (add them to LAYERS): %s" % " ".join(unplaced))
    for src in sources() + sorted(glob.glob(os.path.join(ROOT, "gateway", "**", "*.h"), recursive=True)):
        path = os.path.join(ROOT, src)
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > args.max_lines:
            bad = True
            print("%s: %d lines (at most %d)" % (os.path.relpath(path, ROOT), n, args.max_lines))
    print("files: %d; edges between files: %d; upward: %d" % (len(g), sum(len(v) for v in g.values()), len(upward)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
