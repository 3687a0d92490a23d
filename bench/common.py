"""Helpers shared by the benchmark scripts: pipelines, git repos, a server handle, statistics.

Only the Python standard library is used, so the benchmark runs anywhere python3, git and a
Rust toolchain are installed.
"""

import atexit
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

TOKEN = "bench-admin-token"


def median(values):
    return statistics.median(values)


def ms(seconds):
    return seconds * 1000.0


# Every directory the benchmark creates lives under one root, removed when Python exits.
_ROOT = tempfile.mkdtemp(prefix="conveyor-bench-")
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def tmpdir(prefix):
    """A fresh, empty temporary directory."""
    return tempfile.mkdtemp(prefix=f"{prefix}-", dir=_ROOT)


def pipeline_yaml(steps):
    """One job with `steps` trivial steps; only manual triggers so a server never polls it into a run."""
    lines = ["name: bench", "on: { manual: true }", "jobs:", "  work:", "    steps:"]
    lines += ['      - run: "true"'] * steps
    return "\n".join(lines) + "\n"


def write_pipeline(directory, steps):
    with open(os.path.join(directory, "conveyor.yml"), "w") as f:
        f.write(pipeline_yaml(steps))


def git_repo(steps=1):
    """A git repository whose branch `main` has one commit holding conveyor.yml."""
    repo = tmpdir("repo")
    write_pipeline(repo, steps)

    def git(*args):
        subprocess.run(["git", "-C", repo, *args], check=True, stdout=subprocess.DEVNULL)

    git("init", "-q")
    git("symbolic-ref", "HEAD", "refs/heads/main")
    git("add", "conveyor.yml")
    git("-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q", "-m", "bench")
    return repo


def clean_env(**extra):
    """The caller's environment without Conveyor settings that would change what is measured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(extra)
    return env


def parse_rfc3339(text):
    """Server timestamps look like 2024-01-02T03:04:05.678Z (UTC, milliseconds)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rss_kib(pid):
    """Resident set size of a process, from /proc/PID/status (VmRSS, in KiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """`conveyor serve` on a free port of 127.0.0.1, with the admin token `bench-admin-token`."""

    def __init__(self, binary, data, *extra_args):
        self.binary = binary
        self.data = data
        # More `serve` arguments (e.g. `--database URL`).
        self.extra_args = list(extra_args)
        self.proc = None
        self.base = None
        # Times (time.perf_counter) of the phases of the last start.
        self.spawned_at = self.listening_at = self.ready_at = None

    def start(self):
        env = clean_env(CONVEYOR_ADMIN_TOKEN=TOKEN)
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--addr", "127.0.0.1:0", "--data", self.data, "--poll-tick", "3600", *self.extra_args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # The server prints `conveyor listening on http://ADDR (data: ...)` once it has bound.
        for line in self.proc.stdout:
            if line.startswith("conveyor listening on "):
                self.base = line.split()[3]
                break
        else:
            raise RuntimeError("conveyor serve exited before listening")
        self.listening_at = time.perf_counter()
        self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                status, _ = self.request("GET", "/readyz")
                if status == 200:
                    self.ready_at = time.perf_counter()
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.001)
        raise RuntimeError("conveyor serve did not become ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.proc.stdout.close()

    def request(self, method, path, body=None):
        """Returns (status, decoded JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def api(self, method, path, body=None):
        status, payload = self.request(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path} -> {status}: {payload}")
        return payload

    def add_project(self, name, source):
        return self.api("POST", "/api/v1/projects", {"name": name, "source": source})

    def wait_run(self, run_id, poll=0.01, timeout=60.0):
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            run = self.api("GET", f"/api/v1/runs/{run_id}")
            if run.get("finished_at"):
                return run
            time.sleep(poll)
        raise RuntimeError(f"run {run_id} did not finish")


def fmt_ms(value):
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def verdict(ok):
    return "yes" if ok else "**no**"
