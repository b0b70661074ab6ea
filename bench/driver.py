#!/usr/bin/env python3
"""meshgate side-by-side benchmark driver (started by bench/run.sh).

Starts one upstream (nginx serving a fixed body) and, in front of it, meshgate
(kernel mode), nginx (proxy_pass + upstream keep-alive) and HAProxy
(http-reuse always), all on loopback; then, for each target in turn
(direct / meshgate / nginx / haproxy), runs:

  1. saturation with wrk at each --connections count: req/s, p50/p90/p99
  2. fixed load with oha (default 1,600 req/s over 40 connections), the origin
     design's table: samples, total, fails, fail rate, TPS, mean, 50/90/99%, max,
     response length
  3. proxy CPU microseconds per request (utime+stime from /proc/<pid>/stat over
     the fixed-load run and over the first saturation run, divided by requests)
  4. peak RSS (VmHWM) of the proxy process(es) over the load phases
  5. N idle keep-alive connections (default 10,000) on a freshly started proxy:
     (VmRSS with them - VmRSS before) / N
  (6. optionally HTTP/2 with h2load, --http2)

and writes results.md, results.csv, results.json, latency.png (or .svg) and
environment.txt into bench/results/<YYYY-MM-DD-HHMM>/ (raw tool output under
raw/, which git ignores), then prints meshgate/nginx and meshgate/haproxy
ratios against the project's targets.

Only the Python standard library is required; matplotlib is used for the plot
when importable, otherwise a plain SVG is written by hand.
"""
import argparse
import csv
import datetime
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")

PORTS = {
    "upstream": 18080,
    "meshgate": 18081,
    "nginx": 18082,
    "haproxy": 18083,
    "admin": 19901,
    # h2c (prior knowledge) listeners, used only with --http2
    "upstream_h2": 18090,
    "meshgate_h2": 18081,  # same listener: meshgate is expected to detect the h2 preface
    "nginx_h2": 18092,
    "haproxy_h2": 18093,
}
ALL_TARGETS = ["direct", "meshgate", "nginx", "haproxy"]
PROXIES = ["meshgate", "nginx", "haproxy"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- /proc helpers

def children_of(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def process_tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += children_of(p)
    return pids


def cpu_ticks(pids):
    """utime+stime (clock ticks) summed over processes (each covers all its threads)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError):
            pass
    return total


def settled_rss(proc, least=2.0, most=10.0):
    """VmRSS (KiB) once two readings a second apart differ by under 1 %, read
    no earlier than `least` and no later than `most` seconds from now."""
    time.sleep(least)
    start, prev = time.time(), status_kib(proc.pids(), "VmRSS")
    while time.time() - start < most - least:
        time.sleep(1.0)
        cur = status_kib(proc.pids(), "VmRSS")
        if abs(cur - prev) <= 0.01 * prev:
            return cur
        prev = cur
    return prev


def status_kib(pids, key):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def system_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().strip()


def busiest_processes(n=8):
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,etime,comm", "--sort=-pcpu"],
                             capture_output=True, text=True, timeout=10).stdout
        return "\n".join(out.splitlines()[: n + 1])
    except Exception as e:  # noqa: BLE001
        return f"(ps failed: {e})"


# ---------------------------------------------------------------- processes

class Proc:
    """A server process we started (own session, so its whole group can be stopped by id)."""

    def __init__(self, name, cmd, logdir, cwd=None):
        self.name = name
        self.cmd = cmd
        self.logpath = os.path.join(logdir, f"{name}.log")
        self.logf = open(self.logpath, "ab")
        self.logf.write(("$ " + " ".join(cmd) + "\n").encode())
        self.logf.flush()
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=cwd, start_new_session=True)
        RUNNING.append(self)

    @property
    def pid(self):
        return self.p.pid

    def pids(self):
        return process_tree(self.p.pid) if self.alive() else []

    def alive(self):
        return self.p.poll() is None

    def log_tail(self, n=20):
        try:
            with open(self.logpath, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=8.0):
        if self in RUNNING:
            RUNNING.remove(self)
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(5)
        else:
            # the group may outlive its leader (e.g. nginx workers); reap by group id
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.logf.close()


RUNNING = []


def stop_all():
    for p in list(reversed(RUNNING)):
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001
            print(f"warning: stopping {p.name}: {e}", file=sys.stderr)


def wait_port(host, port, proc=None, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited (rc={proc.p.returncode}) before listening on "
                               f"{host}:{port}:\n{proc.log_tail()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout:.0f}s"
                       + (f":\n{proc.log_tail()}" if proc else ""))


def http_get(host, port, path="/", timeout=5.0):
    """One plain HTTP/1.1 GET; returns (status, body bytes)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode(errors="replace"), body


# ---------------------------------------------------------------- configs

def nofile_limit():
    """Raise the soft open-file limit to the hard one (run.sh tries 65536 first); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(soft, 1 << 20)


def nginx_common(tmp, name, workers, extra_events=""):
    n = nofile_limit()
    return f"""
worker_processes {workers};
daemon off;
master_process on;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
worker_rlimit_nofile {n};
events {{ worker_connections {n - 200}; {extra_events} }}
"""


def nginx_http_common(tmp, name):
    return f"""
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  tcp_nodelay on;
  client_body_temp_path {tmp}/{name}-body;
  proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fastcgi;
  uwsgi_temp_path {tmp}/{name}-uwsgi;
  scgi_temp_path {tmp}/{name}-scgi;
"""


def write_upstream_conf(tmp, args):
    www = os.path.join(tmp, "www")
    os.makedirs(www, exist_ok=True)
    pattern = b"meshgate-bench-body-0123456789abcdefghijklmnopqrstuvwxyz\n"
    body = (pattern * (args.body_bytes // len(pattern) + 1))[: args.body_bytes]
    with open(os.path.join(www, "body.bin"), "wb") as f:
        f.write(body)
    h2 = f"listen {args.upstream_host}:{PORTS['upstream_h2']} http2 backlog=4096;" if args.http2 else ""
    conf = nginx_common(tmp, "upstream", args.upstream_workers) + f"""
http {{
{nginx_http_common(tmp, "upstream")}
  sendfile on;
  open_file_cache max=16 inactive=600s;
  open_file_cache_valid 600s;
  server {{
    listen {args.upstream_host}:{PORTS['upstream']} backlog=4096;
    {h2}
    root {www};
    location / {{
      default_type application/octet-stream;
      try_files /body.bin =404;
    }}
  }}
}}
"""
    path = os.path.join(tmp, "upstream.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def write_nginx_proxy_conf(tmp, args):
    h2 = f"listen {args.listen_host}:{PORTS['nginx_h2']} http2 backlog=4096;" if args.http2 else ""
    conf = nginx_common(tmp, "nginx-proxy", args.shards) + f"""
http {{
{nginx_http_common(tmp, "nginx-proxy")}
  upstream u {{
    server {args.upstream_host}:{PORTS['upstream']};
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen {args.listen_host}:{PORTS['nginx']} backlog=4096;
    {h2}
    location / {{
      proxy_pass http://u;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    path = os.path.join(tmp, "nginx-proxy.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def write_haproxy_conf(tmp, args):
    h2 = f"frontend fe_h2\n  bind {args.listen_host}:{PORTS['haproxy_h2']} proto h2\n  default_backend be\n" \
        if args.http2 else ""
    n = nofile_limit()
    conf = f"""global
  nbthread {args.shards}
  # an idle client connection holds one fd, so allow up to the process's fd limit;
  # haproxy wants 2 fds per maxconn and, with strict-limits (2.6's default), would refuse
  # to start when the hard limit cannot be raised that far (20,000 in some sandboxes)
  no strict-limits
  maxconn {n - 200}
  pidfile {tmp}/haproxy.pid

defaults
  mode http
  maxconn {n - 200}
  timeout connect 5s
  timeout client 300s
  timeout server 60s
  timeout http-request 30s
  timeout http-keep-alive 300s
  http-reuse always

frontend fe
  bind {args.listen_host}:{PORTS['haproxy']}
  default_backend be

{h2}
backend be
  server u {args.upstream_host}:{PORTS['upstream']}
"""
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(conf)
    return path


def write_meshgate_conf(tmp, args):
    conf = f"""# generated by bench/driver.py
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {PORTS['admin']} }}
static_resources:
  listeners:
  - name: bench
    address:
      socket_address: {{ address: {args.meshgate_addr or args.listen_host}, port_value: {PORTS['meshgate']} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            name: bench
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {args.upstream_host}, port_value: {PORTS['upstream']} }}
"""
    path = os.path.join(tmp, "meshgate.yaml")
    with open(path, "w") as f:
        f.write(conf)
    return path


# ---------------------------------------------------------------- the bench

def h2load_command(connections, streams, duration, url):
    """h2load over h2c (prior knowledge), one client thread, for `duration` seconds."""
    return ["h2load", "-c", str(connections), "-m", str(streams), "-t", "1", "-D", str(duration), url]


def parse_h2load(out):
    """{requests (succeeded), rps, failed, supported, min/max/mean_ms} from h2load's
    report, or None when the report is not there."""
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    fin = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    tfr = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)", out)
    if not m or not fin:
        return None

    def ms(v, unit):
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}.get(unit, 1.0)

    done, succ = int(m.group(3)), int(m.group(4))
    res = {"requests": succ, "rps": float(fin.group(3)), "failed": done - succ + int(m.group(6)),
           "supported": succ > 0}
    if tfr:
        res["min_ms"], res["max_ms"], res["mean_ms"] = ms(*tfr.group(1, 2)), ms(*tfr.group(3, 4)), ms(*tfr.group(5, 6))
    return res


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="meshgate-bench-")
        os.chmod(self.tmp, 0o755)  # nginx workers run as www-data and must read the body file
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
        self.outdir = args.out or os.path.join(HERE, "results", stamp)
        self.raw = os.path.join(self.outdir, "raw")
        os.makedirs(self.raw, exist_ok=True)
        self.upstream = None
        self.notes = []
        self.waited = 0.0
        mg_help = ""
        if "meshgate" in args.targets:
            try:
                mg_help = subprocess.run([args.meshgate_bin, "--help"], capture_output=True, text=True,
                                         timeout=20).stdout
            except OSError as e:
                raise SystemExit(f"meshgate binary {args.meshgate_bin}: {e}")
        self.mg_help = mg_help

    # -- commands, with optional pinning / client netns
    def pin(self, cmd, which):
        cpus = {"proxy": self.args.pin_proxy, "upstream": self.args.pin_upstream,
                "client": self.args.pin_client}[which]
        return (["taskset", "-c", cpus] + cmd) if cpus else cmd

    def client(self, cmd):
        cmd = self.pin(cmd, "client")
        if self.args.client_netns:
            cmd = ["ip", "netns", "exec", self.args.client_netns] + cmd
        return cmd

    def addr(self, target, h2=False):
        key = target if target != "direct" else "upstream"
        if h2:
            key += "_h2"
        host = self.args.upstream_host if target == "direct" else self.args.listen_host
        if target == "meshgate" and self.args.meshgate_addr:
            host = self.args.meshgate_addr
        return host, PORTS[key]

    def url(self, target, h2=False):
        host, port = self.addr(target, h2)
        return f"http://{host}:{port}/"

    # -- servers
    def start_upstream(self):
        conf = write_upstream_conf(self.tmp, self.args)
        self.upstream = Proc("upstream-nginx", self.pin(["nginx", "-p", self.tmp, "-e", f"{self.tmp}/upstream-error.log",
                                                         "-c", conf], "upstream"), self.raw)
        wait_port(self.args.upstream_host, PORTS["upstream"], self.upstream)
        status, _, body = http_get(self.args.upstream_host, PORTS["upstream"])
        if status != 200 or len(body) != self.args.body_bytes:
            raise RuntimeError(f"upstream answered {status} with {len(body)} bytes, want 200 / {self.args.body_bytes}")

    def start_target(self, target, tag):
        """Start the proxy for `target`; returns the Proc (None for direct)."""
        a = self.args
        if target == "direct":
            return None
        if target == "meshgate":
            conf = write_meshgate_conf(self.tmp, a)
            cmd = [a.meshgate_bin, "-c", conf, "--shards", str(a.shards), "--mode", a.meshgate_mode,
                   "--log-level", "warn"]
            if "--drain-time-s" in self.mg_help:
                cmd += ["--drain-time-s", "1"]
            if "--no-pin" in self.mg_help and not a.meshgate_pin:
                cmd += ["--no-pin"]
            cmd += a.meshgate_args.split()
            proc = Proc(f"meshgate-{tag}", self.pin(cmd, "proxy"), self.raw)
        elif target == "nginx":
            conf = write_nginx_proxy_conf(self.tmp, a)
            proc = Proc(f"nginx-{tag}", self.pin(["nginx", "-p", self.tmp, "-e", f"{self.tmp}/nginx-proxy-error.log",
                                                  "-c", conf], "proxy"), self.raw)
        elif target == "haproxy":
            conf = write_haproxy_conf(self.tmp, a)
            proc = Proc(f"haproxy-{tag}", self.pin(["haproxy", "-db", "-f", conf], "proxy"), self.raw)
        else:
            raise ValueError(target)
        host, port = self.addr(target)
        if not a.client_netns:
            wait_port(host, port, proc)
        else:
            time.sleep(2)
        # nginx: wait until the worker exists, so the pid set is complete
        deadline = time.time() + 10
        while target == "nginx" and len(proc.pids()) < 1 + a.shards and time.time() < deadline:
            time.sleep(0.05)
        return proc

    def check_target(self, target):
        if self.args.client_netns:
            return
        host, port = self.addr(target)
        status, head, body = http_get(host, port)
        if status != 200 or len(body) != self.args.body_bytes:
            raise RuntimeError(f"{target}: GET / answered {status} with {len(body)} body bytes, "
                               f"want 200 / {self.args.body_bytes}:\n{head}")

    # -- measurement wrapper: CPU of proxy/upstream/load generator, and what else ran
    def measured(self, proc, fn):
        ppids = proc.pids() if proc else []
        upids = self.upstream.pids()
        t0 = time.time()
        busy0, p0, u0, c0 = system_busy_ticks(), cpu_ticks(ppids), cpu_ticks(upids), children_cpu_s()
        result = fn()
        busy1, p1, u1, c1 = system_busy_ticks(), cpu_ticks(ppids), cpu_ticks(upids), children_cpu_s()
        elapsed = time.time() - t0
        proxy_s = (p1 - p0) / CLK_TCK
        up_s = (u1 - u0) / CLK_TCK
        client_s = c1 - c0
        busy_s = (busy1 - busy0) / CLK_TCK
        result["proxy_cpu_s"] = proxy_s if proc else None
        result["upstream_cpu_s"] = up_s
        result["client_cpu_s"] = client_s
        result["system_busy_cores"] = busy_s / elapsed
        result["other_cpu_cores"] = max(0.0, busy_s - proxy_s - up_s - client_s) / elapsed
        n = result.get("requests") or 0
        result["cpu_us_per_req"] = (proxy_s * 1e6 / n) if (proc and n) else None
        return result

    def run_tool(self, name, cmd, timeout):
        path = os.path.join(self.raw, f"{name}.txt")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        with open(path, "w") as f:
            f.write("$ " + " ".join(cmd) + f"\n# exit {r.returncode}\n" + r.stdout + "\n--- stderr ---\n" + r.stderr)
        return r

    def wrk(self, target, conns, duration, name):
        a = self.args
        threads = max(1, min(a.wrk_threads, conns))
        cmd = self.client(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--timeout", "5s",
                           "--latency", "-s", os.path.join(HERE, "wrk_report.lua"), self.url(target)])
        r = self.run_tool(name, cmd, duration + 60)
        m = re.search(r"^WRKJSON (\{.*\})$", r.stdout, re.M)
        if not m:
            raise RuntimeError(f"wrk produced no report (exit {r.returncode}): {r.stderr.strip()[:400]}")
        j = json.loads(m.group(1))
        secs = j["duration_us"] / 1e6
        errors = j["err_connect"] + j["err_read"] + j["err_write"] + j["err_status"] + j["err_timeout"]
        return {
            "requests": j["requests"], "seconds": secs, "rps": j["requests"] / secs if secs else 0.0,
            "errors": errors, "p50_ms": j["p50_us"] / 1e3, "p90_ms": j["p90_us"] / 1e3, "p99_ms": j["p99_us"] / 1e3,
            "mean_ms": j["lat_mean_us"] / 1e3, "max_ms": j["lat_max_us"] / 1e3,
            "bytes_per_req": j["bytes"] / j["requests"] if j["requests"] else 0,
        }

    def oha(self, target, name):
        a = self.args
        cmd = self.client([a.oha_bin, "-z", f"{a.duration}s", "-c", str(a.fixed_connections), "-q", str(a.fixed_rate),
                           "--latency-correction", "-w", "--no-tui", "--output-format", "json",
                           "--worker-threads", "1", self.url(target)])
        r = self.run_tool(name, cmd, a.duration + 120)
        try:
            j = json.loads(r.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"oha produced no JSON (exit {r.returncode}): {r.stderr.strip()[:400]}")
        s = j["summary"]
        codes = {k: v for k, v in j.get("statusCodeDistribution", {}).items()}
        errs = j.get("errorDistribution", {})
        ok = sum(v for k, v in codes.items() if k.startswith("2"))
        samples = sum(codes.values()) + sum(errs.values())
        fails = samples - ok
        pct = j["latencyPercentiles"]
        return {
            "requests": samples, "samples": samples, "total_s": s["total"], "fails": fails,
            "fail_rate": fails / samples if samples else 0.0, "tps": s["requestsPerSec"],
            "mean_ms": s["average"] * 1e3, "p50_ms": pct["p50"] * 1e3, "p90_ms": pct["p90"] * 1e3,
            "p99_ms": pct["p99"] * 1e3, "max_ms": s["slowest"] * 1e3, "resp_bytes": s.get("sizePerRequest"),
            "error_kinds": errs,
        }

    def syscalls(self, target, proc):
        """System calls the proxy makes per request: strace -c attached to every
        process and thread of the proxy while oha sends exactly N requests over
        keep-alive connections.  strace slows the proxy down a lot, so this phase
        counts, it never times."""
        a = self.args
        out = os.path.join(self.raw, f"{target}-strace.txt")
        cmd = ["strace", "-c", "-f", "-o", out]
        for pid in proc.pids():
            cmd += ["-p", str(pid)]
        tracer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # attach
        try:
            r = self.run_tool(f"{target}-strace-oha", self.client(
                [a.oha_bin, "-n", str(a.syscalls), "-c", str(a.fixed_connections), "--no-tui", "--output-format",
                 "json", "--worker-threads", "1", self.url(target)]), 600)
            j = json.loads(r.stdout)
            codes = j.get("statusCodeDistribution", {})
            ok = sum(v for k, v in codes.items() if k.startswith("2"))
        finally:
            tracer.send_signal(signal.SIGINT)
            try:
                tracer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                tracer.kill()
        if not ok:
            raise RuntimeError("no successful request during the strace phase")
        by_call = {}
        with open(out) as f:
            for line in f:
                cols = line.split()
                # "% time seconds usecs/call calls [errors] syscall"
                if len(cols) >= 5 and cols[0].replace(".", "").isdigit() and cols[-1] != "total":
                    by_call[cols[-1]] = int(cols[3])
        total = sum(by_call.values())
        return {"requests": ok, "per_req": total / ok,
                "by_call": {k: v / ok for k, v in sorted(by_call.items(), key=lambda kv: -kv[1])}}

    def h2load(self, target, name):
        a = self.args
        cmd = self.client(h2load_command(a.h2_connections, a.h2_streams, a.duration, self.url(target, h2=True)))
        r = self.run_tool(name, cmd, a.duration + 60)
        res = parse_h2load(r.stdout)
        if res is None:
            raise RuntimeError(f"h2load output not understood (exit {r.returncode}): {r.stdout[-400:]} {r.stderr[-200:]}")
        return res

    def idle(self, target, proc):
        # RSS is read once it has settled: an allocator that gives freed pages
        # back to the kernel (meshgate's jemalloc, after about a second) is
        # still shrinking right after the burst of connections, and the
        # figure wanted is what holding them idle costs, not the burst.
        a = self.args
        host, port = self.addr(target)
        # warm the pools, then let the allocator settle
        self.wrk(target, min(40, a.idle_conns), 1, f"{target}-idle-warmup")
        time.sleep(1.0)
        base = status_kib(proc.pids(), "VmRSS")
        cmd = self.client([sys.executable, os.path.join(HERE, "idle_conns.py"), "--host", host, "--port", str(port),
                           "-n", str(a.idle_conns)])
        errpath = os.path.join(self.raw, f"{target}-idle-client.stderr")
        with open(errpath, "w") as errf:
            cl = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf, text=True)
            try:
                line = cl.stdout.readline()
                ready = json.loads(line) if line.strip() else {"ok": 0, "fail": a.idle_conns,
                                                               "first_error": "idle client died"}
                rss = settled_rss(proc)
                hwm = status_kib(proc.pids(), "VmHWM")
                cl.stdin.close()
                done_line = cl.stdout.readline()
                done = json.loads(done_line) if done_line.strip() else {}
                cl.wait(60)
            finally:
                if cl.poll() is None:
                    cl.kill()
                    cl.wait()
        ok = ready.get("ok", 0)
        res = {"idle_conns_ok": ok, "idle_conns_fail": ready.get("fail"), "idle_first_error": ready.get("first_error"),
               "idle_still_open": done.get("still_open"), "idle_rss_base_kib": base, "idle_rss_kib": rss,
               "idle_hwm_kib": hwm, "idle_kib_per_conn": (rss - base) / ok if ok else None}
        return res

    def wait_quiet(self, proc=None):
        """Wait (up to --wait-quiet seconds, at most --wait-budget in all) until unrelated processes use less
        than --quiet-cores of CPU; called before each target and each measured phase."""
        a = self.args
        if a.wait_quiet <= 0 or self.waited >= a.wait_budget:
            return
        start = time.time()
        deadline = start + min(a.wait_quiet, a.wait_budget - self.waited)
        while True:
            ours = self.upstream.pids() + (proc.pids() if proc else [])
            b0, o0, t0 = system_busy_ticks(), cpu_ticks(ours), time.time()
            time.sleep(2.0)
            other = ((system_busy_ticks() - b0) - (cpu_ticks(ours) - o0)) / CLK_TCK / (time.time() - t0)
            self.waited += time.time() - t0
            if other < a.quiet_cores:
                return
            if time.time() >= deadline:
                log(f"machine still busy ({other:.2f} cores used by other processes); going ahead anyway")
                self.notes.append(f"gave up waiting for a quiet machine ({other:.2f} cores busy) before "
                                  f"{'a phase' if proc else 'starting a target'}; any phase that was actually "
                                  "disturbed is listed above")
                return
            log(f"waiting for a quiet machine: other processes use {other:.2f} cores")

    def run_target(self, target, rnd):
        a = self.args
        tag = f"r{rnd}"
        res = {"target": target, "round": rnd}
        self.wait_quiet()
        log(f"[{target}] starting (round {rnd})")
        proc = self.start_target(target, tag)
        try:
            self.check_target(target)
            self.wrk(target, a.fixed_connections, a.warmup, f"{target}-{tag}-warmup")
            for c in a.connections:
                self.wait_quiet(proc)
                log(f"[{target}] wrk saturation, {c} connections, {a.duration}s")
                res[f"sat{c}"] = self.measured(proc, lambda c=c: self.wrk(target, c, a.duration,
                                                                          f"{target}-{tag}-wrk-c{c}"))
                r = res[f"sat{c}"]
                log(f"[{target}]   {r['rps']:.0f} req/s p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} ms, "
                    f"errors {r['errors']}, other CPU {r['other_cpu_cores']:.2f} cores")
            if a.oha_bin:
                self.wait_quiet(proc)
                log(f"[{target}] oha fixed load {a.fixed_rate} req/s over {a.fixed_connections} connections, "
                    f"{a.duration}s")
                res["fixed"] = self.measured(proc, lambda: self.oha(target, f"{target}-{tag}-oha"))
                r = res["fixed"]
                log(f"[{target}]   mean {r['mean_ms']:.3f} p99 {r['p99_ms']:.3f} ms, fails {r['fails']}, "
                    f"CPU/req {fmt(r['cpu_us_per_req'], 1)} us")
            if a.http2:
                log(f"[{target}] h2load {a.h2_connections} connections x {a.h2_streams} streams, {a.duration}s")
                try:
                    res["h2"] = self.measured(proc, lambda: self.h2load(target, f"{target}-{tag}-h2load"))
                except Exception as e:  # noqa: BLE001
                    res["h2"] = {"supported": False, "error": str(e)[:300]}
            if proc and a.syscalls > 0:
                log(f"[{target}] syscall count over {a.syscalls} requests (strace -c -f; not timed)")
                try:
                    res["syscalls"] = self.syscalls(target, proc)
                    log(f"[{target}]   {res['syscalls']['per_req']:.2f} syscalls per request")
                except Exception as e:  # noqa: BLE001
                    res["syscalls"] = {"error": str(e)[:300]}
            if proc:
                res["peak_rss_kib"] = status_kib(proc.pids(), "VmHWM")
                if not proc.alive():
                    res["crashed"] = f"exited with {proc.p.returncode}"
        finally:
            if proc:
                proc.stop()
        if proc and a.idle_conns > 0 and not a.client_netns:
            log(f"[{target}] {a.idle_conns} idle keep-alive connections on a fresh process")
            proc = self.start_target(target, f"{tag}-idle")
            try:
                res["idle"] = self.idle(target, proc)
                i = res["idle"]
                log(f"[{target}]   ok {i['idle_conns_ok']}, {i['idle_kib_per_conn'] or 0:.2f} KiB/conn")
            finally:
                proc.stop()
        return res

    def run(self):
        a = self.args
        write_environment(self)
        self.start_upstream()
        rounds = []
        for rnd in range(1, a.rounds + 1):
            for t in a.targets:
                try:
                    rounds.append(self.run_target(t, rnd))
                except Exception as e:  # noqa: BLE001 - keep going with the other targets
                    log(f"[{t}] FAILED: {e}")
                    rounds.append({"target": t, "round": rnd, "error": str(e)[:2000]})
        with open(os.path.join(self.raw, "rounds.json"), "w") as f:
            json.dump(rounds, f, indent=1)
        if a.syscalls > 0:
            write_syscalls(self.outdir, rounds, a)
        return rounds


def write_syscalls(outdir, rounds, a):
    """syscalls.md: per-request system calls of each proxy, from the last round."""
    per = {}
    for r in rounds:
        if "syscalls" in r and "per_req" in r["syscalls"]:
            per[r["target"]] = r["syscalls"]
    if not per:
        return
    calls = []
    for t in per.values():
        for k in t["by_call"]:
            if k not in calls:
                calls.append(k)
    targets = [t for t in a.targets if t in per]
    L = ["# System calls per proxied request\n",
         f"`strace -c -f` attached to each proxy while oha sent {a.syscalls:,} requests over "
         f"{a.fixed_connections} keep-alive connections (not a timing run: strace slows every call).\n",
         "| syscall | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets),
         "| **total** | " + " | ".join(f"**{per[t]['per_req']:.2f}**" for t in targets) + " |"]
    for c in calls:
        L.append(f"| {c} | " + " | ".join(f"{per[t]['by_call'].get(c, 0):.2f}" for t in targets) + " |")
    with open(os.path.join(outdir, "syscalls.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    log(f"syscalls per request: " + ", ".join(f"{t} {per[t]['per_req']:.2f}" for t in targets))


# ---------------------------------------------------------------- environment

def tool_version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
    except OSError:
        return "not installed"


def binary_time(path):
    try:
        return datetime.datetime.fromtimestamp(os.stat(path).st_mtime).isoformat(timespec="seconds")
    except OSError:
        return "?"


def write_environment(b):
    a = b.args
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!bench", ":!docs"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"nproc: {os.cpu_count()}",
        f"cpu: {cpu}",
        f"memory: {mem}",
        f"kernel: {os.uname().release} ({os.uname().version})",
        f"nginx: {tool_version(['nginx', '-v'])}",
        f"haproxy: {tool_version(['haproxy', '-v'])}",
        f"wrk: {tool_version(['wrk', '-v'])}",
        f"oha: {tool_version([a.oha_bin, '--version']) if a.oha_bin else 'not available (fixed-load phase skipped)'}",
        f"h2load: {tool_version(['h2load', '--version']) if a.http2 else 'not used'}",
        f"python: {sys.version.split()[0]}",
        f"meshgate: {a.meshgate_bin}",
        f"meshgate git sha: {sha}" + (" (tree has uncommitted changes outside bench/ and docs/)" if dirty else ""),
        f"meshgate binary: built {binary_time(a.meshgate_bin)}" if "meshgate" in a.targets else "meshgate: not run",
        f"ulimit -n: {resource.getrlimit(resource.RLIMIT_NOFILE)}",
        f"options: {' '.join(sys.argv[1:])}",
        f"targets: {' '.join(a.targets)}; shards {a.shards}; upstream workers {a.upstream_workers}; "
        f"body {a.body_bytes} B; connections {a.connections}; duration {a.duration}s; warm-up {a.warmup}s; "
        f"fixed load {a.fixed_rate} req/s over {a.fixed_connections} connections; idle {a.idle_conns}; rounds {a.rounds}",
        f"pinning: proxy={a.pin_proxy or 'none'} upstream={a.pin_upstream or 'none'} client={a.pin_client or 'none'}"
        f" meshgate-own-pinning={'on' if a.meshgate_pin else 'off (--no-pin)'}",
        f"loadavg at start: {loadavg()}",
        "busiest processes at start:",
        busiest_processes(),
    ]
    if dirty:
        diff = subprocess.run(["git", "-C", REPO, "diff", "HEAD", "--", ".", ":!bench", ":!docs"],
                              capture_output=True).stdout
        stat = subprocess.run(["git", "-C", REPO, "diff", "--shortstat", "HEAD", "--", ".", ":!bench", ":!docs"],
                              capture_output=True, text=True).stdout.strip()
        lines.append(f"uncommitted changes at start: {stat}; sha256 of the diff {hashlib.sha256(diff).hexdigest()[:16]}")
        lines.append("changed files: " + " ".join(l[3:] for l in dirty.splitlines()))
    b.env_lines = lines
    with open(os.path.join(b.outdir, "environment.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- aggregation + reports

def median(vals):
    vals = [v for v in vals if isinstance(v, (int, float)) and v is not None]
    return statistics.median(vals) if vals else None


def aggregate(rounds, args):
    """One flat dict per target over the rounds: for each load phase either the medians (--aggregate median)
    or the values of the round in which other processes disturbed that phase least (--aggregate cleanest);
    failures are always summed over all rounds, memory figures are medians."""
    out = {}
    for t in args.targets:
        rs = [r for r in rounds if r["target"] == t and "error" not in r]
        errs = [r["error"] for r in rounds if r["target"] == t and "error" in r]
        flat = {"target": t, "rounds_ok": len(rs), "error": errs[0] if errs else None}
        keys = {}
        for r in rs:
            for phase, v in r.items():
                if isinstance(v, dict):
                    for k, x in v.items():
                        keys.setdefault(f"{phase}.{k}", []).append(x)
                else:
                    keys.setdefault(phase, []).append(v)
        chosen = {}
        if args.aggregate == "cleanest":
            # per load phase, the round in which unrelated processes took the least CPU
            for phase in {p for r in rs for p, v in r.items() if isinstance(v, dict) and "other_cpu_cores" in v}:
                cands = [r for r in rs if isinstance(r.get(phase), dict)]
                least = min(r[phase].get("other_cpu_cores") or 0.0 for r in cands)
                # every round as undisturbed as the best one (within 0.05 cores) counts as clean; of those,
                # the median round by the phase's headline figure (req/s, or mean latency at fixed load)
                clean = [r for r in cands if (r[phase].get("other_cpu_cores") or 0.0) <= least + 0.05]
                key = "rps" if "rps" in clean[0][phase] else "mean_ms"
                clean.sort(key=lambda r: r[phase].get(key) or 0.0)
                best = clean[(len(clean) - 1) // 2]
                chosen[phase] = best
                flat[f"{phase}.round"] = best["round"]
        summed = (".fails", ".errors", ".idle_conns_fail", ".failed")
        for k, vs in keys.items():
            if k in ("target", "round"):
                continue
            if all(isinstance(x, bool) for x in vs):
                flat[k] = all(vs)
            elif k.endswith(summed) and all(isinstance(x, (int, float)) or x is None for x in vs):
                flat[k] = sum(x or 0 for x in vs)  # failures add up over rounds
            elif k.split(".")[0] in chosen and all(isinstance(x, (int, float)) or x is None for x in vs):
                flat[k] = chosen[k.split(".")[0]][k.split(".")[0]].get(k.split(".", 1)[1])
            elif all(isinstance(x, (int, float)) or x is None for x in vs):
                flat[k] = median(vs)
            elif all(isinstance(x, dict) for x in vs):
                merged = {}
                for d in vs:
                    for ek, ev in d.items():
                        merged[ek] = merged.get(ek, 0) + ev
                flat[k] = merged
            else:
                flat[k] = next((x for x in vs if x), None)
        out[t] = flat
    d = out.get("direct", {})
    for t, f in out.items():
        if d.get("fixed.mean_ms") is not None and f.get("fixed.mean_ms") is not None:
            f["fixed.added_mean_ms"] = f["fixed.mean_ms"] - d["fixed.mean_ms"]
            f["fixed.added_p99_ms"] = f["fixed.p99_ms"] - d["fixed.p99_ms"]
    return out


def fmt(v, nd=2, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{nd}f}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return str(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def evaluate(agg, args):
    """The project's targets; each row: (name, meshgate, nginx, haproxy, ratio_ng, ratio_hap, target text, verdict)."""
    mg, ng, hp = agg.get("meshgate", {}), agg.get("nginx", {}), agg.get("haproxy", {})
    rows = []

    def verdict(ok):
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    for c in args.connections:
        k = f"sat{c}.rps"
        best = max([x for x in (ng.get(k), hp.get(k)) if x is not None], default=None)
        r = ratio(mg.get(k), best)
        rows.append((f"saturated req/s, {c} conns", mg.get(k), ng.get(k), hp.get(k), ratio(mg.get(k), ng.get(k)),
                     ratio(mg.get(k), hp.get(k)), ">= 1.15 x better of nginx/haproxy",
                     verdict(None if r is None else r >= 1.15), "higher is better"))
    k = "fixed.cpu_us_per_req"
    r = ratio(mg.get(k), ng.get(k))
    rows.append((f"proxy CPU us/request at {args.fixed_rate} req/s", mg.get(k), ng.get(k), hp.get(k), r,
                 ratio(mg.get(k), hp.get(k)), "<= 0.85 x nginx", verdict(None if r is None else r <= 0.85),
                 "lower is better"))
    c0 = args.connections[0]
    k = f"sat{c0}.cpu_us_per_req"
    r = ratio(mg.get(k), ng.get(k))
    rows.append((f"proxy CPU us/request, saturated {c0} conns", mg.get(k), ng.get(k), hp.get(k), r,
                 ratio(mg.get(k), hp.get(k)), "<= 0.85 x nginx", verdict(None if r is None else r <= 0.85),
                 "lower is better"))
    k = "fixed.added_mean_ms"
    smaller = min([x for x in (ng.get(k), hp.get(k)) if x is not None], default=None)
    r = ratio(mg.get(k), smaller)
    ok = None if (mg.get(k) is None or smaller is None) else mg[k] <= 0.6 * smaller
    rows.append((f"added mean latency at {args.fixed_rate} req/s (ms)", mg.get(k), ng.get(k), hp.get(k),
                 ratio(mg.get(k), ng.get(k)), ratio(mg.get(k), hp.get(k)),
                 "<= 0.6 x smaller of nginx/haproxy", verdict(ok), "lower is better"))
    k = "fixed.p99_ms"
    ok = None if mg.get(k) is None or ng.get(k) is None or hp.get(k) is None else (mg[k] < ng[k] and mg[k] < hp[k])
    rows.append((f"p99 at {args.fixed_rate} req/s (ms)", mg.get(k), ng.get(k), hp.get(k), ratio(mg.get(k), ng.get(k)),
                 ratio(mg.get(k), hp.get(k)), "below both", verdict(ok), "lower is better"))
    k = "idle.idle_kib_per_conn"
    r = ratio(mg.get(k), ng.get(k))
    rows.append(("RSS per idle keep-alive conn (KiB)", mg.get(k), ng.get(k), hp.get(k), r, ratio(mg.get(k), hp.get(k)),
                 "<= nginx", verdict(None if mg.get(k) is None or ng.get(k) is None else mg[k] <= ng[k]),
                 "lower is better"))
    k = "peak_rss_kib"
    rows.append(("peak RSS under load (KiB)", mg.get(k), ng.get(k), hp.get(k), ratio(mg.get(k), ng.get(k)),
                 ratio(mg.get(k), hp.get(k)), "(reported)", "n/a", "lower is better"))
    if mg:
        fails = total_failures(mg, args)
        rows.append(("failed requests (all meshgate phases)", fails, total_failures(ng, args) if ng else None,
                     total_failures(hp, args) if hp else None, None, None, "0",
                     verdict(None if fails is None else fails == 0 and not mg.get("error") and not mg.get("crashed")),
                     ""))
    return rows


def digits(metric_name):
    if "(ms)" in metric_name:
        return 3
    if "us/request" in metric_name or "conn (KiB)" in metric_name:
        return 1
    return 0


def total_failures(f, args):
    if not f or f.get("rounds_ok", 0) == 0:
        return None
    n = 0
    for c in args.connections:
        n += int(f.get(f"sat{c}.errors") or 0)
    n += int(f.get("fixed.fails") or 0)
    if f.get("idle.idle_conns_fail"):
        n += int(f["idle.idle_conns_fail"])
    return n


def write_reports(b, rounds, agg):
    a = b.args
    out = b.outdir
    rows = evaluate(agg, a)
    # ---- CSV (one row per target, medians over rounds)
    cols = ["target", "rounds_ok"]
    for c in a.connections:
        cols += [f"sat{c}.rps", f"sat{c}.p50_ms", f"sat{c}.p90_ms", f"sat{c}.p99_ms", f"sat{c}.errors",
                 f"sat{c}.cpu_us_per_req", f"sat{c}.other_cpu_cores"]
    cols += ["fixed.samples", "fixed.total_s", "fixed.fails", "fixed.fail_rate", "fixed.tps", "fixed.mean_ms",
             "fixed.p50_ms", "fixed.p90_ms", "fixed.p99_ms", "fixed.max_ms", "fixed.resp_bytes", "fixed.added_mean_ms",
             "fixed.added_p99_ms", "fixed.cpu_us_per_req", "fixed.other_cpu_cores", "peak_rss_kib",
             "idle.idle_conns_ok", "idle.idle_rss_base_kib", "idle.idle_rss_kib", "idle.idle_kib_per_conn"]
    if a.http2:
        cols += ["h2.rps", "h2.mean_ms", "h2.max_ms", "h2.failed", "h2.supported"]
    cols += ["error"]
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for t in a.targets:
            w.writerow(["" if agg[t].get(k) is None else (f"{agg[t][k]:.4f}" if isinstance(agg[t].get(k), float)
                                                          else agg[t][k]) for k in cols])
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"aggregate": agg, "targets_vs_goals": [list(r) for r in rows]}, f, indent=1, default=str)

    # ---- Markdown
    L = []
    L.append(f"# meshgate benchmark — {os.path.basename(out)}\n")
    env = {l.split(":", 1)[0]: l.split(":", 1)[1].strip() for l in b.env_lines if ":" in l}
    L.append(f"Machine: {env.get('nproc')} cores ({env.get('cpu')}), {env.get('memory')} RAM, kernel {env.get('kernel', '').split(' ')[0]}; "
             f"{env.get('nginx')}, {env.get('haproxy')}, {env.get('wrk')}, {env.get('oha')}; meshgate {env.get('meshgate git sha')}.\n")
    L.append(f"Setup: everything on loopback; {a.shards} shard/worker/thread per proxy, upstream nginx with "
             f"{a.upstream_workers} worker serving a {a.body_bytes:,}-byte body; pinning: "
             f"{'none' if not (a.pin_proxy or a.pin_upstream or a.pin_client) else 'see environment.txt'}; "
             f"{a.duration}s per phase after {a.warmup}s warm-up; {a.rounds} round(s)"
             + (", each phase from its least disturbed round (`round` column), failures summed over all rounds"
                if a.rounds > 1 and a.aggregate == "cleanest" else ", medians" if a.rounds > 1 else "") + ". "
             f"Load average at start: {env.get('loadavg at start')}.\n")
    L.append("## 1. Saturation (wrk, closed loop)\n")
    multi = a.rounds > 1 and a.aggregate == "cleanest"
    rc_h, rc_s = (" round |", "---:|") if multi else ("", "")

    def rnd(p):
        return f" {fmt(g.get(p + 'round'), 0)} |" if multi else ""
    L.append("| target | conns | req/s | p50 ms | p90 ms | p99 ms | errors | proxy CPU µs/req | other CPU (cores) |"
             + rc_h)
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + rc_s)
    for c in a.connections:
        for t in a.targets:
            g = agg[t]
            if g.get("error") and not g.get("rounds_ok"):
                L.append(f"| {t} | {c} | failed: {g['error'].splitlines()[0][:80]} | | | | | | |")
                continue
            p = f"sat{c}."
            L.append(f"| {t} | {c} | {fmt(g.get(p + 'rps'), 0)} | {fmt(g.get(p + 'p50_ms'), 3)} | "
                     f"{fmt(g.get(p + 'p90_ms'), 3)} | {fmt(g.get(p + 'p99_ms'), 3)} | {fmt(g.get(p + 'errors'), 0)} | "
                     f"{fmt(g.get(p + 'cpu_us_per_req'), 1)} | {fmt(g.get(p + 'other_cpu_cores'), 2)} |" + rnd(p))
    L.append("")
    if a.oha_bin:
        L.append(f"## 2. Fixed load (oha, {a.fixed_rate:,} req/s over {a.fixed_connections} connections, "
                 f"latency-corrected)\n")
        L.append("| target | samples | total s | fails | fail rate | TPS | mean RT ms | 50% ms | 90% ms | 99% ms | "
                 "max RT ms | resp. length B | added mean ms | proxy CPU µs/req | other CPU (cores) |" + rc_h)
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + rc_s)
        for t in a.targets:
            g = agg[t]
            p = "fixed."
            L.append(f"| {t} | {fmt(g.get(p + 'samples'), 0)} | {fmt(g.get(p + 'total_s'), 2)} | "
                     f"{fmt(g.get(p + 'fails'), 0)} | {fmt(g.get(p + 'fail_rate'), 4)} | {fmt(g.get(p + 'tps'), 1)} | "
                     f"{fmt(g.get(p + 'mean_ms'), 3)} | {fmt(g.get(p + 'p50_ms'), 3)} | {fmt(g.get(p + 'p90_ms'), 3)} | "
                     f"{fmt(g.get(p + 'p99_ms'), 3)} | {fmt(g.get(p + 'max_ms'), 3)} | {fmt(g.get(p + 'resp_bytes'), 0)} | "
                     f"{fmt(g.get(p + 'added_mean_ms'), 3)} | {fmt(g.get(p + 'cpu_us_per_req'), 1)} | "
                     f"{fmt(g.get(p + 'other_cpu_cores'), 2)} |" + rnd(p))
        L.append("")
    else:
        L.append("## 2. Fixed load\n\nSkipped: oha is not available (see run log). Not substituted by another tool.\n")
    L.append(f"## 3. Memory\n")
    L.append(f"| target | peak RSS under load MiB | RSS before idle MiB | RSS with {a.idle_conns:,} idle conns MiB | "
             "idle conns ok | KiB per idle conn |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for t in a.targets:
        if t == "direct":
            continue
        g = agg[t]

        def mib(k):
            return fmt(g[k] / 1024, 1) if g.get(k) is not None else "n/a"
        L.append(f"| {t} | {mib('peak_rss_kib')} | {mib('idle.idle_rss_base_kib')} | {mib('idle.idle_rss_kib')} | "
                 f"{fmt(g.get('idle.idle_conns_ok'), 0)} | {fmt(g.get('idle.idle_kib_per_conn'), 2)} |")
    L.append("")
    if a.http2:
        L.append(f"## HTTP/2 (h2load, {a.h2_connections} connections x {a.h2_streams} streams, h2c prior knowledge)\n")
        L.append("| target | req/s | mean ms | max ms | failed | supported |")
        L.append("|---|---:|---:|---:|---:|---|")
        for t in a.targets:
            g = agg[t]
            L.append(f"| {t} | {fmt(g.get('h2.rps'), 0)} | {fmt(g.get('h2.mean_ms'), 3)} | {fmt(g.get('h2.max_ms'), 3)} | "
                     f"{fmt(g.get('h2.failed'), 0)} | {g.get('h2.supported', 'n/a')} |")
        L.append("")
    L.append("## meshgate against the targets\n")
    L.append("| metric | meshgate | nginx | haproxy | meshgate/nginx | meshgate/haproxy | target | verdict |")
    L.append("|---|---:|---:|---:|---:|---:|---|---|")
    for name, m, n, h, rn, rh, goal, v, _ in rows:
        nd = digits(name)
        L.append(f"| {name} | {fmt(m, nd)} | {fmt(n, nd)} | {fmt(h, nd)} | {fmt(rn, 2)} | {fmt(rh, 2)} | {goal} | {v} |")
    L.append("")
    noisy = []
    for r in rounds:
        for ph, v in r.items():
            if isinstance(v, dict) and (v.get("other_cpu_cores") or 0) >= 0.15:
                used = a.rounds == 1 or a.aggregate == "median" or agg[r["target"]].get(f"{ph}.round") == r["round"]
                noisy.append(f"{r['target']} {ph} (round {r['round']}): {v['other_cpu_cores']:.2f} cores"
                             + (" — **in the tables above**" if used else " — not reported (a cleaner round was)"))
    if noisy or b.notes:
        L.append("## Interference\n")
        L.append("Other processes used CPU during these phases (the 2 cores were shared; such figures are "
                 "pessimistic for that target):\n")
        L += [f"* {n}" for n in noisy + b.notes]
        L.append("")
    errors = [(t, agg[t]["error"]) for t in a.targets if agg[t].get("error")]
    crashed = [(t, agg[t]["crashed"]) for t in a.targets if agg[t].get("crashed")]
    if errors or crashed:
        L.append("## Problems\n")
        for t, e in errors:
            L.append(f"* {t}: {e.splitlines()[0][:300]}")
        for t, e in crashed:
            L.append(f"* {t}: process {e} during the run")
        L.append("")
    L.append("Columns: *proxy CPU µs/req* is utime+stime of the proxy process(es) (nginx master+worker) from "
             "/proc over that phase divided by the requests the load generator completed; *other CPU* is the "
             "machine's busy CPU during the phase minus proxy, upstream and load generator — work by unrelated "
             "processes (approximate; loopback softirq work done in ksoftirqd lands there too). *added mean* is "
             "the target's mean minus direct's. Raw tool output: `raw/` (not committed).\n")
    L.append(f"![latency percentiles]({b.plot_name})\n" if getattr(b, "plot_name", None) else "")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(L))
    return rows


# ---------------------------------------------------------------- plot

def plot(b, agg):
    a = b.args
    phases = [(f"sat{c}", f"wrk saturation, {c} conns") for c in a.connections]
    if a.oha_bin:
        phases.append(("fixed", f"oha {a.fixed_rate} req/s, {a.fixed_connections} conns"))
    targets = [t for t in a.targets if agg[t].get("rounds_ok")]
    pcts = ["p50_ms", "p90_ms", "p99_ms"]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return plot_svg(b, agg, phases, targets, pcts)
    fig, axes = plt.subplots(1, len(phases), figsize=(5 * len(phases), 4.2), squeeze=False)
    colors = {"p50_ms": "#4c72b0", "p90_ms": "#dd8452", "p99_ms": "#c44e52"}
    for ax, (ph, title) in zip(axes[0], phases):
        width = 0.26
        for i, p in enumerate(pcts):
            vals = [agg[t].get(f"{ph}.{p}") or 0 for t in targets]
            xs = [j + (i - 1) * width for j in range(len(targets))]
            bars = ax.bar(xs, vals, width, label=p.split("_")[0], color=colors[p])
            for x, v in zip(xs, vals):
                ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=6)
        ax.set_xticks(range(len(targets)))
        ax.set_xticklabels(targets)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("latency (ms)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"meshgate bench {os.path.basename(b.outdir)} — {a.body_bytes} B body, {a.shards} shard, loopback",
                 fontsize=11)
    fig.tight_layout()
    path = os.path.join(b.outdir, "latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "latency.png"


def plot_svg(b, agg, phases, targets, pcts):
    """Hand-written grouped bar chart (used when matplotlib is not importable)."""
    W, H, pad = 340, 300, 45
    colors = {"p50_ms": "#4c72b0", "p90_ms": "#dd8452", "p99_ms": "#c44e52"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(phases)}" height="{H + 30}" '
             f'font-family="sans-serif" font-size="10">', '<rect width="100%" height="100%" fill="white"/>']
    for k, (ph, title) in enumerate(phases):
        ox = k * W
        vals = [agg[t].get(f"{ph}.{p}") or 0 for t in targets for p in pcts]
        top = max(vals + [0.001]) * 1.15
        parts.append(f'<text x="{ox + W / 2}" y="15" text-anchor="middle" font-size="12">{title}</text>')
        parts.append(f'<line x1="{ox + pad}" y1="{H - pad}" x2="{ox + W - 10}" y2="{H - pad}" stroke="black"/>')
        parts.append(f'<text x="{ox + 5}" y="30">ms</text>')
        gw = (W - pad - 10) / max(1, len(targets))
        for j, t in enumerate(targets):
            for i, p in enumerate(pcts):
                v = agg[t].get(f"{ph}.{p}") or 0
                h = (H - pad - 30) * v / top
                x = ox + pad + j * gw + 5 + i * (gw - 10) / 3
                parts.append(f'<rect x="{x:.1f}" y="{H - pad - h:.1f}" width="{(gw - 10) / 3 - 2:.1f}" '
                             f'height="{h:.1f}" fill="{colors[p]}"/>')
                parts.append(f'<text x="{x + 2:.1f}" y="{H - pad - h - 2:.1f}" font-size="7">{v:.2f}</text>')
            parts.append(f'<text x="{ox + pad + j * gw + gw / 2:.1f}" y="{H - pad + 14}" '
                         f'text-anchor="middle">{t}</text>')
    for i, p in enumerate(pcts):
        parts.append(f'<rect x="{10 + i * 60}" y="{H + 10}" width="10" height="10" fill="{colors[p]}"/>'
                     f'<text x="{24 + i * 60}" y="{H + 19}">{p.split("_")[0]}</text>')
    parts.append("</svg>")
    with open(os.path.join(b.outdir, "latency.svg"), "w") as f:
        f.write("\n".join(parts))
    return "latency.svg"


# ---------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured phase (default 10)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up seconds before each target (default 2; quick 1)")
    ap.add_argument("--connections", default="40 256", help='wrk saturation connection counts (default "40 256")')
    ap.add_argument("--body-bytes", type=int, default=1668)
    ap.add_argument("--shards", type=int, default=1, help="meshgate shards = nginx workers = haproxy threads")
    ap.add_argument("--upstream-workers", type=int, default=1)
    ap.add_argument("--targets", default=" ".join(ALL_TARGETS))
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole target sequence; medians are reported")
    ap.add_argument("--quick", action="store_true", help="3 s phases, 1 s warm-up, 2,000 idle connections")
    ap.add_argument("--fixed-rate", type=int, default=1600)
    ap.add_argument("--fixed-connections", type=int, default=40)
    ap.add_argument("--idle-conns", type=int, default=None, help="idle keep-alive connections (default 10000; 0 skips)")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--wait-quiet", type=int, default=0,
                    help="before each target wait up to S seconds for other processes to go below --quiet-cores")
    ap.add_argument("--quiet-cores", type=float, default=0.15)
    ap.add_argument("--wait-budget", type=int, default=1200, help="total seconds --wait-quiet may spend in a run")
    ap.add_argument("--aggregate", choices=["cleanest", "median"], default="cleanest",
                    help="with --rounds > 1: per phase, the least disturbed round (default) or the median")
    ap.add_argument("--report-only", default="", metavar="DIR",
                    help="rebuild the reports of an earlier run from DIR/raw/rounds.json (same options as that run)")
    ap.add_argument("--http2", action="store_true", help="also run h2load (h2c prior knowledge) against each target")
    ap.add_argument("--syscalls", type=int, default=20000, metavar="N",
                    help="count proxy syscalls with strace -c over N requests (0 skips; default 20000)")
    ap.add_argument("--h2-connections", type=int, default=40)
    ap.add_argument("--h2-streams", type=int, default=10)
    ap.add_argument("--meshgate-bin", default=os.path.join(REPO, "target", "release", "meshgate"))
    ap.add_argument("--meshgate-mode", default="kernel", choices=["kernel", "dpdk", "auto"])
    ap.add_argument("--meshgate-args", default="", help="extra meshgate arguments (e.g. DPDK EAL options)")
    ap.add_argument("--meshgate-pin", action="store_true", help="let meshgate pin its shards (default: --no-pin)")
    ap.add_argument("--oha-bin", default=shutil.which("oha") or "", help="empty: skip the fixed-load phase")
    ap.add_argument("--pin-proxy", default="", help="taskset CPU list for the proxy under test")
    ap.add_argument("--pin-upstream", default="", help="taskset CPU list for the upstream nginx")
    ap.add_argument("--pin-client", default="", help="taskset CPU list for load generators")
    ap.add_argument("--listen-host", default="127.0.0.1", help="address the proxies listen on")
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--meshgate-addr", default="", help="DPDK testbed: meshgate's listener address (userspace stack)")
    ap.add_argument("--client-netns", default="", help="DPDK testbed: run load generators in this network namespace")
    ap.add_argument("--out", default="", help="results directory (default bench/results/<YYYY-MM-DD-HHMM>)")
    a = ap.parse_args(argv)
    a.connections = [int(x) for x in a.connections.replace(",", " ").split()]
    a.targets = a.targets.replace(",", " ").split()
    for t in a.targets:
        if t not in ALL_TARGETS:
            ap.error(f"unknown target {t!r} (known: {' '.join(ALL_TARGETS)})")
    if a.quick:
        a.duration = 3
    if a.warmup is None:
        a.warmup = 1 if a.quick else 2
    if a.idle_conns is None:
        a.idle_conns = 2000 if a.quick else 10000
    return a


def main(argv):
    args = parse_args(argv)
    if args.report_only:
        args.out = args.report_only
    b = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if args.report_only:
        with open(os.path.join(b.raw, "rounds.json")) as f:
            rounds = json.load(f)
        with open(os.path.join(b.outdir, "environment.txt")) as f:
            b.env_lines = f.read().splitlines()
    else:
        log(f"results -> {b.outdir}; scratch -> {b.tmp}")
        try:
            rounds = b.run()
        finally:
            stop_all()
            shutil.rmtree(b.tmp, ignore_errors=True)
    agg = aggregate(rounds, args)
    b.plot_name = plot(b, agg)
    rows = write_reports(b, rounds, agg)
    if not args.report_only:
        with open(os.path.join(b.outdir, "environment.txt"), "a") as f:
            f.write(f"loadavg at end: {loadavg()}\n")
    shutil.rmtree(b.tmp, ignore_errors=True)

    print()
    print(open(os.path.join(b.outdir, "results.md")).read().split("## meshgate against the targets")[0]
          .split("\n", 4)[-1])
    print("meshgate ratios (meshgate/nginx, meshgate/haproxy) against the targets:")
    print(f"  {'metric':<46} {'meshgate':>10} {'nginx':>10} {'haproxy':>10} {'mg/nginx':>9} {'mg/haproxy':>10}"
          f"   target")
    for name, m, n, h, rn, rh, goal, v, better in rows:
        nd = digits(name)
        print(f"  {name:<46} {fmt(m, nd):>10} {fmt(n, nd):>10} {fmt(h, nd):>10} {fmt(rn, 2):>9} {fmt(rh, 2):>10}"
              f"   {goal} -> {v}")
    print(f"\nwritten: {b.outdir}/results.md, results.csv, results.json, {b.plot_name}, environment.txt")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as e:
        stop_all()
        print(f"interrupted ({e}); all started processes stopped", file=sys.stderr)
        sys.exit(130)
