"""Web UI pages against their JSON API twins, on a store of 10,000 runs and 1,000 deployments.

Builds nothing itself. Build the server and the seeder first (release profile), then run:

    cargo build --release -p conveyor --bin conveyor --example seed_store
    python3 bench/ui_pages.py                       # binaries from target/release
    python3 bench/ui_pages.py --bin-dir /work/target-bench/release
    CONVEYOR_BENCH_BIN_DIR=/work/target-bench/release python3 bench/ui_pages.py

Options: --requests N (measured requests per path, default 500), --warmup N (default 50),
--runs N (default 10000), --deployments N (default 1000), --json FILE (also write the raw
figures), --keep DIR (seed into DIR and keep it, instead of a temporary directory), --commit SHA
(the commit the binaries were built from, printed with the table; default: this checkout's HEAD).

It seeds a fresh data directory with `BIN_DIR/examples/seed_store` (through the real event
log: 3 projects, the runs with their jobs, steps and logs, a signed release for every 10th
successful run, the deployments with canary judgements, flags, the admin token
`bench-admin-token`), starts `BIN_DIR/conveyor serve --data DIR --addr 127.0.0.1:0
--isolation off --poll-tick 3600`, waits for /readyz, and then, for each page and its API twin,
sends the warm-up requests and then N requests each, alternating page and twin, one at a time
over one keep-alive HTTP/1.1 connection per path with `Authorization: Bearer
bench-admin-token`. Every answer must be 200 (the script stops and prints the body otherwise).
It prints a markdown table of p50, p99 and max (client wall time per request, ms).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

TOKEN = "bench-admin-token"
GOAL_MS = 50.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quantile(sorted_values, q):
    """Nearest-rank quantile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-q * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Connection:
    """One keep-alive HTTP/1.1 connection, authenticated with the admin token."""

    def __init__(self, host, port):
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def get(self, path):
        """(seconds, status, body bytes) of one GET."""
        start = time.perf_counter()
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}", "Connection": "keep-alive"})
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - start
        if resp.will_close:
            # A closed connection would measure a new TCP handshake next time: say so.
            raise RuntimeError(f"GET {path}: the server closed the keep-alive connection")
        return elapsed, resp.status, body

    def close(self):
        self.conn.close()


def ok(conn, path):
    elapsed, status, body = conn.get(path)
    if status != 200:
        sys.exit(f"GET {path} -> {status}:\n{body.decode(errors='replace')[:4000]}")
    return elapsed, body


def seed(bin_dir, data, runs, deployments):
    seeder = os.path.join(bin_dir, "examples", "seed_store")
    if not os.access(seeder, os.X_OK):
        sys.exit(f"{seeder} is missing: cargo build --release -p conveyor --example seed_store")
    start = time.perf_counter()
    out = subprocess.run(
        [seeder, data, "--runs", str(runs), "--deployments", str(deployments), "--token", TOKEN],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    took = time.perf_counter() - start
    lines = out.strip().splitlines()
    for line in lines[:-1]:
        print(line)
    return json.loads(lines[-1]), took


def start_server(binary, data, log_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [binary, "serve", "--data", data, "--addr", "127.0.0.1:0", "--isolation", "off", "--poll-tick", "3600"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("conveyor listening on "):
            base = line.split()[3]
            break
    else:
        sys.exit(f"conveyor serve exited before listening (log: {log_path})")
    host, port = re.match(r"http://([^:/]+):(\d+)", base).groups()
    deadline = time.perf_counter() + 30
    while True:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                c.close()
                break
            c.close()
        except OSError:
            pass
        if time.perf_counter() > deadline:
            sys.exit(f"conveyor serve did not become ready (log: {log_path})")
        time.sleep(0.01)
    return proc, host, int(port)


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


def measure_pair(host, port, page, twin, warmup, requests):
    """Latencies (ms, sorted) of `page` and `twin`, alternating, each on its own connection."""
    conns = [Connection(host, port), Connection(host, port)]
    try:
        sizes = []
        for conn, path in zip(conns, (page, twin)):
            for _ in range(warmup):
                _, body = ok(conn, path)
            sizes.append(len(body))
        times = ([], [])
        for _ in range(requests):
            for i, (conn, path) in enumerate(zip(conns, (page, twin))):
                elapsed, _ = ok(conn, path)
                times[i].append(elapsed * 1000.0)
        return [sorted(t) for t in times], sizes
    finally:
        for conn in conns:
            conn.close()


def describe(binary, commit=None):
    version = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    if commit:
        return version, commit
    try:
        head = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
            stdout=subprocess.PIPE,
            text=True,
        ).stdout.strip()
        commit = head + (" (with uncommitted changes)" if dirty else "") + ", the checkout's HEAD (pass --commit for the binary's)"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return version, commit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", default=os.environ.get("CONVEYOR_BENCH_BIN_DIR", os.path.join(REPO, "target", "release")))
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=1_000)
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--keep", help="seed into this (new) directory and keep it")
    parser.add_argument("--commit", help="the commit the binaries were built from (default: this checkout's HEAD)")
    args = parser.parse_args()

    binary = os.path.join(args.bin_dir, "conveyor")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is missing: cargo build --release -p conveyor")
    root = tempfile.mkdtemp(prefix="conveyor-ui-bench-")
    try:
        # Copies, so that a concurrent rebuild cannot swap the binaries mid-run.
        shutil.copy2(binary, os.path.join(root, "conveyor"))
        os.makedirs(os.path.join(root, "examples"))
        shutil.copy2(os.path.join(args.bin_dir, "examples", "seed_store"), os.path.join(root, "examples", "seed_store"))
        binary = os.path.join(root, "conveyor")
        version, commit = describe(binary, args.commit)
        data = args.keep or os.path.join(root, "data")
        store, seed_seconds = seed(root, data, args.runs, args.deployments)
        print(f"seeding took {seed_seconds:.1f} s")
        proc, host, port = start_server(binary, data, os.path.join(root, "serve.log"))
        try:
            results = run(host, port, store, args)
        finally:
            stop_server(proc)
        db = sum(
            os.path.getsize(os.path.join(data, f))
            for f in ("conveyor.db", "conveyor.db-wal")
            if os.path.exists(os.path.join(data, f))
        )
        report(results, store, version, commit, db, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(host, port, store, args):
    p = store["project"]
    env = f"/projects/{p}/environments/production"
    pairs = [
        ("overview", "/", "/api/v1/projects"),
        ("project", f"/projects/{p}", f"/api/v1/runs?project={p}"),
        ("run", f"/runs/{store['run']}", f"/api/v1/runs/{store['run']}"),
        ("release", f"/releases/{store['release']}", f"/api/v1/releases/{store['release']}"),
        (
            "release, compared",
            f"/releases/{store['release']}?compare={store['compare']}",
            f"/api/v1/releases/{store['release']}",
        ),
        ("environment", env, f"/api/v1{env}"),
        ("deployment", f"/deployments/{store['deployment']}", f"/api/v1/deployments/{store['deployment']}/analysis"),
        ("flags", f"{env}/flags", f"/api/v1{env}/flags"),
        ("DORA", "/dora", f"/api/v1/dora?project={p}"),
        ("audit", "/audit", "/api/v1/events?limit=100"),
        ("settings", "/settings", "/api/v1/tokens"),
    ]
    load = os.getloadavg()
    print(f"load average before measuring: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
    results = []
    for name, page, twin in pairs:
        (page_ms, twin_ms), sizes = measure_pair(host, port, page, twin, args.warmup, args.requests)
        results.append({"name": name, "page": page, "twin": twin, "page_ms": page_ms, "twin_ms": twin_ms, "sizes": sizes})
        print(
            f"  {name}: page p50 {quantile(page_ms, 0.5):.2f} p99 {quantile(page_ms, 0.99):.2f} ms, "
            f"twin p50 {quantile(twin_ms, 0.5):.2f} p99 {quantile(twin_ms, 0.99):.2f} ms",
            flush=True,
        )
    return results


def report(results, store, version, commit, db_bytes, args):
    print()
    print(f"Binary: {version}; source: commit {commit}")
    print(
        f"Store: {store['events']} events, {store['runs']} runs, {store['releases']} releases, "
        f"{store['deployments']} deployments, {len(store['projects'])} projects; database {db_bytes / 1e6:.0f} MB"
    )
    print(f"{args.requests} requests per path after {args.warmup} warm-up, one keep-alive connection each, alternating page and twin")
    print()
    print("| page | path | p50 | p99 | max | HTML | API twin | p50 | p99 | max | JSON | page p99 ≤ 50 ms |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    met = True

    def kb(size):
        return f"{size / 1000:.1f} kB" if size < 10_000 else f"{size / 1000:.0f} kB"

    for r in results:
        p, t = r["page_ms"], r["twin_ms"]
        p99 = quantile(p, 0.99)
        met &= p99 <= GOAL_MS
        print(
            f"| {r['name']} | `{r['page']}` | {quantile(p, 0.5):.1f} | {p99:.1f} | {p[-1]:.1f} | {kb(r['sizes'][0])} "
            f"| `{r['twin']}` | {quantile(t, 0.5):.1f} | {quantile(t, 0.99):.1f} | {t[-1]:.1f} | {kb(r['sizes'][1])} "
            f"| {'yes' if p99 <= GOAL_MS else '**no**'} |"
        )
    print()
    print(f"Every page ≤ {GOAL_MS:.0f} ms at p99: {'yes' if met else '**no**'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"version": version, "commit": commit, "store": store, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
