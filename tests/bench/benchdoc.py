"""Helpers shared by the benchmark scripts: machine facts and the marked sections of
docs/BENCHMARKS.md that each script owns."""
import os


def write_marked_section(path, name, text):
    """Replace what is between `<!-- NAME:start -->` and `<!-- NAME:end -->` in path with text
    (the markers are appended at the end when missing); nothing outside them is touched."""
    start, end = "<!-- %s:start -->" % name, "<!-- %s:end -->" % name
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = ""
    block = start + "\n" + text.rstrip("\n") + "\n" + end
    s = doc.find(start)
    e = doc.find(end, s + 1) if s >= 0 else -1
    if s >= 0 and e >= 0:
        doc = doc[:s] + block + doc[e + len(end):]
    else:
        if doc and not doc.endswith("\n"):
            doc += "\n"
        doc += ("\n" if doc else "") + block + "\n"
    tmp = path + ".tmp-" + name
    with open(tmp, "w") as f:
        f.write(doc)
    os.replace(tmp, path)
