"""make demo: a working geogate site on loopback.

Starts two memcached nodes and one geogate in front of them (ports from the
DESIGN.md example when free, else any free ports), proves it works with a set
and a get through the gateway, prints how to talk to it, and keeps running
until Ctrl-C (or DEMO_SECONDS, for scripted runs).  Everything runs in
demo-run/ and is stopped on exit.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "demo-run")


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pick(port):
    if port_free(port):
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("%s exited early (code %s); see %s" % (what, proc.returncode, RUN))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("%s did not start listening on %d" % (what, port))


def talk(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(data)
        out = b""
        while not out.endswith(b"END\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out


def main():
    shutil.rmtree(RUN, ignore_errors=True)
    os.makedirs(RUN)
    procs = []
    try:
        mc_ports = [pick(21211), pick(21212)]
        for p in mc_ports:
            argv = ["memcached", "-l", "127.0.0.1", "-p", str(p), "-U", "0", "-m", "64"]
            if os.geteuid() == 0:
                argv += ["-u", "root"]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stderr=open(os.path.join(RUN, "memcached-%d.log" % p), "wb"))
            procs.append(proc)
            wait_port(p, proc, "memcached on %d" % p)
        gw_port = pick(11311)
        conf = os.path.join(RUN, "geogate.yml")
        with open(conf, "w") as f:
            f.write("site: demo\ngateway_id: 1\nlisten: 127.0.0.1:%d\nthreads: 2\n"
                    "pool:\n  distribution: ketama\n  hash: md5\n  servers:\n" % gw_port)
            for p in mc_ports:
                f.write("    - 127.0.0.1:%d:1\n" % p)
        log = os.path.join(RUN, "geogate.log")
        gw = subprocess.Popen([os.path.join(ROOT, "bin", "geogate"), "--config", conf],
                              stdin=subprocess.DEVNULL, stderr=open(log, "wb"))
        procs.append(gw)
        wait_port(gw_port, gw, "geogate")
        reply = talk(gw_port, b"set demo:greeting 0 0 5\r\nhello\r\nget demo:greeting\r\n")
        print()
        print("geogate demo site is up (config %s, log %s)" % (conf, log))
        print("  memcached nodes: %s" % ", ".join("127.0.0.1:%d" % p for p in mc_ports))
        print("  gateway:         127.0.0.1:%d" % gw_port)
        print()
        print("  set + get through the gateway answered:")
        for line in reply.decode().splitlines():
            print("    " + line)
        print()
        print("Talk to it with any memcached client, for example:")
        print("  printf 'set k 0 0 2\\r\\nhi\\r\\nget k\\r\\n' | nc -q1 127.0.0.1 %d" % gw_port)
        print("  memccp --servers=127.0.0.1:%d README.md && memccat --servers=127.0.0.1:%d README.md"
              % (gw_port, gw_port))
        print("  /usr/bin/python3 -c \"import pymemcache.client.base as b; "
              "c=b.Client(('127.0.0.1',%d)); c.set('x','1'); print(c.get('x'))\"" % gw_port)
        print("  printf 'stats\\r\\nstats nodes\\r\\n' | nc -q1 127.0.0.1 %d" % gw_port)
        print()
        seconds = float(os.environ.get("DEMO_SECONDS", "0"))
        if seconds > 0:
            print("running for %.0f s (DEMO_SECONDS)" % seconds)
            time.sleep(seconds)
        else:
            print("Ctrl-C stops the demo.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=6)
            except subprocess.TimeoutExpired:
                p.kill()
        print("demo stopped")


def on_term(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    main()
