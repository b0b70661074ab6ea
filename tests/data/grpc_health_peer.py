"""A backend for tests/grpc_health.rs: a real gRPC health server
(`grpcio` + `grpcio-health-checking`, grpc.health.v1.Health) and a plain
HTTP/1.1 responder behind ONE port, as a gRPC service that also answers
HTTP/1.1 traffic would be.

The public port looks at the first bytes of each connection: the HTTP/2
connection preface ("PRI * HTTP/2.0...") is spliced byte for byte to the
grpcio server on a private port; anything else is served as HTTP/1.1
keep-alive, every response carrying `x-upstream-name: <name>`.

Usage: grpc_health_peer.py <name>
Prints "PORT <public port>" once ready.  Each stdin line sets the serving
status of the overall server ("") and of service "svc": SERVING,
NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN; it answers "OK <status>".
"""

import asyncio
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

NAME = sys.argv[1]


def start_grpc():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    for service in ("", "svc"):
        servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, servicer, port


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def serve_http1(first, reader, writer):
    buf = first
    body = NAME.encode()
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = await reader.read(65536)
                if not data:
                    return
                buf += data
            _, buf = buf.split(b"\r\n\r\n", 1)
            writer.write(
                b"HTTP/1.1 200 OK\r\nx-upstream-name: " + body
                + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def main():
    grpc_server, servicer, grpc_port = start_grpc()

    async def handle(reader, writer):
        first = b""
        try:
            while len(first) < 3:
                data = await reader.read(3 - len(first))
                if not data:
                    writer.close()
                    return
                first += data
        except (ConnectionError, OSError):
            return
        if first == b"PRI":
            up_r, up_w = await asyncio.open_connection("127.0.0.1", grpc_port)
            up_w.write(first)
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        else:
            await serve_http1(first, reader, writer)

    async def run():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        loop = asyncio.get_running_loop()

        def commands():
            for line in sys.stdin:
                status = line.strip()
                value = health_pb2.HealthCheckResponse.ServingStatus.Value(status)
                for service in ("", "svc"):
                    servicer.set(service, value)
                print(f"OK {status}", flush=True)
            loop.call_soon_threadsafe(loop.stop)

        threading.Thread(target=commands, daemon=True).start()
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(run())
    except RuntimeError:
        pass  # the loop stopped because stdin closed
    grpc_server.stop(0)


if __name__ == "__main__":
    main()
