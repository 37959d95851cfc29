"""A gRPC app for the sidecar's system suite, on Python grpcio (the real gRPC stack
and its standard health service, from PyPI). Methods take and return raw bytes, so
no generated code is needed.

Usage: app.py [--serving-after SECONDS]. Prints "listening on PORT" once bound to
127.0.0.1 (port 0); on SIGTERM it stops with a 5 s grace (sending GOAWAY) and exits.
"""

import argparse
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "lameduck.test.Echo"


def echo(request, context):
    if request.startswith(b"fail:"):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, request[5:].decode("utf-8"))
    context.set_trailing_metadata((("x-echo-len", str(len(request))),))
    return request


def slow(request, context):
    """Answers after int(request) milliseconds."""
    time.sleep(int(request or b"0") / 1000)
    return request


def count(request, context):
    """Streams `n` messages `interval_ms` apart: the request is b"n,interval_ms"."""
    n, interval_ms = (int(part) for part in request.split(b","))
    for i in range(n):
        if not context.is_active():
            return
        yield str(i).encode()
        time.sleep(interval_ms / 1000)


def concat(request_iterator, context):
    return b"".join(request_iterator)


def chat(request_iterator, context):
    for message in request_iterator:
        yield b"re:" + message


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--serving-after", type=float, default=0.0)
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(echo),
                    "Slow": grpc.unary_unary_rpc_method_handler(slow),
                    "Count": grpc.unary_stream_rpc_method_handler(count),
                    "Concat": grpc.stream_unary_rpc_method_handler(concat),
                    "Chat": grpc.stream_stream_rpc_method_handler(chat),
                },
            ),
        )
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on {port}", file=sys.stderr, flush=True)

    def serving():
        time.sleep(args.serving_after)
        for name in ("", SERVICE):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        print("serving", file=sys.stderr, flush=True)

    threading.Thread(target=serving, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    print("stopping", file=sys.stderr, flush=True)
    server.stop(5).wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
