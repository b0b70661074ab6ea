"""A real gRPC client (Python `grpcio`) driving testkit/py/grpc_peer.py,
directly or through meshgate.

Usage:  grpc_client.py HOST:PORT CASE [ARG]

Each case makes real calls, checks what came back and prints one line:
"PASS <case> <detail>" (exit 0) or "FAIL <case>: <why>" (exit 1).  The
checks are the test's assertions; the Rust test asserts on the line.

Cases: unary, large, client_stream, server_stream, bidi, cancel, deadline,
metadata, status, and `expect CODE [METHOD]`, which makes one unary call
(default method Unary) and checks it ends with gRPC status CODE (number);
it prints the status code and message it got either way.
"""

import sys
import threading
import time
import uuid

import grpc

TIMEOUT = 20  # seconds: generous, the machine is shared; no case is timed


def identity(x):
    return x


def pattern(n):
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


class Failed(Exception):
    pass


def check(condition, why):
    if not condition:
        raise Failed(why)


def method(channel, kind, name):
    factory = {
        "uu": channel.unary_unary,
        "us": channel.unary_stream,
        "su": channel.stream_unary,
        "ss": channel.stream_stream,
    }[kind]
    return factory(f"/test.Peer/{name}", request_serializer=identity, response_deserializer=identity)


def case_unary(ch):
    reply, call = method(ch, "uu", "Unary").with_call(b"hello", timeout=TIMEOUT)
    check(reply == b"hello", f"reply {reply!r}")
    check(call.code() == grpc.StatusCode.OK, f"code {call.code()}")
    return "echoed 5 bytes"


def case_large(ch):
    sent = pattern(300 * 1024)
    reply, call = method(ch, "uu", "Unary").with_call(
        sent, metadata=(("x-reply-size", str(310 * 1024)),), timeout=TIMEOUT
    )
    initial = dict(call.initial_metadata())
    check(initial.get("x-request-size") == str(len(sent)), f"server got {initial.get('x-request-size')} bytes")
    check(reply == pattern(310 * 1024), f"reply of {len(reply)} bytes differs")
    return f"sent {len(sent)} received {len(reply)}"


def case_client_stream(ch):
    messages = [bytes([i]) * (1000 + i) for i in range(50)]
    reply = method(ch, "su", "ClientStream")(iter(messages), timeout=TIMEOUT)
    want = f"{len(messages)} {sum(map(len, messages))}".encode()
    check(reply == want, f"reply {reply!r}, want {want!r}")
    return reply.decode()


def case_server_stream(ch):
    call = method(ch, "us", "ServerStream")(b"40 5000", timeout=TIMEOUT)
    got = list(call)
    check(len(got) == 40, f"{len(got)} messages")
    check(all(m == bytes([i]) * 5000 for i, m in enumerate(got)), "message contents differ")
    trailers = dict(call.trailing_metadata())
    check(trailers.get("x-trailer") == "done", f"trailers {trailers}")
    return f"{len(got)} messages"


def case_bidi(ch):
    # Lock-step: each message is sent only after the previous echo came back,
    # so this proves the stream is really interleaved, not buffered to the end.
    outbox = []
    ready = threading.Event()

    def requests():
        for i in range(30):
            outbox.append(f"ping {i}".encode() * (i + 1))
            yield outbox[-1]
            ready.wait(TIMEOUT)
            ready.clear()

    call = method(ch, "ss", "Bidi")(requests(), timeout=TIMEOUT)
    count = 0
    for reply in call:
        check(reply == outbox[count], f"echo {count} differs")
        count += 1
        ready.set()
    check(count == 30, f"{count} echoes")
    check(call.code() == grpc.StatusCode.OK, f"code {call.code()}")
    return f"{count} echoes in lock-step"


def case_cancel(ch):
    call_id = uuid.uuid4().hex
    call = method(ch, "us", "Endless")(call_id.encode(), timeout=TIMEOUT)
    received = 0
    for _ in call:
        received += 1
        if received == 5:
            call.cancel()
            break
    check(call.code() == grpc.StatusCode.CANCELLED, f"code {call.code()}")
    # The server must see the cancellation (RST_STREAM carried to it).
    events = method(ch, "uu", "Events")
    deadline = time.monotonic() + TIMEOUT
    seen = b""
    while time.monotonic() < deadline:
        seen = events(call_id.encode(), timeout=TIMEOUT)
        if b"cancelled" in seen:
            return f"server saw: {seen.decode()}"
        time.sleep(0.05)
    raise Failed(f"server never observed the cancellation (events: {seen!r})")


def case_deadline(ch):
    try:
        method(ch, "uu", "Sleep")(b"5000", timeout=0.5)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"code {e.code()} {e.details()}")
        return f"{e.code().name}"
    raise Failed("the call outlived its deadline")


def case_metadata(ch):
    reply, call = method(ch, "uu", "Unary").with_call(
        b"m", metadata=(("x-custom", "blue"), ("x-custom-bin", b"\x00\xff")), timeout=TIMEOUT
    )
    initial = dict(call.initial_metadata())
    trailers = dict(call.trailing_metadata())
    check(initial.get("x-echo-custom") == "blue", f"initial metadata {initial}")
    check(trailers.get("x-trailer") == "done", f"trailers {trailers}")
    check(trailers.get("x-trailer-bin") == b"\x00\x01\xfe\xff", f"binary trailer {trailers.get('x-trailer-bin')!r}")
    return "initial and trailing metadata intact"


def case_status(ch):
    try:
        method(ch, "uu", "Unary")(
            b"x", metadata=(("x-status", "9"), ("x-message", "not now: precondition")), timeout=TIMEOUT
        )
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.FAILED_PRECONDITION, f"code {e.code()}")
        check(e.details() == "not now: precondition", f"message {e.details()!r}")
        trailers = dict(e.trailing_metadata() or ())
        check(trailers.get("x-trailer") == "done", f"trailers {trailers}")
        return f"{e.code().name}: {e.details()}"
    raise Failed("the call succeeded")


def case_expect(ch, code, name="Unary"):
    want = int(code)
    try:
        method(ch, "uu", name)(b"5000" if name == "Sleep" else b"x", timeout=TIMEOUT)
        got, message = 0, ""
    except grpc.RpcError as e:
        got, message = e.code().value[0], e.details()
    check(got == want, f"status {got} ({message!r}), want {want}")
    return f"status {got} message {message!r}"


CASES = {
    "unary": case_unary,
    "large": case_large,
    "client_stream": case_client_stream,
    "server_stream": case_server_stream,
    "bidi": case_bidi,
    "cancel": case_cancel,
    "deadline": case_deadline,
    "metadata": case_metadata,
    "status": case_status,
    "expect": case_expect,
}


def main():
    target, case, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    options = [
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ("grpc.max_send_message_length", 8 * 1024 * 1024),
        ("grpc.enable_retries", 0),
    ]
    with grpc.insecure_channel(target, options=options) as ch:
        try:
            detail = CASES[case](ch, *args)
        except Failed as e:
            print(f"FAIL {case}: {e}", flush=True)
            sys.exit(1)
        except grpc.RpcError as e:
            print(f"FAIL {case}: unexpected status {e.code()} {e.details()!r}", flush=True)
            sys.exit(1)
    print(f"PASS {case} {detail}", flush=True)


if __name__ == "__main__":
    main()
