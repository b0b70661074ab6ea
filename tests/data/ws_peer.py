"""WebSocket peers for tests/websocket.rs, written with the `websockets`
package (a real, independent RFC 6455 implementation).

  ws_peer.py server            echo server on 127.0.0.1, prints "PORT <n>"
  ws_peer.py client URL        runs the echo checks through URL, prints "OK"
  ws_peer.py idle URL          connects, then waits silently; prints how the
                               connection ended ("CLOSED <code>") and after
                               how long ("AFTER <seconds>")

The server echoes every message; the text message "close-me" makes it close
with code 4001 / reason "server bye" instead.
"""

import asyncio
import os
import sys
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for message in ws:
            if message == "close-me":
                await ws.close(4001, "server bye")
                return
            await ws.send(message)
    except ConnectionClosed:
        pass


async def run_server():
    async with serve(echo, "127.0.0.1", 0, max_size=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)


async def run_client(url):
    async with connect(url, max_size=None, ping_interval=None) as ws:
        await ws.send("hello, gateway")
        check(await ws.recv() == "hello, gateway", "text echo")

        blob = os.urandom(1 << 20)
        await ws.send(blob)
        got = await ws.recv()
        check(isinstance(got, bytes) and got == blob, "1 MiB binary echo")

        text = "ä" * (1 << 19)  # 1 MiB of UTF-8
        await ws.send(text)
        check(await ws.recv() == text, "1 MiB text echo")

        for i in range(200):
            await ws.send(f"m{i}")
        for i in range(200):
            check(await ws.recv() == f"m{i}", f"pipelined message {i}")

        await ws.close(1000, "client bye")
        check(ws.close_code == 1000, f"client close handshake code {ws.close_code}")
        check(ws.close_reason == "client bye", f"client close reason {ws.close_reason!r}")

    async with connect(url, max_size=None, ping_interval=None) as ws:
        await ws.send("close-me")
        try:
            await ws.recv()
            check(False, "server close expected")
        except ConnectionClosed as e:
            check(e.rcvd is not None and e.rcvd.code == 4001, f"server close code {e.rcvd}")
            check(e.rcvd.reason == "server bye", "server close reason")
    print("OK", flush=True)


async def run_idle(url):
    async with connect(url, ping_interval=None) as ws:
        await ws.send("ping")
        check(await ws.recv() == "ping", "echo before idling")
        start = time.monotonic()
        try:
            await asyncio.wait_for(ws.recv(), timeout=30)
            check(False, "no message expected")
        except ConnectionClosed as e:
            print(f"CLOSED {e.rcvd.code if e.rcvd else 1006}", flush=True)
        print(f"AFTER {time.monotonic() - start:.3f}", flush=True)


def main():
    mode = sys.argv[1]
    if mode == "server":
        asyncio.run(run_server())
    elif mode == "client":
        asyncio.run(run_client(sys.argv[2]))
    elif mode == "idle":
        asyncio.run(run_idle(sys.argv[2]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
