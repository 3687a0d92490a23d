"""A tiny HTTP service: the example Conveyor builds, tests, releases and delivers.

It can misbehave on purpose, to show a canary being caught: ERROR_RATE (0..1) makes that share
of requests to / fail with 500, LATENCY_MS adds that much latency to each.
"""

import http.server
import json
import os
import pathlib
import random
import time

VERSION_FILE = pathlib.Path(__file__).with_name("VERSION")


def version():
    try:
        return VERSION_FILE.read_text().strip()[:12]
    except OSError:
        return "dev"


def setting(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return float(default)


def respond(path, error_rate=0.0, roll=random.random):
    """Returns (status, body) for a request path."""
    if path == "/healthz":
        return 200, {"status": "ok"}
    if path == "/":
        if roll() < error_rate:
            return 500, {"error": "simulated failure", "version": version()}
        return 200, {"message": "hello", "version": version()}
    return 404, {"error": "not found"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        delay = setting("LATENCY_MS", 0) / 1000.0
        if delay > 0 and self.path != "/healthz":
            time.sleep(delay)
        status, body = respond(self.path, setting("ERROR_RATE", 0))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    port = int(os.environ.get("PORT", "8000"))
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
