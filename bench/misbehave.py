"""A small HTTP service that misbehaves on purpose, for bench/delivery_safety.py.

    PORT=8000 python3 misbehave.py [VARIANT]      (default: the first line of dist/VARIANT)

Every variant answers `GET /healthz` with 200 at once (except `unhealthy`) and every other GET
after ≈20 ms of work, 0.5% of them with a 500 at random: the service's own base rate, in every
version. The variant changes one thing:

    good       as above
    crash      exits at start (status 1), before listening
    unhealthy  listens and serves, but its health check never answers
    errors     2.5% of requests answer 500 (5× the base rate)
    latency    30 ms per request instead of 20 (+50%)
    tail       2% of requests take 200 ms more; the median is unchanged
    leak       keeps 100 KiB more memory per request; after 300 requests it fails half of them
    cpu        3× the CPU per request of `good`, at the same latency

Each request's work is CPU burnt (measured with the thread's own CPU clock, so it is the same
whatever else runs) then a sleep up to the request's latency. Standard library only;
ThreadingHTTPServer with HTTP/1.1 keep-alive handles a few hundred requests per second.
"""

import http.server
import os
import pathlib
import random
import socket
import sys
import threading
import time

BASE_MS = 20.0  # latency of a request, all variants but latency and tail
BASE_ERROR_RATE = 0.005  # share of requests answered 500 in every variant
BURN_MS = 1.0  # CPU burnt per request by `good`

VARIANTS = {
    # name: (latency ms, error rate, CPU ms burnt)
    "good": (BASE_MS, BASE_ERROR_RATE, BURN_MS),
    "crash": (BASE_MS, BASE_ERROR_RATE, BURN_MS),
    "unhealthy": (BASE_MS, BASE_ERROR_RATE, BURN_MS),
    "errors": (BASE_MS, 0.025, BURN_MS),
    "latency": (BASE_MS * 1.5, BASE_ERROR_RATE, BURN_MS),
    "tail": (BASE_MS, BASE_ERROR_RATE, BURN_MS),
    "leak": (BASE_MS, BASE_ERROR_RATE, BURN_MS),
    # 3× the CPU of `good` per request, counting the HTTP handling around the burn
    # (about 0.4 ms of Python per request, health checks included): 3 × (1 + 0.4) − 0.4.
    "cpu": (BASE_MS, BASE_ERROR_RATE, 3 * (BURN_MS + 0.4) - 0.4),
}
TAIL_SHARE, TAIL_EXTRA_MS = 0.02, 200.0
LEAK_BYTES, LEAK_AFTER, LEAK_FAIL_SHARE = 100 * 1024, 300, 0.5


def variant_name():
    if len(sys.argv) > 1:
        return sys.argv[1]
    return pathlib.Path("dist/VARIANT").read_text().split()[0]


VARIANT = variant_name()
if VARIANT not in VARIANTS:
    sys.exit(f"misbehave: unknown variant {VARIANT!r}")
LATENCY_MS, ERROR_RATE, CPU_MS = VARIANTS[VARIANT]

if VARIANT == "crash":
    print("misbehave: crash variant, exiting at start", file=sys.stderr, flush=True)
    sys.exit(1)

leaked = []
served = 0
lock = threading.Lock()


def burn(ms):
    end = time.thread_time() + ms / 1000.0
    x = 0
    while time.thread_time() < end:
        for i in range(200):
            x += i * i
    return x


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body are two writes: without this, Nagle's algorithm holds the body until
        # the client's delayed ACK, 40 ms later.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        global served
        if self.path == "/healthz":
            if VARIANT == "unhealthy":
                time.sleep(3600)  # never answers; the connection stays open until the checker gives up
                return
            return self.answer(200, b"ok\n")
        started = time.perf_counter()
        with lock:
            served += 1
            count = served
            if VARIANT == "leak":
                leaked.append(bytearray(b"\x01") * LEAK_BYTES)  # written, so resident
        burn(CPU_MS)
        latency = LATENCY_MS
        if VARIANT == "tail" and random.random() < TAIL_SHARE:
            latency += TAIL_EXTRA_MS
        rest = latency / 1000.0 - (time.perf_counter() - started)
        if rest > 0:
            time.sleep(rest)
        failing = random.random() < ERROR_RATE
        if VARIANT == "leak" and count > LEAK_AFTER and random.random() < LEAK_FAIL_SHARE:
            failing = True
        if failing:
            return self.answer(500, b"internal error\n")
        return self.answer(200, f"{VARIANT} {count}\n".encode())

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


if __name__ == "__main__":
    Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
