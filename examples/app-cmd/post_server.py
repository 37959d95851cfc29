#!/usr/bin/env python3
"""A plain HTTP server that is not ours, for `lameduck lab --app-cmd`.

Answers every GET and POST with 200 after reading the body; `?wait=SECONDS` delays
the answer. It knows nothing about Kubernetes: SIGTERM kills it at once.

    lameduck lab --scenario sidecar --app-cmd 'python3 examples/app-cmd/post_server.py {host} {port}'
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        wait = parse_qs(urlparse(self.path).query).get("wait", ["0"])[0]
        try:
            time.sleep(min(float(wait), 60.0))
        except ValueError:
            pass
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-pod", self.server.server_address[0])
        self.end_headers()
        self.wfile.write(body)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    ThreadingHTTPServer((host, port), Handler).serve_forever()
