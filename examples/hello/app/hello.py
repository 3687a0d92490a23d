"""A tiny HTTP service: the example Conveyor builds, tests and releases."""

import http.server
import json
import os
import pathlib

VERSION_FILE = pathlib.Path(__file__).with_name("VERSION")


def version():
    try:
        return VERSION_FILE.read_text().strip()
    except OSError:
        return "dev"


def respond(path):
    """Returns (status, body) for a request path."""
    if path == "/healthz":
        return 200, {"status": "ok"}
    if path == "/":
        return 200, {"message": "hello", "version": version()}
    return 404, {"error": "not found"}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = respond(self.path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    port = int(os.environ.get("PORT", "8000"))
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
