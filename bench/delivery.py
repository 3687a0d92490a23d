"""Delivery under load: failed requests during a blue/green flip and during canary weight changes,
and how long a rollback takes to put all traffic back on the previous version.

    python3 bench/delivery.py BINARY        (bench/run.sh runs it after building)

Prints JSON. Load comes from client threads with keep-alive connections through the
environment's router; every non-2xx answer or connection error counts as a failed request.
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import common

APP = r'''
import http.server, os, pathlib
VERSION = pathlib.Path("dist/VERSION").read_text().strip()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''

PIPELINE = """name: shop
on: { manual: true }
jobs:
  build:
    steps:
      - run: mkdir -p dist && cp app.py VERSION dist/
    artifacts: [dist/*]
release:
  run: exec python3 dist/app.py
  health: { path: /, interval: 100ms }
  instances: 2
  stop_grace: 2s
environments:
  bluegreen:
    strategy: blue-green
  canary:
    strategy: { canary: { steps: [10, 25, 50, 75], interval: 1s } }
"""


def git(repo, *args):
    subprocess.run(
        ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )


class Load:
    """Client threads requesting `url` in a loop until stopped."""

    def __init__(self, url, threads=4):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.requests = self.failures = 0
        self.versions = {}
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        while not self.stop_flag.is_set():
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode()
                ok = 200 <= resp.status < 300
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                ok, body = False, "error"
            with self.lock:
                self.requests += 1
                self.failures += 0 if ok else 1
                self.versions[body] = self.versions.get(body, 0) + 1

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()
        return {"requests": self.requests, "failed": self.failures, "versions": self.versions}


def kill_instances(data):
    """Instances outlive the server by design; the benchmark leaves none behind."""
    marker = f"CONVEYOR_INSTANCE_OF={data}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if any(var.startswith(marker) for var in f.read().split(b"\0")):
                    os.killpg(int(pid), signal.SIGKILL)
        except OSError:
            pass


def main(binary):
    repo = common.tmpdir("shop")
    for name, text in [("conveyor.yml", PIPELINE), ("app.py", APP), ("VERSION", "v1")]:
        with open(os.path.join(repo, name), "w") as f:
            f.write(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    data = common.tmpdir("data")
    server = common.Server(binary, data).start()
    try:
        server.add_project("shop", repo)

        def release(version):
            if version != "v1":
                with open(os.path.join(repo, "VERSION"), "w") as f:
                    f.write(version)
                git(repo, "commit", "-q", "-am", version)
            run = server.api("POST", "/api/v1/projects/shop/runs", {"branch": "main"})
            done = server.wait_run(run["run_id"])
            assert done["status"] == "success", done
            return done["release_id"]

        def deploy(release_id, environment):
            d = server.api("POST", f"/api/v1/releases/{release_id}/promote", {"environment": environment})
            while True:
                view = server.api("GET", f"/api/v1/deployments/{d['deployment_id']}")
                if view.get("finished_at"):
                    assert view["status"] == "succeeded", view
                    return view
                time.sleep(0.05)

        def url(environment):
            return server.api("GET", f"/api/v1/projects/shop/environments/{environment}")["url"]

        r1, r2 = release("v1"), release("v2")
        results = {}
        for environment in ("bluegreen", "canary"):
            deploy(r1, environment)
            load = Load(url(environment))
            time.sleep(0.5)
            deploy(r2, environment)
            time.sleep(0.5)
            results[environment] = load.stop()

        # Rollback: from the command to every answer coming from v1 again.
        target = url("bluegreen")
        parsed = urllib.parse.urlparse(target)
        rollbacks = []
        for _ in range(5):
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=5)
            started = time.perf_counter()
            server.api("POST", "/api/v1/projects/shop/environments/bluegreen/rollback", {})
            while True:
                conn.request("GET", "/")
                if conn.getresponse().read().decode() == "v1":
                    break
            rollbacks.append(time.perf_counter() - started)
            conn.close()
            # Forward again (the previous version is warm too), for the next measurement.
            deploy(r2, "bluegreen")
        results["rollback_seconds"] = rollbacks
        results["rollback_median_ms"] = common.ms(common.median(rollbacks))
        print(json.dumps(results, indent=2))
    finally:
        server.stop()
        kill_instances(data)


if __name__ == "__main__":
    main(sys.argv[1])
