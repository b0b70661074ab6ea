#!/usr/bin/env python3
"""Where a proxy's CPU goes, kernel included: meshgate, nginx and HAProxy side by side.

    bench/kernel-profile.py [--targets "meshgate nginx haproxy"] [--loads "saturation fixed h2"]
                            [--duration 10] [--frequency 2000] [--meshgate-bin PATH] [--out DIR]
                            [--syscalls] [--h2-streams 10]
    bench/kernel-profile.py --split NAME PERF_DATA CPU_US_PER_REQUEST [--split ...]

The CPU targets of issue 6 are judged on utime+stime, and on this kind of
machine most of that is system time, which callgrind cannot see.  The VMs
have no hardware performance counters, but perf's software `cpu-clock` event
samples kernel and user stacks alike, so this script records each proxy
(`perf record -e cpu-clock -g -p <proxy pids>`) under the harness's two loads
(wrk at 40 connections; oha at 1,600 req/s over 40 connections; with the load
`h2`, h2load over h2c prior knowledge, 40 connections x 10 streams), with the same
upstream and configs as bench/driver.py, and writes `profile.md` (CPU µs per
request split into user code, wake-ups/context switches, TCP/IP, epoll,
system-call entry and the rest of the kernel, plus each target's top
symbols, and the machine-wide TCP segment counters per request: how many
segments one proxied exchange costs) and the raw `perf report` text into
bench/results/profile-<date>/.
Sampling costs the profiled process a few per cent, alike for every target;
compare targets within one run.  Needs root and perf (installs Debian's
linux-perf when missing).  Never part of `make test`.

`--split` only splits recordings made elsewhere (bench/dpdk-testbed.sh
--perf records its 50-connection rows) and prints the same table, as
Markdown, on stdout.
"""
import argparse
import glob
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver  # noqa: E402  (same configs, ports and process handling as the harness)

# Kernel symbols by what they do; the first matching pattern wins.  The
# irqrestore/irq unlocks are where a timer sample taken with interrupts off
# lands: on these paths that is mostly try_to_wake_up (waking the peer
# process) and the switch itself.
CATEGORIES = [
    ("wake-ups and context switches",
     r"finish_task_switch|__schedule|^schedule|_raw_spin_unlock_irq|try_to_wake_up|ttwu|enqueue_|dequeue_|"
     r"update_curr|update_load|pick_next|pick_eevdf|__switch_to|switch_mm|select_task_rq|psi_|"
     r"exit_to_user_mode|set_next_entity|put_prev|hrtimer|native_sched_clock|sched_clock|wake_up|"
     r"__wake_up|autoremove_wake|default_wake|prepare_to_wait|finish_wait|newidle|idle"),
    ("epoll", r"^ep_|epoll|__fput_light"),
    # The testbed's virtual wire (bench/dpdk-testbed.sh); nothing on loopback.
    ("virtual NIC (af_packet, veth, bridge)", r"^packet_|tpacket|veth|^br_|bridge"),
    ("TCP/IP (kernel stack)",
     r"tcp|^ip_|^__ip_|inet|skb|^sk_|^__sk|sock|loopback|net_rx|netif|process_backlog|^__dev_|^dev_|napi|"
     r"dst_|^nf_|softirq|bh_enable|raw_local_deliver|validate_xmit|copy_to_iter|copy_from_iter|"
     r"copy_user|csum|kmem_cache|kfree|kmalloc|__alloc_pages|free_unref|page_frag|mod_timer|"
     r"__mod_timer|lock_sock|release_sock|read_tsc|ktime_get|bbr_|cubic|eth_type_trans|slab_|bpf_skops"),
    ("system-call entry and file lookup",
     r"do_syscall|entry_SYSCALL|syscall_|__x64_sys|fdget|__fget|fput|security_|apparmor|"
     r"import_iovec|iovec|rw_verify|vfs_|__sys_|do_iter|sockfd_lookup|__check_object_size|__virt_addr_valid|"
     r"is_vmalloc_addr|__put_user|__get_user|rseq"),
]


def categorise(sym):
    for name, pattern in CATEGORIES:
        if re.search(pattern, sym):
            return name
    return "other kernel"


def perf_report(data):
    """[(percent, dso, symbol, is_kernel)] of self time, every sample."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                          "--sort", "dso,sym", "-t", ";", "--percent-limit", "0"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        if line.startswith("#") or ";" not in line:
            continue
        pct, dso, sym = (f.strip() for f in line.split(";", 2))
        kernel = sym.startswith("[k]")
        rows.append((float(pct.rstrip("%")), dso, sym[4:], kernel))
    return out, rows


def split(rows):
    shares = {"user code (proxy and libc)": 0.0}
    for pct, _, sym, kernel in rows:
        key = categorise(sym) if kernel else "user code (proxy and libc)"
        shares[key] = shares.get(key, 0.0) + pct
    return shares


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="meshgate nginx haproxy")
    ap.add_argument("--loads", default="saturation fixed")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--frequency", type=int, default=2000, help="samples per second of CPU time")
    ap.add_argument("--connections", type=int, default=40)
    ap.add_argument("--fixed-rate", type=int, default=1600)
    ap.add_argument("--syscalls", action="store_true",
                    help="also count system calls per request by name (perf stat on the syscall tracepoints)")
    ap.add_argument("--h2-streams", type=int, default=10, help="concurrent streams per connection (load h2)")
    ap.add_argument("--meshgate-bin", default=os.path.join(driver.REPO, "target", "release", "meshgate"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--split", nargs=3, action="append", metavar=("NAME", "PERF_DATA", "CPU_US_PER_REQUEST"),
                    help="only split these recordings (repeatable) and print the table")
    a = ap.parse_args()
    if a.split:
        results = {}
        for name, data, us in a.split:
            _, rows = perf_report(data)
            results[name] = {"us_per_req": float(us), "shares": split(rows), "top": rows[:15]}
        print("\n".join(section_lines(results)))
        return
    if os.geteuid() != 0:
        sys.exit("kernel-profile.py: needs root (perf on other processes, kernel symbols)")
    if not shutil.which("perf"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "linux-perf"], check=True)
    for tool in ["wrk", "oha", "nginx"] + (["haproxy"] if "haproxy" in a.targets else []) + \
            (["h2load"] if "h2" in a.loads.split() else []):
        if not shutil.which(tool):
            sys.exit(f"kernel-profile.py: {tool} is missing (bench/run.sh installs it)")
    if "meshgate" in a.targets and not os.access(a.meshgate_bin, os.X_OK):
        sys.exit(f"kernel-profile.py: no meshgate binary at {a.meshgate_bin} (cargo build --release)")

    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    out = a.out or os.path.join(driver.HERE, "results", f"profile-{stamp}")
    raw = os.path.join(out, "raw")
    os.makedirs(raw, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="meshgate-profile-")
    os.chmod(tmp, 0o755)  # nginx workers run as nobody and read the body from here
    h2 = "h2" in a.loads.split()
    cfg = types.SimpleNamespace(body_bytes=1668, upstream_host="127.0.0.1", listen_host="127.0.0.1", http2=h2,
                                upstream_workers=1, shards=1, meshgate_addr=None)
    driver.nofile_limit()
    results = {}
    try:
        up = driver.Proc("upstream", ["nginx", "-p", tmp, "-e", f"{tmp}/upstream-error.log",
                                      "-c", driver.write_upstream_conf(tmp, cfg)], raw)
        driver.wait_port("127.0.0.1", driver.PORTS["upstream"], up)
        for target in a.targets.split():
            proc = start(target, tmp, cfg, a, raw)
            pids = proc.pids()
            if target == "nginx":  # the worker, not the master
                pids = [p for p in pids if p != proc.pid] or pids
            for load in a.loads.split():
                port = driver.PORTS[f"{target}_h2" if load == "h2" else target]
                url = f"http://127.0.0.1:{port}/"
                results[(target, load)] = profile(target, load, url, pids, a, raw)
                print(f"[profile] {target} {load}: {results[(target, load)]['us_per_req']:.1f} µs/request")
            proc.stop()
        up.stop()
    finally:
        driver.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    write_report(out, results, a)
    print(f"[profile] {os.path.join(out, 'profile.md')}")


def start(target, tmp, cfg, a, raw):
    if target == "meshgate":
        cmd = [a.meshgate_bin, "-c", driver.write_meshgate_conf(tmp, cfg), "--shards", "1", "--mode", "kernel",
               "--log-level", "warn", "--no-pin"]
    elif target == "nginx":
        cmd = ["nginx", "-p", tmp, "-e", f"{tmp}/nginx-proxy-error.log", "-c", driver.write_nginx_proxy_conf(tmp, cfg)]
    elif target == "haproxy":
        cmd = ["haproxy", "-db", "-f", driver.write_haproxy_conf(tmp, cfg)]
    else:
        raise SystemExit(f"unknown target {target}")
    proc = driver.Proc(target, cmd, raw)
    driver.wait_port("127.0.0.1", driver.PORTS[target], proc)
    time.sleep(0.5)
    status, _, _ = driver.http_get("127.0.0.1", driver.PORTS[target])
    if status != 200:
        raise SystemExit(f"{target} answered {status}")
    return proc


def profile(target, load, url, pids, a, raw):
    data = os.path.join(raw, f"{target}-{load}.data")
    if load == "saturation":
        cmd = ["wrk", "-t", "2", "-c", str(a.connections), "-d", f"{a.duration}s", url]
    elif load == "h2":
        cmd = driver.h2load_command(a.connections, a.h2_streams, a.duration, url)
    else:
        cmd = ["oha", "-z", f"{a.duration}s", "-c", str(a.connections), "-q", str(a.fixed_rate),
               "--latency-correction", "-w", "--no-tui", "--output-format", "json", "--worker-threads", "1", url]
    ticks0 = driver.cpu_ticks(pids)
    tcp0 = tcp_counters()
    switches0 = context_switches(pids)
    perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", str(a.frequency), "-g", "-o", data,
                             "-p", ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # --syscalls: system calls by name over the same window, from tracepoint
    # counts (no per-call tracing like strace, but every call of the
    # process then costs a little more, so it is off by default).
    counts = os.path.join(raw, f"{target}-{load}-syscalls.csv")
    tracers = [perf]
    if a.syscalls:
        tracers.append(subprocess.Popen(["perf", "stat", "-x", ",", "-o", counts, "-e", "syscalls:sys_enter_*",
                                         "-p", ",".join(map(str, pids))],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.3)
    client = subprocess.run(cmd, capture_output=True, text=True)
    for p in tracers:
        p.send_signal(signal.SIGINT)
    for p in tracers:
        p.wait(60)
    ticks = driver.cpu_ticks(pids) - ticks0
    tcp = {k: v - tcp0.get(k, 0) for k, v in tcp_counters().items()}
    switches = {k: v - switches0.get(k, 0) for k, v in context_switches(pids).items()}
    if load == "saturation":
        m = re.search(r"(\d+) requests in", client.stdout)
        requests = int(m.group(1)) if m else 0
    elif load == "h2":
        requests = (driver.parse_h2load(client.stdout) or {}).get("requests", 0)
    else:
        requests = sum(json.loads(client.stdout).get("statusCodeDistribution", {}).values())
    text, rows = perf_report(data)
    with open(os.path.join(raw, f"{target}-{load}.txt"), "w") as f:
        f.write(text)
    cpu_us = ticks / driver.CLK_TCK * 1e6
    return {"requests": requests, "us_per_req": cpu_us / requests if requests else 0.0,
            "shares": split(rows), "top": rows[:15],
            "syscalls": syscall_counts(counts, requests) if a.syscalls else {},
            "segments": {k: tcp.get(k, 0) / requests for k in SEGMENT_COUNTERS} if requests else {},
            "switches": {k: v / requests for k, v in switches.items()} if requests else {}}


SWITCH_COUNTERS = ["proxy, voluntary (it slept)", "proxy, involuntary (preempted)", "machine-wide"]


def context_switches(pids):
    """The proxy's context switches (all its threads, /proc/PID/task/*/status)
    and the whole machine's (/proc/stat `ctxt`): every switch a wake-up paid."""
    counts = dict.fromkeys(SWITCH_COUNTERS, 0)
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                with open(task) as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            counts[SWITCH_COUNTERS[0]] += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            counts[SWITCH_COUNTERS[1]] += int(line.split()[1])
            except OSError:
                pass  # a thread that ended between the listing and the read
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("ctxt "):
                counts[SWITCH_COUNTERS[2]] = int(line.split()[1])
    return counts


# Machine-wide TCP counters that tell how many segments an exchange costs.
# Client, upstream and proxy all talk over loopback, and the client and the
# upstream are the same programs for every target, so a difference between
# targets is the proxy's: e.g. a pure ACK it makes the kernel send where a
# response could have carried it.
SEGMENT_COUNTERS = ["Tcp:OutSegs", "Tcp:InSegs", "TcpExt:DelayedACKs", "TcpExt:TCPPureAcks",
                    "TcpExt:TCPHPAcks", "TcpExt:TCPAutoCorking", "TcpExt:TCPOrigDataSent"]


def tcp_counters():
    """{"Tcp:OutSegs": n, "TcpExt:DelayedACKs": n, ...} from /proc/net/snmp and /proc/net/netstat."""
    counters = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        with open(path) as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            prefix, names = names.split(":", 1)
            for n, v in zip(names.split(), values.split(":", 1)[1].split()):
                if v.lstrip("-").isdigit():
                    counters[f"{prefix}:{n}"] = int(v)
    return counters


def syscall_counts(path, requests):
    """{name: calls per request} from `perf stat -x,` output, largest first."""
    calls = {}
    try:
        with open(path) as f:
            for line in f:
                cols = line.strip().split(",")
                if len(cols) > 2 and cols[0].isdigit() and cols[2].startswith("syscalls:sys_enter_"):
                    calls[cols[2][len("syscalls:sys_enter_"):]] = int(cols[0])
    except OSError:
        return {}
    if not requests:
        return {}
    return {k: v / requests for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v}


def write_report(out, results, a):
    targets = list(dict.fromkeys(t for t, _ in results))
    loads = list(dict.fromkeys(l for _, l in results))
    lines = [f"# Kernel and user CPU profile ({datetime.datetime.now():%Y-%m-%d %H:%M})", "",
             "`bench/kernel-profile.py`: perf `cpu-clock` samples of each proxy's process, one shard/worker, "
             f"upstream nginx on loopback, {a.duration} s per load, {a.frequency} samples/s. CPU µs per request "
             "from utime+stime over the same window (sampling included); the rows split it by the sampled "
             "share of each category.", ""]
    for load in loads:
        desc = {"saturation": f"wrk, {a.connections} connections",
                "h2": f"h2load, {a.connections} connections x {a.h2_streams} streams, h2c"}.get(
            load, f"oha, {a.fixed_rate} req/s over {a.connections} connections")
        lines += [f"## {load} ({desc})", ""]
        lines += section_lines({t: results[(t, load)] for t in targets}, f" ({load})")
    with open(os.path.join(out, "profile.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def section_lines(results, label=""):
    """The split table and top symbols of {target: result}, one load."""
    targets = list(results)
    cats = ["user code (proxy and libc)"] + [c for c, _ in CATEGORIES] + ["other kernel"]
    lines = ["| CPU µs per request | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets),
             "| **total** | " + " | ".join(f"**{results[t]['us_per_req']:.1f}**" for t in targets) + " |"]
    for c in cats:
        cells = []
        for t in targets:
            share = results[t]["shares"].get(c, 0.0)
            cells.append(f"{results[t]['us_per_req'] * share / 100:.1f} ({share:.0f} %)")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("")
    if any(results[t].get("syscalls") for t in targets):
        names = list(dict.fromkeys(n for t in targets for n in list(results[t].get("syscalls", {}))[:6]))
        total = " | ".join(f"**{sum(results[t].get('syscalls', {}).values()):.2f}**" for t in targets)
        lines += per_request_table(results, "syscalls", "system calls per request", names, f"| **all** | {total} |")
    if any(results[t].get("segments") for t in targets):
        lines += per_request_table(results, "segments", "TCP counters per request (machine-wide)", SEGMENT_COUNTERS)
    if any(results[t].get("switches") for t in targets):
        lines += per_request_table(results, "switches", "context switches per request", SWITCH_COUNTERS)
    for t in targets:
        lines += [f"Top symbols, {t}{label}:", "", "| self % | where | symbol |", "|---:|---|---|"]
        for pct, dso, sym, kernel in results[t]["top"]:
            lines.append(f"| {pct:.2f} | {'kernel' if kernel else dso} | `{sym[:90]}` |")
        lines.append("")
    return lines


def per_request_table(results, key, title, names, first_row=None):
    """Markdown rows of `results[target][key][name]` (a count per request) by name and target."""
    targets = list(results)
    lines = [f"| {title} | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets)]
    if first_row:
        lines.append(first_row)
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{results[t].get(key, {}).get(n, 0.0):.2f}" for t in targets) + " |")
    return lines + [""]


if __name__ == "__main__":
    main()
