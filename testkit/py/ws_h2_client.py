"""WebSocket over HTTP/2 (RFC 8441 extended CONNECT), h2c prior knowledge.

The HTTP/2 layer is the PyPI `h2` state machine (flow control, HPACK); the
WebSocket framing (RFC 6455 §5: masked client frames, fragmentation,
close handshake) is written by hand here, since no WebSocket library speaks
RFC 8441.

Usage:  ws_h2_client.py HOST:PORT PATH echo
            requires SETTINGS_ENABLE_CONNECT_PROTOCOL, opens `:protocol
            websocket`, expects 200, then checks echoes of a text message,
            a binary message, 1 MiB binary, 1 MiB text, the close handshake
            (1000 both ways) and END_STREAM both ways.
        ws_h2_client.py HOST:PORT PATH status
            opens the tunnel and prints the response status only.
Prints "PASS ..." (exit 0) or "FAIL ..." (exit 1).
"""

import os
import socket
import struct
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings

TIMEOUT = 20


class Failed(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Failed(why)


class Tunnel:
    def __init__(self, host, port, path):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.authority = f"{host}:{port}"
        self.path = path
        self.stream_id = None
        self.status = None
        self.inbox = bytearray()
        self.ended = False  # the server's END_STREAM
        self.reset = None
        self.connect_enabled = False
        self.settings_seen = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        data = self.sock.recv(65536)
        if not data:
            raise Failed("the gateway closed the connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
                if h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL in event.changed_settings:
                    self.connect_enabled = event.changed_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL].new_value == 1
            elif isinstance(event, h2.events.ResponseReceived):
                self.status = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.inbox += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise Failed(f"GOAWAY {event.error_code}")
        self.flush()

    def open(self):
        while not self.settings_seen:
            self.pump()
        check(self.connect_enabled, "the gateway did not send SETTINGS_ENABLE_CONNECT_PROTOCOL=1")
        self.stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            self.stream_id,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", self.path),
                (":authority", self.authority),
                ("sec-websocket-version", "13"),
            ],
        )
        self.flush()
        while self.status is None and self.reset is None:
            self.pump()
        return self.status

    def send_bytes(self, data):
        data = memoryview(data)
        while data:
            window = min(self.conn.local_flow_control_window(self.stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump()
                continue
            chunk, data = data[:window], data[window:]
            self.conn.send_data(self.stream_id, bytes(chunk))
            self.flush()

    def send_frame(self, opcode, payload, fin=True):
        # RFC 6455 §5.2: client frames are masked.
        head = bytearray([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head.append(0x80 | 126)
            head += struct.pack("!H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack("!Q", n)
        mask = os.urandom(4)
        head += mask
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask(payload, mask)
        self.send_bytes(bytes(head) + masked)

    def recv_frame(self):
        """Returns (fin, opcode, payload) of the next server frame (unmasked, §5.1)."""
        while True:
            frame = _parse(self.inbox)
            if frame is not None:
                fin, opcode, payload, used = frame
                del self.inbox[:used]
                return fin, opcode, payload
            if self.ended:
                raise Failed("the tunnel ended in the middle of a frame")
            check(self.reset is None, f"stream reset {self.reset}")
            self.pump()

    def recv_message(self):
        fin, opcode, payload = self.recv_frame()
        parts = [payload]
        while not fin:
            fin, cont, more = self.recv_frame()
            check(cont == 0, f"expected a continuation frame, got opcode {cont}")
            parts.append(more)
        return opcode, b"".join(parts)


def _mask(payload, mask):
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def _parse(buf):
    if len(buf) < 2:
        return None
    fin = bool(buf[0] & 0x80)
    opcode = buf[0] & 0x0F
    masked = buf[1] & 0x80
    n = buf[1] & 0x7F
    at = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = struct.unpack("!H", buf[2:4])[0]
        at = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = struct.unpack("!Q", buf[2:10])[0]
        at = 10
    if masked:
        raise Failed("a server frame was masked (RFC 6455 §5.1)")
    if len(buf) < at + n:
        return None
    return fin, opcode, bytes(buf[at : at + n]), at + n


def echo(t):
    status = t.open()
    check(status == 200, f"extended CONNECT answered {status} (reset {t.reset})")
    cases = [
        (0x1, "hello, gateway over h2".encode()),
        (0x2, os.urandom(1000)),
        (0x2, os.urandom(1 << 20)),
        (0x1, ("ä" * (1 << 19)).encode()),
    ]
    for opcode, payload in cases:
        t.send_frame(opcode, payload)
        got_op, got = t.recv_message()
        check(got_op == opcode, f"echo opcode {got_op}, want {opcode}")
        check(got == payload, f"echo of {len(payload)} bytes differs ({len(got)} back)")
    # Close handshake (§5.5.1): our close, the server's close back.
    t.send_frame(0x8, struct.pack("!H", 1000) + b"bye")
    op, payload = t.recv_message()
    check(op == 0x8, f"expected a close frame, got opcode {op}")
    check(struct.unpack("!H", payload[:2])[0] == 1000, f"close code {payload[:2]!r}")
    # Then both directions of the stream end: ours with END_STREAM, the
    # server's as the upstream closes its side.
    t.conn.end_stream(t.stream_id)
    t.flush()
    while not t.ended and t.reset is None:
        t.pump()
    check(t.ended, f"the stream was reset ({t.reset}) instead of ended")
    return "text, binary, 1 MiB binary, 1 MiB text echoed; close 1000; END_STREAM both ways"


def status(t):
    return f"status {t.open()}"


def main():
    target, path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    host, port = target.rsplit(":", 1)
    try:
        t = Tunnel(host, int(port), path)
        detail = {"echo": echo, "status": status}[mode](t)
    except (Failed, OSError) as e:
        print(f"FAIL {mode}: {e}", flush=True)
        sys.exit(1)
    print(f"PASS {mode} {detail}", flush=True)


if __name__ == "__main__":
    main()
