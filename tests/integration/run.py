"""Run every tests/integration/test_*.py with unittest; each file in its own process,
bounded in time, so one hung test cannot stall CI.  Exit 1 if any failed."""
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PER_FILE_TIMEOUT = int(os.environ.get("GEOGATE_TEST_TIMEOUT", "300"))


def main():
    only = sys.argv[1:]
    files = sorted(glob.glob(os.path.join(HERE, "test_*.py")))
    if only:
        files = [f for f in files if any(o in os.path.basename(f) for o in only)]
    failed = []
    for f in files:
        name = os.path.basename(f)
        t0 = time.time()
        try:
            r = subprocess.run([sys.executable, "-m", "unittest", "-v", name[:-3]], cwd=HERE,
                               timeout=PER_FILE_TIMEOUT, stdin=subprocess.DEVNULL)
            ok = r.returncode == 0
        except subprocess.TimeoutExpired:
            print("TIMEOUT after %ds: %s" % (PER_FILE_TIMEOUT, name))
            ok = False
        print("== %s %s (%.1fs)" % ("PASS" if ok else "FAIL", name, time.time() - t0), flush=True)
        if not ok:
            failed.append(name)
    if failed:
        print("FAILED: " + ", ".join(failed))
        return 1
    print("all %d integration test files passed" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
