#!/usr/bin/env python3
"""Instructions per proxied request of the whole meshgate process, by callgrind.

    bench/callgrind-proxy.py [--h1] [--requests 2000] [--meshgate-bin PATH] [--top 30]

`callgrind.sh` counts the hot paths in-process; this counts a real meshgate
process end to end (one shard, kernel mode, the harness's upstream nginx and
config), so the event loop, the executor, HTTP/2 (`h2`) and the allocator are
in the count.  meshgate runs under `valgrind --tool=callgrind` twice, serving
N and then 2N requests from `h2load` (h2c prior knowledge, 4 connections x 10
streams; `--h1`: HTTP/1.1 keep-alive, 4 connections, no pipelining), and the
difference over N is the figure: start-up, config loading and shutdown cancel.
It prints instructions per request, then the functions with the largest
per-request share, self and inclusive.  Counts do not depend on machine load,
so two builds compare reliably on a busy machine (times do not: check a gain
in time with the harness).  Needs valgrind, h2load and nginx (bench/run.sh
--http2 installs them) and a release build.  Never part of `make test`.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver  # noqa: E402  (same configs, ports and process handling as the harness)


def run_once(a, conf, requests, out):
    """Runs meshgate under callgrind for `requests` requests; returns how many succeeded."""
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", a.meshgate_bin,
                             "-c", conf, "--shards", "1", "--mode", "kernel", "--log-level", "warn", "--no-pin"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", driver.PORTS["meshgate"]), 0.5).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("callgrind-proxy.py: meshgate did not start under valgrind")
                time.sleep(0.2)
        cmd = ["h2load", "-c", "4", "-t", "1", "-n", str(requests)]
        cmd += ["--h1", "-m", "1"] if a.h1 else ["-m", "10"]
        load = subprocess.run(cmd + [f"http://127.0.0.1:{driver.PORTS['meshgate']}/"], capture_output=True, text=True)
        m = re.search(r"(\d+) succeeded", load.stdout)
        succeeded = int(m.group(1)) if m else 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
    return succeeded


def costs(out, inclusive):
    """{function: instructions} from callgrind_annotate."""
    args = ["callgrind_annotate", "--threshold=100"] + (["--inclusive=yes"] if inclusive else []) + [out]
    text = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    total, funcs = 0, {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = n
        else:
            funcs[m.group(2)] = max(funcs.get(m.group(2), 0), n)
    return total, funcs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--h1", action="store_true", help="HTTP/1.1 keep-alive instead of h2c")
    ap.add_argument("--requests", type=int, default=2000, help="N (the second run serves 2N)")
    ap.add_argument("--meshgate-bin", default=os.path.join(driver.REPO, "target", "release", "meshgate"))
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_annotate", "h2load", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"callgrind-proxy.py: {tool} is missing (bench/run.sh --http2 installs the tools)")
    if not os.access(a.meshgate_bin, os.X_OK):
        sys.exit(f"callgrind-proxy.py: no meshgate binary at {a.meshgate_bin} (cargo build --release)")
    tmp = tempfile.mkdtemp(prefix="meshgate-callgrind-")
    os.chmod(tmp, 0o755)  # nginx workers run as nobody and read the body from here
    cfg = types.SimpleNamespace(body_bytes=1668, upstream_host="127.0.0.1", listen_host="127.0.0.1", http2=True,
                                upstream_workers=1, shards=1, meshgate_addr=None)
    try:
        up = driver.Proc("upstream", ["nginx", "-p", tmp, "-e", f"{tmp}/upstream-error.log",
                                      "-c", driver.write_upstream_conf(tmp, cfg)], tmp)
        driver.wait_port("127.0.0.1", driver.PORTS["upstream"], up)
        conf = driver.write_meshgate_conf(tmp, cfg)
        n = a.requests
        outs = [os.path.join(tmp, f"callgrind-{k}.out") for k in (n, 2 * n)]
        for reqs, out in zip((n, 2 * n), outs):
            ok = run_once(a, conf, reqs, out)
            if ok != reqs:
                sys.exit(f"callgrind-proxy.py: {ok} of {reqs} requests succeeded")
        (t1, self1), (t2, self2) = costs(outs[0], False), costs(outs[1], False)
        _, incl1 = costs(outs[0], True)
        _, incl2 = costs(outs[1], True)
        proto = "HTTP/1.1" if a.h1 else "HTTP/2 (h2c)"
        print(f"{proto}: {(t2 - t1) / n:,.0f} instructions per request "
              f"({t1:,} for {n} requests, {t2:,} for {2 * n}; {a.meshgate_bin})")
        for title, c1, c2 in (("self", self1, self2), ("inclusive", incl1, incl2)):
            rows = sorted(((c2.get(f, 0) - c1.get(f, 0)) / n, f) for f in set(c1) | set(c2))
            print(f"\nper request, {title}:")
            for per, f in sorted(rows, reverse=True)[:a.top]:
                print(f"{per:9,.0f}  {f[:140]}")
    finally:
        driver.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
