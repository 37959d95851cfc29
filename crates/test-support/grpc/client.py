"""gRPC calls for the sidecar's system suite, on Python grpcio. Prints one JSON
object with what it saw.

  client.py calls ADDR              every RPC shape once, a status error, a deadline
  client.py unary ADDR N C          N unary calls, C at a time, on one channel
  client.py loop ADDR STOP_FILE     unary calls (4 threads, one channel) until STOP_FILE exists
  client.py stream ADDR N MS [STARTED_FILE]
                                    one server-streaming call of N messages MS apart
                                    (STARTED_FILE is created at the first message)
"""

import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "/lameduck.test.Echo/"


def method(channel, kind, name):
    return getattr(channel, kind)(SERVICE + name)


def calls(addr):
    out = {}
    with grpc.insecure_channel(addr) as channel:
        reply, call = method(channel, "unary_unary", "Echo").with_call(b"hello", timeout=5)
        out["unary"] = {
            "reply": reply.decode(),
            "code": call.code().name,
            "trailers": dict(call.trailing_metadata()),
        }
        try:
            method(channel, "unary_unary", "Echo")(
                "fail:bad input: ünïcode, 100%".encode(), timeout=5
            )
            out["error"] = {"code": "OK"}
        except grpc.RpcError as error:
            out["error"] = {"code": error.code().name, "details": error.details()}
        stream = method(channel, "unary_stream", "Count")(b"5,10", timeout=5)
        out["server_stream"] = {
            "messages": [m.decode() for m in stream],
            "code": stream.code().name,
        }
        reply = method(channel, "stream_unary", "Concat")(
            iter([b"a", b"b", b"c"]), timeout=5
        )
        out["client_stream"] = reply.decode()
        chat = method(channel, "stream_stream", "Chat")(iter([b"1", b"2", b"3"]), timeout=5)
        out["bidi"] = [m.decode() for m in chat]
        try:
            method(channel, "unary_unary", "Slow")(b"2000", timeout=0.3)
            out["deadline"] = "OK"
        except grpc.RpcError as error:
            out["deadline"] = error.code().name
    return out


def unary(addr, n, concurrency):
    codes = {}
    lock = threading.Lock()
    with grpc.insecure_channel(addr) as channel:
        echo = method(channel, "unary_unary", "Echo")

        def one(i):
            payload = str(i).encode()
            try:
                reply = echo(payload, timeout=10)
                code = "OK" if reply == payload else "WRONG_REPLY"
            except grpc.RpcError as error:
                code = error.code().name
            with lock:
                codes[code] = codes.get(code, 0) + 1

        with futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(n)))
    return {"codes": codes}


def loop(addr, stop_file):
    codes, states, errors = {}, [], []
    lock = threading.Lock()
    started = time.monotonic()
    with grpc.insecure_channel(addr) as channel:
        channel.subscribe(
            lambda state: states.append([round(time.monotonic() - started, 3), state.name]),
            try_to_connect=True,
        )
        slow = method(channel, "unary_unary", "Slow")

        def worker():
            while not os.path.exists(stop_file):
                try:
                    slow(b"20", timeout=10)
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                    with lock:
                        errors.append(error.details())
                with lock:
                    codes[code] = codes.get(code, 0) + 1

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return {"codes": codes, "states": states, "errors": errors[:5]}


def stream(addr, n, interval_ms, started_file=None):
    received = 0
    with grpc.insecure_channel(addr) as channel:
        call = method(channel, "unary_stream", "Count")(f"{n},{interval_ms}".encode())
        try:
            for _ in call:
                received += 1
                if received == 1 and started_file:
                    open(started_file, "w").close()
            return {"received": received, "code": "OK"}
        except grpc.RpcError as error:
            return {"received": received, "code": error.code().name, "details": error.details()}


def main():
    command, addr, *rest = sys.argv[1:]
    if command == "calls":
        result = calls(addr)
    elif command == "unary":
        result = unary(addr, int(rest[0]), int(rest[1]))
    elif command == "loop":
        result = loop(addr, rest[0])
    elif command == "stream":
        result = stream(addr, int(rest[0]), int(rest[1]), *rest[2:3])
    else:
        sys.exit(f"unknown command {command!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
