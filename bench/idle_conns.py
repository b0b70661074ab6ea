#!/usr/bin/env python3
"""Open N keep-alive HTTP/1.1 connections to HOST:PORT, send one GET on each,
read the full response, and keep every connection open.

Protocol with the caller (bench/driver.py), one JSON object per stdout line:
  {"phase": "ready", "ok": N, "fail": N, "first_error": "..."}   all connections tried
then it holds the connections until stdin is closed (or says EOF), and prints
  {"phase": "done", "still_open": N, "closed_by_peer": N}
before closing them all and exiting.

Requests are issued with bounded concurrency (--concurrency) so the proxy under
test never needs more than that many upstream connections at once; what stays
afterwards is idle client-side connection state only.
"""
import argparse
import asyncio
import json
import sys


async def open_one(host, port, request, sem, conns, stats, timeout):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except Exception as e:  # noqa: BLE001 - report any failure
            stats["fail"] += 1
            stats.setdefault("first_error", f"connect: {e!r}")
            return
        try:
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status_line, _, rest = head.partition(b"\r\n")
            status = int(status_line.split(b" ", 2)[1])
            length = None
            for line in rest.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length is None:
                raise ValueError("response without content-length")
            await asyncio.wait_for(reader.readexactly(length), timeout)
            if status != 200:
                raise ValueError(f"status {status}")
            conns.append((reader, writer))
            stats["ok"] += 1
        except Exception as e:  # noqa: BLE001
            stats["fail"] += 1
            stats.setdefault("first_error", f"request: {e!r}")
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", "--connections", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=15.0)
    args = ap.parse_args()

    request = f"GET / HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nUser-Agent: meshgate-bench-idle\r\n\r\n".encode()
    sem = asyncio.Semaphore(args.concurrency)
    conns = []
    stats = {"ok": 0, "fail": 0}
    await asyncio.gather(*(open_one(args.host, args.port, request, sem, conns, stats, args.timeout)
                           for _ in range(args.connections)))
    print(json.dumps({"phase": "ready", **stats}), flush=True)

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)

    await asyncio.sleep(0)
    closed = sum(1 for r, _ in conns if r.at_eof())
    print(json.dumps({"phase": "done", "still_open": len(conns) - closed, "closed_by_peer": closed}), flush=True)
    for _, w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
