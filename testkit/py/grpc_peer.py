"""A real gRPC server (Python `grpcio`) for the end-to-end gRPC tests.

No protoc: every method is a generic handler over raw bytes (identity
(de)serializers), so the wire is genuine gRPC (HTTP/2, length-prefixed
messages, trailers) without generated code.

Usage:  grpc_peer.py            prints "PORT <n>" then serves on 127.0.0.1:<n>
                                until stdin closes (the test owns our lifetime).
        grpc_peer.py HOST:PORT  serves on HOST:PORT until killed (the DPDK
                                testbed runs it in a network namespace).

Methods of service `test.Peer` (all bytes in, bytes out):
  Unary          echoes the request; request metadata steers it:
                   x-reply-size: N     reply with N bytes (a pattern) instead
                   x-status: CODE      fail with that status code ...
                   x-message: TEXT     ... and that message
                   x-custom: V         sent back as initial metadata x-echo-custom: V
                 every reply carries trailing metadata x-trailer: done and
                 x-trailer-bin (binary), and x-request-size: <bytes received>.
  ClientStream   replies "<messages> <total bytes>" after the client half-closes.
  ServerStream   request "N SIZE": streams N messages of SIZE bytes each.
  Bidi           echoes every message as it arrives.
  Sleep          request "MS": sleeps MS milliseconds (watching for cancellation),
                 then replies "slept".
  Endless        request "ID": server-streams one message every 20 ms until the
                 call is cancelled; the cancellation is recorded under ID.
  Events         request "ID": replies with the events recorded under ID
                 (e.g. "started cancelled"), so a client can check that the server
                 observed its cancellation.
"""

import sys
import threading
import time
from concurrent import futures

import grpc

EVENTS = {}
EVENTS_LOCK = threading.Lock()


def record(call_id, event):
    with EVENTS_LOCK:
        EVENTS.setdefault(call_id, []).append(event)


def pattern(n):
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


def metadata(context):
    return {k: v for k, v in context.invocation_metadata()}


TRAILERS = (("x-trailer", "done"), ("x-trailer-bin", b"\x00\x01\xfe\xff"))


def unary(request, context):
    md = metadata(context)
    initial = [("x-request-size", str(len(request)))]
    if "x-custom" in md:
        initial.append(("x-echo-custom", md["x-custom"]))
    context.send_initial_metadata(initial)
    context.set_trailing_metadata(TRAILERS)
    if "x-status" in md:
        context.abort(grpc.StatusCode(_code(int(md["x-status"]))), md.get("x-message", ""))
    if "x-reply-size" in md:
        return pattern(int(md["x-reply-size"]))
    return request


def _code(number):
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    raise ValueError(number)


def client_stream(request_iterator, context):
    count = 0
    total = 0
    for message in request_iterator:
        count += 1
        total += len(message)
    context.set_trailing_metadata(TRAILERS)
    return f"{count} {total}".encode()


def server_stream(request, context):
    n, size = (int(x) for x in request.decode().split())
    for i in range(n):
        yield bytes([i % 256]) * size
    context.set_trailing_metadata(TRAILERS)


def bidi(request_iterator, context):
    for message in request_iterator:
        yield message


def sleep(request, context):
    deadline = time.monotonic() + int(request.decode()) / 1000
    while time.monotonic() < deadline:
        if not context.is_active():
            return b""
        time.sleep(0.01)
    return b"slept"


def endless(request, context):
    call_id = request.decode()
    record(call_id, "started")
    context.add_callback(lambda: record(call_id, "cancelled" if not context.is_active() else "done"))
    i = 0
    while context.is_active():
        yield i.to_bytes(4, "big")
        i += 1
        time.sleep(0.02)


def events(request, context):
    with EVENTS_LOCK:
        return " ".join(EVENTS.get(request.decode(), [])).encode()


def identity(x):
    return x


def handlers():
    u = grpc.unary_unary_rpc_method_handler
    return grpc.method_handlers_generic_handler(
        "test.Peer",
        {
            "Unary": u(unary, identity, identity),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, identity, identity),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, identity, identity),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi, identity, identity),
            "Sleep": u(sleep, identity, identity),
            "Endless": grpc.unary_stream_rpc_method_handler(endless, identity, identity),
            "Events": u(events, identity, identity),
        },
    )


def main():
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.max_send_message_length", 8 * 1024 * 1024),
        ],
    )
    server.add_generic_rpc_handlers((handlers(),))
    if len(sys.argv) > 1:
        if not server.add_insecure_port(sys.argv[1]):
            sys.exit(f"cannot listen on {sys.argv[1]}")
        server.start()
        server.wait_for_termination()
        return
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)
    server.stop(grace=None)


if __name__ == "__main__":
    main()
