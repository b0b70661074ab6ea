#!/usr/bin/env bash
# Instructions per operation of the request path's hot operations, counted by
# callgrind (valgrind): HTTP/1 parse+forward, route match, RBAC, LB pick.
#
#   bench/callgrind.sh [--iterations N] [--filter REGEX] [--out FILE] [--no-write]
#                      [--bin PATH]
#
# Builds the `hotpaths` harness (dataplane/benches/hotpaths.rs, bench profile),
# then for every path it lists runs it twice under
#   valgrind --tool=callgrind --toggle-collect='*hotpaths*measured*'
# with N and 2N iterations (N = 4096 by default: a multiple of the 256-input
# cycle). Only the measured loop is collected, so set-up and process start are
# not counted; the loop's constant entry cost cancels in (Ir(2N) - Ir(N)) / N,
# the figure reported. Instruction counts do not depend on machine load, so
# the figures are reproducible on a busy machine (unlike criterion's times).
#
# Writes bench/results/instructions.md (unless --no-write, or --filter without
# --out), keeps the raw callgrind files in target/callgrind/, and installs
# valgrind (apt) when missing.
# Never part of `make test`; `make bench-instructions` runs it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
ITERATIONS=4096
FILTER=""
OUT="$REPO/bench/results/instructions.md"
OUT_SET=0
WRITE=1
BIN=""

while [ $# -gt 0 ]; do
  case "$1" in
    --iterations) ITERATIONS="$2"; shift ;;
    --filter) FILTER="$2"; shift ;;
    --out) OUT="$2"; OUT_SET=1; shift ;;
    --no-write) WRITE=0 ;;
    --bin) BIN="$2"; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "callgrind.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
  shift
done
# A filtered run would overwrite the full report with a part of it.
if [ -n "$FILTER" ] && [ "$OUT_SET" = 0 ]; then WRITE=0; fi
case "$ITERATIONS" in
  ''|*[!0-9]*|0) echo "callgrind.sh: --iterations must be a positive number" >&2; exit 1 ;;
esac

say() { echo "[callgrind] $*" >&2; }

if ! command -v valgrind >/dev/null; then
  say "installing valgrind (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi

OUT="$(realpath -m "$OUT")"
[ -z "$BIN" ] || BIN="$(realpath -m "$BIN")"
cd "$REPO"
if [ -z "$BIN" ]; then
  say "building the hotpaths harness (cargo bench -p dataplane --bench hotpaths --no-run)"
  BIN="$(cargo bench -p dataplane --bench hotpaths --no-run --message-format=json |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "hotpaths" and m.get("executable"):
        print(m["executable"])')" || true
  [ -n "$BIN" ] || { echo "callgrind.sh: building the hotpaths harness failed" >&2; exit 1; }
fi
[ -x "$BIN" ] || { echo "callgrind.sh: $BIN is not an executable" >&2; exit 1; }

RAW="$REPO/target/callgrind"
mkdir -p "$RAW"
say "harness: $BIN; N = $ITERATIONS and $((2 * ITERATIONS)) iterations; raw files in $RAW"

exec python3 - "$BIN" "$ITERATIONS" "$FILTER" "$OUT" "$WRITE" "$RAW" <<'PY'
import datetime, os, re, subprocess, sys

bin_, n, filt, out, write, raw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1", sys.argv[6]
NOT_AVAILABLE = 2
TOGGLE = "*hotpaths*measured*"

paths = subprocess.run([bin_, "--list"], check=True, capture_output=True, text=True).stdout.split()
if filt:
    paths = [p for p in paths if re.search(filt, p)]

def callgrind(path, iters):
    """Ir collected inside `measured` for one run, or None if the path is not available."""
    f = os.path.join(raw, f"{path.replace('/', '_')}.{iters}.out")
    r = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--toggle-collect={TOGGLE}", f"--callgrind-out-file={f}", bin_, path, str(iters)],
        capture_output=True, text=True)
    if r.returncode == NOT_AVAILABLE:
        return None, f
    if r.returncode != 0:
        sys.exit(f"callgrind.sh: {path} {iters} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
    with open(f) as fh:
        for line in fh:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1]), f
    sys.exit(f"callgrind.sh: no totals in {f}")

def self_costs(f):
    """function -> self Ir, from callgrind_annotate."""
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", f], capture_output=True, text=True, check=True)
    costs = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*) \[", line) or re.match(r"\s*([\d,]+)\s+(\S.*) \[", line)
        if m and "PROGRAM TOTALS" not in line:
            name = m.group(2).split(":", 1)[-1] if m.group(2).startswith("???:") or "/" in m.group(2).split(":", 1)[0] else m.group(2)
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs

rows, breakdown = [], None
for p in paths:
    a, fa = callgrind(p, n)
    if a is None:
        rows.append((p, None, None, None))
        print(f"{p:40} pending (not built yet)", file=sys.stderr)
        continue
    b, fb = callgrind(p, 2 * n)
    per_op = (b - a) / n
    fixed = 2 * a - b  # constant cost of entering the loop (should be small)
    rows.append((p, per_op, fixed, a))
    print(f"{p:40} {per_op:12,.1f} Ir/op   (fixed {fixed:,})", file=sys.stderr)
    if p == "http1/forward":
        ca, cb = self_costs(fa), self_costs(fb)
        breakdown = sorted(((cb.get(k, 0) - ca.get(k, 0)) / n, k) for k in set(ca) | set(cb))
        breakdown = [x for x in reversed(breakdown) if x[0] >= 1][:12]

def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip()
    except Exception:
        return "?"

if not write:
    sys.exit(0)

def fmt(x):
    return f"{x:,.0f}" if x is not None and abs(x - round(x)) < 0.05 else (f"{x:,.1f}" if x is not None else "")

byname = {p: (per, fixed) for p, per, fixed, _ in rows}
lines = []
lines.append("# Instructions per operation (callgrind)")
lines.append("")
lines.append(f"Generated by `bench/callgrind.sh` (`make bench-instructions`) on "
             f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
             f"meshgate `{sh('git rev-parse --short HEAD')}`{' (+ uncommitted changes)' if sh('git status --porcelain --untracked-files=no') else ''}.")
lines.append(f"{sh('valgrind --version')}, {sh('rustc --version')}, bench profile (release).")
lines.append(f"Each figure is (Ir(2N) − Ir(N)) / N with N = {n:,}, counted only inside the harness's measured loop "
             "(`--toggle-collect`), so set-up, start-up and the loop's constant entry cost are excluded. "
             "Ir = instructions executed (callgrind's \"instruction reads\"). Counts do not depend on machine load; "
             "they change only with the code, the compiler and the CPU features the code dispatches on (httparse and memchr pick AVX2 here).")
lines.append("")
lines.append("Fixtures are those of the criterion benches (`dataplane/benches/support/mod.rs`): "
             "the same operations on the same data as `cargo bench -p dataplane --bench {http1,router,rbac,lb}`.")
lines.append("")

def table(title, header, prefix, keyfn, note=None):
    sel = [(p, per, fixed) for p, per, fixed, _ in rows if p.startswith(prefix)]
    if not sel:
        return
    lines.append(f"## {title}")
    lines.append("")
    lines.append(header)
    lines.append("|" + "---|" * (header.count("|") - 2) + "---:|")
    for p, per, fixed in sel:
        cells = keyfn(p)
        lines.append("| " + " | ".join(cells) + f" | {fmt(per) if per is not None else 'pending'} |")
    lines.append("")
    if note:
        lines.append(note)
        lines.append("")

table("Harness baseline", "| operation | Ir per iteration |", "baseline/",
      lambda p: ["the measured loop calling an empty operation: included in every figure below"])
table("HTTP/1 parse + forward (one typical request)", "| path | operation | Ir per request |", "http1/",
      lambda p: [p, {"http1/forward": "parse a 9-field, 426-byte request head, strip hop-by-hop fields, append to x-forwarded-for, "
                 "set x-forwarded-proto and a fresh x-request-id, encode the upstream head into a reused buffer",
                 "http1/parse": "of which: `parse_request_head` alone"}[p]])
table("Route match (`RouteTable::find`)", "| routes | probe | Ir per lookup |", "router/",
      lambda p: [f"{int(p.split('/')[1]):,}", p.split('/')[2]],
      "Includes reading the Host header and splitting the path, as the connection manager's lookup does. Probes "
      "(as in `benches/router.rs`): `prefix` a prefix route near the end of the table, `header` a header-matched one "
      "(sent with the header), `regex` the last regex route, `miss` nothing but the catch-all.")
table("RBAC (`rbac::Engine::evaluate`, ALLOW policy of CIDR `remote_ip` principals)", "| CIDR ranges | address | Ir per check |", "rbac/",
      lambda p: [f"{int(p.split('/')[1]):,}", {"hit": "listed (average over 256)", "miss": "not listed (average over 256)"}[p.split('/')[2]]])
table("Load-balancer pick (`Balancer::pick`)", "| policy | hosts | Ir per pick |", "lb/",
      lambda p: [p.split('/')[1], f"{int(p.split('/')[2]):,}"],
      "`*_weighted`: weights 1–5, so ROUND_ROBIN and LEAST_REQUEST use the EDF scheduler, whose cost depends on "
      "its heap's state: the figure is the mean over picks N+1..2N and moves by about 1 % with N. "
      "The other pickers cost the same on every pick. RING_HASH (Envoy's default minimum ring of 1,024) is a binary search "
      "over 1,030 ring entries at 10 hosts and 2,000 at 1,000 hosts, 11 steps either way; MAGLEV an index into its "
      "65,537-entry table.")
table("Userspace TCP path (smoltcp stacks on the in-memory wire)", "| other connections open (idle) | Ir per exchange |", "tcp/userspace/",
      lambda p: [f"{int(p.split('/')[2]):,}"],
      "One exchange on one connection: the client writes the 426-byte request, both stacks are polled, the server "
      "reads it and writes a 1,756-byte response (1,668-byte body), both stacks are polled, the client reads it — "
      "on both stacks: TCP segmentation, the 4-tuple demultiplexing, smoltcp ingress/egress, ACK and timer "
      "bookkeeping, and the copies into and out of the socket buffers (the in-memory wire adds one `Vec` per frame, "
      "where DPDK fills an mbuf). Virtual clock, 100 µs per poll. The cost must not depend on how many other "
      "connections are open.")

if breakdown:
    lines.append("## Where parse + forward spends its instructions")
    lines.append("")
    lines.append("Self cost per request by function (the same difference of two runs), top entries:")
    lines.append("")
    lines.append("| function | Ir per request |")
    lines.append("|---|---:|")
    for per, name in breakdown:
        lines.append(f"| `{name}` | {fmt(per)} |")
    lines.append("")

lines.append("## Reproduce")
lines.append("")
lines.append("```sh")
lines.append("make bench-instructions            # = bench/callgrind.sh")
lines.append("bench/callgrind.sh --filter '^lb/'  # a subset; --no-write to only print")
lines.append("target/release/deps/hotpaths-* --list   # the paths")
lines.append("```")
lines.append("")
with open(out, "w") as fh:
    fh.write("\n".join(lines))
print(f"[callgrind] wrote {out}", file=sys.stderr)
PY
