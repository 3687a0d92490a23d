"""Runs the router benchmark described in router.sh and prints a markdown table.

Everything listens on 127.0.0.1 only. Processes started here are stopped here, by pid.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

UPSTREAM_PORT = 18181
NGINX_PORT = 18182
ROUTER_PORT = 18183

UPSTREAM_CONF = """
worker_processes 1;
daemon off;
pid {dir}/upstream.pid;
error_log {dir}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/u-body;
    proxy_temp_path {dir}/u-proxy;
    fastcgi_temp_path {dir}/u-fcgi;
    uwsgi_temp_path {dir}/u-uwsgi;
    scgi_temp_path {dir}/u-scgi;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{ return 200 "hello from upstream\\n"; }}
    }}
}}
"""

PROXY_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/p-body;
    proxy_temp_path {dir}/p-proxy;
    fastcgi_temp_path {dir}/p-fcgi;
    uwsgi_temp_path {dir}/p-uwsgi;
    scgi_temp_path {dir}/p-scgi;
    keepalive_requests 100000000;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering on;
        }}
    }}
}}
"""


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: nothing listening on port {port} after {timeout}s")


def start(args, log):
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def nginx(conf_text, name, scratch):
    path = os.path.join(scratch, f"{name}.conf")
    with open(path, "w") as f:
        f.write(conf_text)
    log = open(os.path.join(scratch, f"{name}.log"), "w")
    return start(["nginx", "-c", path, "-p", scratch, "-g", "user root;"], log)


UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def seconds(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * UNIT[m.group(2)]


def wrk(port, duration, threads, connections):
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/"],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps, "p50": p50, "p99": p99,
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def median(results):
    """The per-field median of several wrk results (errors are summed)."""
    out = {}
    for key in ("rps", "p50", "p99"):
        values = sorted(r[key] for r in results)
        out[key] = values[len(values) // 2]
    out["non2xx"] = sum(r["non2xx"] for r in results)
    out["socket_errors"] = "; ".join(r["socket_errors"] for r in results if r["socket_errors"])
    return out


def us(s):
    return f"{s * 1e6:.0f} µs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True)
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", default="1,2", help="proxy worker counts to measure")
    ap.add_argument("--out", help="also write the table to this file")
    a = ap.parse_args()
    scratch = a.scratch
    duration = a.duration
    wrk_args = (a.threads, a.connections)

    upstream = nginx(UPSTREAM_CONF.format(dir=scratch, port=UPSTREAM_PORT), "upstream", scratch)
    procs = [upstream]
    rows = []
    load_before = os.getloadavg()[0]
    try:
        wait_port(UPSTREAM_PORT)
        for workers in [int(w) for w in a.workers.split(",")]:
            proxy = nginx(
                PROXY_CONF.format(dir=scratch, port=NGINX_PORT, upstream=UPSTREAM_PORT, workers=workers),
                f"proxy{workers}", scratch,
            )
            log = open(os.path.join(scratch, f"router{workers}.log"), "w")
            router = start([a.router, f"127.0.0.1:{ROUTER_PORT}", str(workers), f"127.0.0.1:{UPSTREAM_PORT}"], log)
            procs += [proxy, router]
            wait_port(NGINX_PORT)
            wait_port(ROUTER_PORT)
            for port in (UPSTREAM_PORT, NGINX_PORT, ROUTER_PORT):
                wrk(port, 2, *wrk_args)  # warm-up: pools filled, pages touched
            # Interleaved rounds, so that background load hits all three paths alike; medians kept.
            runs = {UPSTREAM_PORT: [], NGINX_PORT: [], ROUTER_PORT: []}
            for round_ in range(a.rounds):
                for port in (UPSTREAM_PORT, NGINX_PORT, ROUTER_PORT):
                    result = wrk(port, duration, *wrk_args)
                    runs[port].append(result)
                    print(f"bench: workers {workers} round {round_} port {port} {result}", file=sys.stderr)
            stop(proxy)
            stop(router)
            rows.append((workers, median(runs[UPSTREAM_PORT]), median(runs[NGINX_PORT]), median(runs[ROUTER_PORT])))
    finally:
        for p in procs:
            stop(p)
    load_after = os.getloadavg()[0]

    lines = [
        f"wrk -t{a.threads} -c{a.connections} -d{duration}s --latency, GET / (20-byte body); upstream: nginx, "
        f"1 worker, `return 200`; {os.cpu_count()} cores shared by wrk, upstream and proxy; medians of "
        f"{a.rounds} interleaved rounds; load average {load_before:.2f} before, {load_after:.2f} after.",
        "",
        "| path | proxy workers | requests/s | p50 | p99 | added p99 vs direct | router / nginx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workers, d, n, r in rows:
        lines.append(f"| direct to upstream | – | {d['rps']:,.0f} | {us(d['p50'])} | {us(d['p99'])} | – | – |")
        lines.append(
            f"| through nginx | {workers} | {n['rps']:,.0f} | {us(n['p50'])} | {us(n['p99'])} "
            f"| {us(n['p99'] - d['p99'])} | – |"
        )
        lines.append(
            f"| through conveyor-router | {workers} | {r['rps']:,.0f} | {us(r['p50'])} | {us(r['p99'])} "
            f"| {us(r['p99'] - d['p99'])} | **{r['rps'] / n['rps']:.2f}×** |"
        )
    bad = [(w, x) for w, d, n, r in rows for x in (d, n, r) if x["non2xx"] or x["socket_errors"]]
    if bad:
        lines.append("")
        lines.append("errors seen: " + "; ".join(
            f"workers {w}: {x['non2xx']} non-2xx, socket errors {x['socket_errors'] or 'none'}" for w, x in bad))
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
