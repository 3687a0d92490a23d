"""Delivery safety: bad releases under a production canary.

    python3 bench/delivery_safety.py BINARY [--quick] [--json FILE] [--variants a,b] [--traffic low,moderate]
                                            [--steps 10,50] [--interval 10s] [--max-scenario 900]
    bash bench/delivery-safety.sh [same options]     (copies target/release/conveyor first)

Each scenario runs in a fresh `conveyor serve` (temporary data directory): a git project whose
release is bench/misbehave.py, the variant chosen by the file `dist/VARIANT` its commit writes,
so every variant is a new commit and a new signed release. The stable `good` release is deployed
first (the environment's first deployment: no canary), then a load generator sends requests at a
steady rate through the environment's router, and the variant's release is promoted to
production with the canary strategy below. The deployment is polled until it ends (or pauses, or
the scenario's wall-time cap is hit, which aborts it). Every request's send time, status and
`x-conveyor-version` header are recorded.

Reported per variant and traffic level: the outcome and its reason; the highest share of traffic
the new version got, from the route (deployment polls and `deployment_phase` events) and as seen
by the load generator; the requests that failed because of the rollout (5xx answered by the new
version beyond the service's own base rate, plus router-level errors: 502/503/504 and connection
errors), as a count and a share of all requests sent during the rollout; and the time from the
promote to all traffic back on the stable version (bad variants) or to 100% (good ones).

Standard library only. Prints a markdown table on stdout, progress on stderr.
"""

import argparse
import http.client
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

import common
from delivery import git, kill_instances

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------------
# The production environment, as a new user writes it with the shipped defaults. Change it here.
# ---------------------------------------------------------------------------------------------
STEPS = [10, 50]
INTERVAL = "10s"
ANALYSIS = "{}"  # `analysis: {}` = the shipped defaults: error_rate, latency (p99), memory, cpu, restarts
# No `verify:`: a production environment gets the shipped error budget (docs/pipeline.md).
VERIFY = None


def production_yaml(steps, interval, analysis=ANALYSIS, verify=VERIFY):
    steps = ", ".join(str(s) for s in steps)
    lines = [
        "  production:",
        "    production: true",
        "    approval: { required: 0 }   # the benchmark has one user; four-eyes is not what is measured",
        f"    strategy: {{ canary: {{ steps: [{steps}], interval: {interval}, analysis: {analysis} }} }}",
    ]
    if verify:
        lines.append(f"    verify: {verify}")
    return "\n".join(lines) + "\n"


PIPELINE_HEAD = """name: safety
on: { manual: true }
jobs:
  build:
    steps:
      - run: mkdir -p dist && cp misbehave.py VARIANT dist/
    artifacts: [dist/*]
release:
  run: exec python3 dist/misbehave.py
  health: /healthz
  instances: 2
environments:
"""

BASE_ERROR_RATE = 0.005  # the service's own 5xx share in every version (bench/misbehave.py)
ROUTER_ERRORS = (502, 503, 504)  # answered by the router, not by an instance
GOOD = {"good"}
ALL_VARIANTS = ["good", "crash", "unhealthy", "errors", "latency", "tail", "leak", "cpu"]
QUICK_VARIANTS = ["good", "errors", "crash"]
RATES = {"low": 20, "moderate": 200}
GOAL_FAILED_SHARE = 0.005
WARMUP_SECONDS = 3.0  # load on the stable version alone before the promote
TAIL_SECONDS = 3.0  # load after the deployment ended, to see where traffic settled


def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Load generator
# ---------------------------------------------------------------------------------------------


class Load:
    """Requests at a steady rate (open loop: a dispatcher schedules send times, a pool of workers
    with keep-alive connections sends them). A request waiting for a free worker is sent late;
    its latency is counted from its scheduled time, so queueing shows."""

    def __init__(self, url, rate):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.rate = rate
        self.queue = queue.Queue()
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        # (scheduled wall time, latency s, status (0: connection error), version or None)
        self.records = []
        workers = max(8, int(rate * 0.25))
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(workers)]
        self.dispatcher = threading.Thread(target=self.dispatch, daemon=True)
        for t in self.threads:
            t.start()
        self.dispatcher.start()

    def dispatch(self):
        start = time.time()
        i = 0
        while not self.stop_flag.is_set():
            at = start + i / self.rate
            delay = at - time.time()
            if delay > 0:
                time.sleep(delay)
            self.queue.put(at)
            i += 1
        for _ in self.threads:
            self.queue.put(None)

    def connect(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def worker(self):
        conn = self.connect()
        while True:
            at = self.queue.get()
            if at is None:
                break
            version = None
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                version = resp.getheader("x-conveyor-version")
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = self.connect()
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = self.connect()
            latency = time.time() - at
            with self.lock:
                self.records.append((at, latency, status, version))
        conn.close()

    def stop(self):
        self.stop_flag.set()
        self.dispatcher.join()
        for t in self.threads:
            t.join()
        with self.lock:
            return sorted(self.records)


# ---------------------------------------------------------------------------------------------
# Instances: CPU and memory per version, from /proc (the local target's instance id is its pid)
# ---------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid):
    """(CPU seconds, RSS KiB) of a process and its children that were reaped, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return cpu, common.rss_kib(pid)
    except (OSError, ValueError, RuntimeError, IndexError):
        return None


class InstanceWatch:
    """First and last CPU reading and peak RSS of every instance pid seen, by version."""

    def __init__(self):
        self.seen = {}  # pid -> {"version", "cpu0", "cpu", "rss_peak"}

    def sample(self, env_view):
        for v in env_view.get("versions", []):
            for inst in v.get("instances", []):
                pid = inst.get("id")
                if not pid or not str(pid).isdigit():
                    continue
                s = proc_sample(int(pid))
                if s is None:
                    continue
                entry = self.seen.setdefault(pid, {"version": v["version"], "cpu0": s[0], "cpu": s[0], "rss_peak": 0})
                entry["cpu"] = s[0]
                entry["rss_peak"] = max(entry["rss_peak"], s[1])

    def by_version(self):
        out = {}
        for e in self.seen.values():
            o = out.setdefault(e["version"], {"cpu_seconds": 0.0, "rss_peak_kib": 0, "instances": 0})
            o["cpu_seconds"] += e["cpu"] - e["cpu0"]
            o["rss_peak_kib"] = max(o["rss_peak_kib"], e["rss_peak"])
            o["instances"] += 1
        return out


# ---------------------------------------------------------------------------------------------
# One scenario
# ---------------------------------------------------------------------------------------------


class Scenario:
    def __init__(self, binary, variant, level, rate, steps, interval, max_seconds):
        self.binary, self.variant, self.level, self.rate = binary, variant, level, rate
        self.steps, self.interval, self.max_seconds = steps, interval, max_seconds

    def make_repo(self):
        repo = common.tmpdir(f"safety-{self.variant}")
        with open(os.path.join(repo, "conveyor.yml"), "w") as f:
            f.write(PIPELINE_HEAD + production_yaml(self.steps, self.interval))
        shutil.copy(os.path.join(HERE, "misbehave.py"), os.path.join(repo, "misbehave.py"))
        with open(os.path.join(repo, "VARIANT"), "w") as f:
            f.write("good\nrevision 1\n")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "good (stable)")
        return repo

    def release(self, repo, variant=None):
        if variant is not None:
            with open(os.path.join(repo, "VARIANT"), "w") as f:
                f.write(f"{variant}\nrevision 2\n")
            git(repo, "commit", "-q", "-am", variant)
        run = self.server.api("POST", "/api/v1/projects/safety/runs", {"branch": "main"})
        done = self.server.wait_run(run["run_id"], poll=0.05, timeout=120)
        if done["status"] != "success":
            raise RuntimeError(f"run {run['run_id']} {done['status']}")
        return done["release_id"]

    def env_view(self):
        return self.server.api("GET", "/api/v1/projects/safety/environments/production")

    def events(self):
        out, after = [], 0
        while True:
            page = self.server.api("GET", f"/api/v1/events?after={after}&limit=1000")["events"]
            out += page
            if len(page) < 1000:
                return out
            after = page[-1]["seq"]

    def run(self):
        started = time.time()
        repo = self.make_repo()
        self.data = common.tmpdir("data")
        self.server = common.Server(self.binary, self.data).start()
        try:
            return self._run(repo, started)
        finally:
            self.server.stop()
            kill_instances(self.data)

    def _run(self, repo, started):
        server = self.server
        server.add_project("safety", repo)
        stable_id = self.release(repo)
        new_id = self.release(repo, self.variant)
        stable_v, new_v = f"r{stable_id}", f"r{new_id}"

        first = server.api("POST", f"/api/v1/releases/{stable_id}/promote", {"environment": "production"})
        while True:
            d = server.api("GET", f"/api/v1/deployments/{first['deployment_id']}")
            if d.get("finished_at"):
                if d["status"] != "succeeded":
                    raise RuntimeError(f"first deployment {d['status']}: {d.get('reason')}")
                break
            time.sleep(0.1)
        url = self.env_view()["url"]
        watch = InstanceWatch()
        watch.sample(self.env_view())

        load = Load(url, self.rate)
        time.sleep(WARMUP_SECONDS)
        watch.sample(self.env_view())
        t_promote = time.time()
        created = server.api("POST", f"/api/v1/releases/{new_id}/promote", {"environment": "production"})
        dep_id = created["deployment_id"]
        log(f"{self.variant}/{self.level}: promoted r{new_id} (deployment {dep_id}) at {self.rate} req/s")

        polls = []  # (wall time, status, phase, traffic)
        outcome_override = None
        deadline = started + self.max_seconds
        last_phase = None  # (phase, traffic)
        while True:
            d = server.api("GET", f"/api/v1/deployments/{dep_id}")
            now = time.time()
            polls.append((now, d["status"], d.get("phase"), d.get("traffic", 0)))
            if (d.get("phase"), d.get("traffic"), d["status"]) != last_phase:
                last_phase = (d.get("phase"), d.get("traffic"), d["status"])
                log(f"  +{now - t_promote:5.1f}s {d['status']}, traffic {d.get('traffic', 0)}%, phase: {d.get('phase')}")
            try:
                watch.sample(self.env_view())
            except RuntimeError:
                pass
            if d.get("finished_at"):
                break
            if d["status"] == "paused" and outcome_override is None:
                outcome_override = "paused-inconclusive"
                log(f"  +{now - t_promote:5.1f}s paused: aborting")
                server.api("POST", f"/api/v1/deployments/{dep_id}/abort", {})
            elif now > deadline and outcome_override is None:
                outcome_override = "timeout"
                log(f"  +{now - t_promote:5.1f}s scenario time cap reached: aborting")
                server.api("POST", f"/api/v1/deployments/{dep_id}/abort", {})
            time.sleep(0.25)
        t_finished = common.parse_rfc3339(d["finished_at"])
        time.sleep(TAIL_SECONDS)
        records = load.stop()
        final_env = self.env_view()
        analysis = server.api("GET", f"/api/v1/deployments/{dep_id}/analysis")
        events = [e for e in self.events() if e["event"].get("deployment_id") == dep_id]
        return summarize(
            variant=self.variant,
            level=self.level,
            rate=self.rate,
            stable_v=stable_v,
            new_v=new_v,
            deployment=d,
            analysis=analysis,
            events=events,
            polls=polls,
            records=records,
            t_promote=t_promote,
            t_finished=t_finished,
            outcome_override=outcome_override,
            instances=watch.by_version(),
            final_env=final_env,
            wall_seconds=time.time() - started,
        )


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def summarize(*, variant, level, rate, stable_v, new_v, deployment, analysis, events, polls, records,
              t_promote, t_finished, outcome_override, instances, final_env, wall_seconds):
    phase_events = [e for e in events if e["event"]["type"] == "deployment_phase"]
    route_max = max([e["event"]["traffic"] for e in phase_events] + [p[3] for p in polls] + [0])
    t_full = None
    for e in phase_events:
        if e["event"]["traffic"] >= 100:
            t_full = common.parse_rfc3339(e["at"])
            break

    after = [r for r in records if r[0] >= t_promote]
    window = [r for r in after if r[0] <= t_finished]  # sent during the rollout
    new = [r for r in after if r[3] == new_v]
    new_500 = sum(1 for r in new if r[2] >= 500 and r[2] not in ROUTER_ERRORS)
    router_errors = [r for r in after if r[2] == 0 or r[2] in ROUTER_ERRORS]
    excess = new_500 - BASE_ERROR_RATE * len(new)
    caused = max(0.0, excess) + len(router_errors)
    stable_req = [r for r in after if r[3] == stable_v]
    stable_500 = sum(1 for r in stable_req if r[2] >= 500 and r[2] not in ROUTER_ERRORS)

    # The share the load generator saw: the new version's share of requests per window (one second,
    # or longer at low rates so a window holds at least 100 requests).
    win = max(1.0, 100.0 / rate)
    observed_max = 0.0
    if after:
        buckets = {}
        for r in after:
            b = int((r[0] - t_promote) // win)
            tot, n = buckets.get(b, (0, 0))
            buckets[b] = (tot + 1, n + (r[3] == new_v))
        observed_max = max(n / tot for tot, n in buckets.values() if tot >= 0.5 * rate * win) if any(
            tot >= 0.5 * rate * win for tot, _ in buckets.values()) else 0.0
    last_new = max((r[0] + r[1] for r in new), default=None)

    status = deployment["status"]
    if outcome_override:
        outcome = outcome_override
    elif status == "succeeded":
        outcome = "promoted"
    elif status in ("failed", "aborted") and route_max == 0 and not new:
        outcome = "failed before traffic"
    elif status in ("failed", "aborted") and route_max >= 100:
        outcome = "rolled back in verify"  # after it had all the traffic
    elif status in ("failed", "aborted"):
        outcome = "rolled back"
    else:
        outcome = status
    if outcome == "promoted":
        t_end = (t_full or t_finished) - t_promote
        time_label = "to 100%"
    elif outcome == "failed before traffic":
        t_end = t_finished - t_promote
        time_label = "to failure"
    else:
        # traffic back on stable: the last answer from the new version (or the end, if later
        # nothing routed to it was seen and the deployment ended first)
        t_end = (last_new if last_new is not None else t_finished) - t_promote
        time_label = "to rollback"

    failing = [j for j in analysis.get("judgements", []) if j["verdict"] in ("fail", "inconclusive")]
    bad = variant not in GOOD
    share = caused / len(window) if window else 0.0
    result = {
        "variant": variant,
        "traffic_level": level,
        "rate": rate,
        "stable_version": stable_v,
        "new_version": new_v,
        "deployment_id": deployment["id"],
        "status": status,
        "outcome": outcome,
        "reason": deployment.get("reason"),
        "failing_judgements": [{"metric": j["metric"], "verdict": j["verdict"], "traffic": j["traffic"], "summary": j["summary"]} for j in failing],
        "route_max_traffic": route_max,
        "observed_max_share": observed_max,
        "observed_window_seconds": win,
        "reached_full": route_max >= 100,
        "requests_total": len(records),
        "requests_during_rollout": len(window),
        "requests_after_promote": len(after),
        "new_version_requests": len(new),
        "new_version_5xx": new_500,
        "new_version_excess_5xx": excess,
        "router_errors": len(router_errors),
        "router_error_statuses": sorted({r[2] for r in router_errors}),
        "stable_requests": len(stable_req),
        "stable_5xx": stable_500,
        "failed_by_rollout": caused,
        "failed_by_rollout_share": share,
        "time_seconds": t_end,
        "time_label": time_label,
        "time_to_finished_seconds": t_finished - t_promote,
        "time_to_full_seconds": (t_full - t_promote) if t_full else None,
        "late_requests": sum(1 for r in records if r[1] > 1.0),
        "instances": instances,
        # Each instance's CPU from its first reading (the stable's: before the load started; the
        # new version's: once it ran, before it had traffic) over every request it answered.
        "cpu_ms_per_request": {
            v: (1000.0 * i["cpu_seconds"] / n) if n else None
            for v, i in instances.items()
            for n in [sum(1 for r in records if r[3] == v)]
        },
        "behaviour": {v: behaviour(records, v) for v in (stable_v, new_v)},
        "phases": [{"at": e["at"], "index": e["event"]["index"], "phase": e["event"]["phase"], "traffic": e["event"]["traffic"]} for e in phase_events],
        "final_versions": [{"version": v["version"], "role": v["role"], "traffic": v["traffic"]} for v in final_env["versions"]],
        "wall_seconds": wall_seconds,
        "per_second": per_second(records, t_promote, new_v),
    }
    result["goal_stopped"] = (not result["reached_full"]) if bad else None
    result["goal_promoted"] = (outcome == "promoted") if not bad else None
    result["goal_failed_share"] = share <= GOAL_FAILED_SHARE
    return result


def quantile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def behaviour(records, version):
    """What a version did as the load generator saw it: requests, 5xx share, latency quantiles."""
    mine = [r for r in records if r[3] == version]
    lat = sorted(r[1] for r in mine)
    failed = sum(1 for r in mine if r[2] >= 500)
    return {
        "requests": len(mine),
        "5xx_share": failed / len(mine) if mine else None,
        "p50_ms": common.ms(quantile(lat, 0.5)) if lat else None,
        "p99_ms": common.ms(quantile(lat, 0.99)) if lat else None,
    }


def per_second(records, t0, new_v):
    """[second since promote, requests, answered by the new version, failed] for the JSON."""
    out = {}
    for at, _, status, version in records:
        s = int((at - t0) // 1)
        row = out.setdefault(s, [s, 0, 0, 0])
        row[1] += 1
        row[2] += version == new_v
        row[3] += status == 0 or status >= 500
    return [out[k] for k in sorted(out)]


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def short_reason(r):
    if r["outcome"] == "timeout":
        return f"no end within the {r.get('cap', '?')} s cap"
    text = r.get("reason") or ""
    if r["outcome"] == "promoted":
        return "–"
    if r["outcome"] == "paused-inconclusive" and r["failing_judgements"]:
        j = r["failing_judgements"][-1]
        text = f"{j['metric']} inconclusive at {j['traffic']}%"
    text = " ".join(text.split())
    text = text.split("; see /")[0]  # the log's path
    return text if len(text) <= 120 else text[:117] + "…"


def table(results):
    lines = [
        "| variant | traffic | outcome | reason | max share: route / seen | failed by the rollout | time | goal |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['variant']} | {r['traffic_level']} | error | {r['error']} | | | | **no** |")
            continue
        if r["variant"] in GOOD:
            goal_ok = r["goal_promoted"] and r["goal_failed_share"]
            goal = "promoted" if r["goal_promoted"] else "**not promoted**"
        else:
            goal_ok = r["goal_stopped"] and r["goal_failed_share"]
            goal = "stopped" if r["goal_stopped"] else "**reached 100%**"
        if not r["goal_failed_share"]:
            goal += ", **> 0.5% failed**"
        goal = ("yes: " if goal_ok else "**no**: ") + goal
        seen = f"{100 * r['observed_max_share']:.0f}%"
        failed = f"{r['failed_by_rollout']:.0f} of {r['requests_during_rollout']} ({100 * r['failed_by_rollout_share']:.2f}%)"
        t = f"{r['time_seconds']:.1f} s {r['time_label']}"
        lines.append(
            f"| {r['variant']} | {r['traffic_level']} ({r['rate']}/s) | {r['outcome']} | {short_reason(r)} | "
            f"{r['route_max_traffic']}% / {seen} | {failed} | {t} | {goal} |"
        )
    return "\n".join(lines)


def check_table(results):
    """The new version against the stable one, as measured: did the variant misbehave as designed?"""
    lines = [
        "| variant | traffic | requests (new / stable) | 5xx (new / stable) | p50 ms (new / stable) | p99 ms (new / stable) | CPU ms per request (new / stable) | peak RSS MiB (new / stable) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def pair(a, b, fmt):
        f = lambda x: "–" if x is None else fmt(x)
        return f"{f(a)} / {f(b)}"

    for r in results:
        if r.get("error"):
            continue
        n, s = r["behaviour"][r["new_version"]], r["behaviour"][r["stable_version"]]
        cpu = r["cpu_ms_per_request"]
        rss = {v: i["rss_peak_kib"] / 1024 for v, i in r["instances"].items()}
        lines.append(
            f"| {r['variant']} | {r['traffic_level']} | {n['requests']} / {s['requests']} | "
            f"{pair(n['5xx_share'], s['5xx_share'], lambda x: f'{100 * x:.1f}%')} | "
            f"{pair(n['p50_ms'], s['p50_ms'], lambda x: f'{x:.0f}')} | "
            f"{pair(n['p99_ms'], s['p99_ms'], lambda x: f'{x:.0f}')} | "
            f"{pair(cpu.get(r['new_version']), cpu.get(r['stable_version']), lambda x: f'{x:.1f}')} | "
            f"{pair(rss.get(r['new_version']), rss.get(r['stable_version']), lambda x: f'{x:.0f}')} |"
        )
    return "\n".join(lines)


def goals(results):
    ok = [r for r in results if not r.get("error")]
    bad = [r for r in ok if r["variant"] not in GOOD]
    good = [r for r in ok if r["variant"] in GOOD]
    stopped = sum(1 for r in bad if r["goal_stopped"])
    within = sum(1 for r in ok if r["goal_failed_share"])
    promoted = sum(1 for r in good if r["goal_promoted"])
    errors = len(results) - len(ok)

    def line(text, n, of):
        return f"- {text}: {n} of {of} — {common.verdict(n == of)}"

    out = [
        line("every bad variant stopped before full rollout", stopped, len(bad)),
        line("≤ 0.5% of requests failed because of the rollout", within, len(ok)),
        line("every good variant promoted", promoted, len(good)),
    ]
    if errors:
        out.append(f"- scenarios that errored: {errors} — **no**")
    return "\n".join(out)


def machine_line():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}; load average at start {load}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--quick", action="store_true", help="good, errors and crash at low traffic only")
    ap.add_argument("--variants", help=f"comma-separated, of: {','.join(ALL_VARIANTS)}")
    ap.add_argument("--traffic", help="comma-separated traffic levels: low, moderate")
    ap.add_argument("--low-rate", type=float, default=RATES["low"])
    ap.add_argument("--moderate-rate", type=float, default=RATES["moderate"])
    ap.add_argument("--steps", help=f"canary steps, e.g. 10,50 (default {','.join(map(str, STEPS))})")
    ap.add_argument("--interval", default=INTERVAL, help=f"canary interval (default {INTERVAL})")
    ap.add_argument("--max-scenario", type=float, default=900, help="wall-time cap per scenario, seconds (default 900)")
    ap.add_argument("--json", help="also write every figure to FILE")
    args = ap.parse_args()

    steps = [int(s) for s in args.steps.split(",")] if args.steps else STEPS
    variants = args.variants.split(",") if args.variants else (QUICK_VARIANTS if args.quick else ALL_VARIANTS)
    levels = args.traffic.split(",") if args.traffic else (["low"] if args.quick else ["low", "moderate"])
    for v in variants:
        if v not in ALL_VARIANTS:
            ap.error(f"unknown variant {v}")
    rates = {"low": args.low_rate, "moderate": args.moderate_rate}
    for lvl in levels:
        if lvl not in rates:
            ap.error(f"unknown traffic level {lvl}")

    # Check the environment config with the binary under test before spending minutes on it.
    probe = common.tmpdir("validate")
    with open(os.path.join(probe, "conveyor.yml"), "w") as f:
        f.write(PIPELINE_HEAD + production_yaml(steps, args.interval))
    check = subprocess.run([args.binary, "validate", os.path.join(probe, "conveyor.yml")], capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"bench: the production config does not validate:\n{check.stdout}{check.stderr}")

    machine = machine_line()
    version = subprocess.run([args.binary, "--version"], capture_output=True, text=True).stdout.strip()
    began = time.time()
    results = []
    for lvl in levels:
        for v in variants:
            rate = rates[lvl]
            log(f"scenario {v} at {lvl} traffic ({rate:g} req/s)")
            scenario = Scenario(args.binary, v, lvl, rate, steps, args.interval, args.max_scenario)
            try:
                r = scenario.run()
            except Exception as e:  # one broken scenario should not lose the others
                log(f"  error: {e}")
                r = {"variant": v, "traffic_level": lvl, "rate": rate, "error": str(e)[:200]}
            r["cap"] = args.max_scenario
            if isinstance(r.get("rate"), float) and r["rate"].is_integer():
                r["rate"] = int(r["rate"])
            results.append(r)
            if not r.get("error"):
                log(f"  -> {r['outcome']} ({short_reason(r)}), max {r['route_max_traffic']}%, "
                    f"failed by rollout {r['failed_by_rollout']:.0f}/{r['requests_during_rollout']}, "
                    f"{r['time_seconds']:.1f} s {r['time_label']}, scenario {r['wall_seconds']:.0f} s")
    elapsed = time.time() - began

    config = production_yaml(steps, args.interval)
    load_end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Delivery safety ({version}; {machine}, at the end {load_end}; {elapsed / 60:.1f} min)\n")
    print("Production environment:\n\n```yaml\n" + config + "```\n")
    print(table(results))
    print()
    print(goals(results))
    print("\nWhat each new version did, as measured (load generator: latency through the router; /proc: the instances' CPU and RSS):\n")
    print(check_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"binary_version": version, "machine": machine, "load_average_end": load_end,
                       "elapsed_seconds": elapsed,
                       "production_config": config,
                       "base_error_rate": BASE_ERROR_RATE, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
