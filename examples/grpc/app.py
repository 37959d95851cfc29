"""A plain gRPC app on Python grpcio (the real gRPC stack and its
standard health service, from PyPI): the service lameduck.test.Echo with Echo, Slow
(answers after int(message) ms), Count (server streaming), Concat (client streaming)
and Chat (bidi). Methods take and return raw bytes, so no generated code is needed.
The test suites run it, and so can the lab:

    lameduck lab --manifest examples/grpc/deployment.yaml \
      --app-cmd 'python3 examples/grpc/app.py --host {host} --port {port} --stop-grace 0' \
      --grpc /lameduck.test.Echo/Slow --grpc-message 313030

Usage: app.py [--serving-after SECONDS] [--host HOST] [--port PORT] [--stop-grace SECONDS].
Prints "listening on PORT" once bound (127.0.0.1, port 0 by default); on SIGTERM it
stops with a grace of --stop-grace seconds (default 5: GOAWAY, calls in flight
finish), or with 0 exits at once, as a server without a SIGTERM handler does.
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
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stop-grace", type=float, default=5.0)
    args = parser.parse_args()
    if args.stop_grace == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

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
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(f"listening on {port}", file=sys.stderr, flush=True)

    def serving():
        time.sleep(args.serving_after)
        for name in ("", SERVICE):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        print("serving", file=sys.stderr, flush=True)

    threading.Thread(target=serving, daemon=True).start()
    if args.stop_grace == 0:
        server.wait_for_termination()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    print("stopping", file=sys.stderr, flush=True)
    server.stop(args.stop_grace).wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
