"""Runs every benchmark against one conveyor binary and prints a markdown report.

    python3 bench/report.py target/release/conveyor [--quick] [--json FILE]
"""

import argparse
import json
import os
import platform
import subprocess

import server_footprint
import step_overhead
import trigger_latency
from common import fmt_ms, verdict

GOAL_STEP_RATIO = 1.25
GOAL_TRIGGER_MS = 50.0
GOAL_RSS_MB = 20.0  # 10^6 bytes
GOAL_READY_MS = 100.0


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    except OSError:
        pass
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores (nproc), {model}; {platform.system()} {platform.release()}; "
        f"{git}; load average when measuring began: {load}"
    )


def revision():
    """The commit measured, and whether the working tree had local changes."""
    run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    head = run("rev-parse", "--short", "HEAD") or "unknown"
    dirty = run("status", "--porcelain", "--untracked-files=no", "--", "crates", "Cargo.lock")
    return f"commit {head}" + (" with uncommitted changes in crates/" if dirty else "")


def table(steps, trigger, footprint):
    n = steps["steps"]
    mib = lambda kib: kib / 1024.0  # noqa: E731
    rows = [
        ("Metric", "Conveyor", "Baseline", "Ratio", "Goal", "Met"),
        (
            f"{n} steps, whole run (median of {steps['reps']})",
            fmt_ms(steps[f"conveyor_t{n}_ms"]),
            f"{fmt_ms(steps[f'sh_t{n}_ms'])} (sh loop)",
            f"{steps['whole_ratio']:.2f}×",
            f"≤ {GOAL_STEP_RATIO}×",
            verdict(steps["whole_ratio"] <= GOAL_STEP_RATIO),
        ),
        (
            "1 step, whole run (fixed cost)",
            fmt_ms(steps["conveyor_t1_ms"]),
            f"{fmt_ms(steps['sh_t1_ms'])} (sh loop)",
            f"{steps['conveyor_t1_ms'] / steps['sh_t1_ms']:.1f}×",
            "–",
            "–",
        ),
        (
            f"per step, whole run / {n}",
            fmt_ms(steps["conveyor_whole_per_step_ms"]),
            fmt_ms(steps["sh_whole_per_step_ms"]),
            f"{steps['whole_ratio']:.2f}×",
            "–",
            "–",
        ),
        (
            f"per step, marginal (t{n} − t1) / {n - 1}",
            fmt_ms(steps["conveyor_marginal_per_step_ms"]),
            fmt_ms(steps["sh_marginal_per_step_ms"]),
            f"{steps['marginal_ratio']:.2f}×",
            f"≤ {GOAL_STEP_RATIO}×",
            verdict(steps["marginal_ratio"] <= GOAL_STEP_RATIO),
        ),
        (
            f"trigger → first step started (median of {trigger['triggers']})",
            fmt_ms(trigger["total_ms"]),
            "–",
            "–",
            f"≤ {GOAL_TRIGGER_MS:.0f} ms",
            verdict(trigger["total_ms"] <= GOAL_TRIGGER_MS),
        ),
        (
            "server idle RSS (1 project)",
            f"{mib(footprint['idle_rss_kib']):.1f} MiB ({footprint['idle_rss_kib'] * 1024 / 1e6:.1f} MB)",
            f"{mib(footprint['python_http_server_rss_kib']):.1f} MiB (python3 -m http.server)",
            "–",
            f"≤ {GOAL_RSS_MB:.0f} MB",
            verdict(footprint["idle_rss_kib"] * 1024 / 1e6 <= GOAL_RSS_MB),
        ),
        (
            f"start → /readyz 200, fresh data dir (median of {footprint['starts']})",
            fmt_ms(footprint["fresh_ready_ms"]),
            f"{fmt_ms(footprint['version_ms'])} (conveyor --version)",
            "–",
            f"≤ {GOAL_READY_MS:.0f} ms",
            verdict(footprint["fresh_ready_ms"] <= GOAL_READY_MS),
        ),
        (
            f"start → /readyz 200, existing data dir (median of {footprint['starts']})",
            fmt_ms(footprint["existing_ready_ms"]),
            f"{fmt_ms(footprint['version_ms'])} (conveyor --version)",
            "–",
            f"≤ {GOAL_READY_MS:.0f} ms",
            verdict(footprint["existing_ready_ms"] <= GOAL_READY_MS),
        ),
    ]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines)


def details(steps, trigger, footprint):
    n = steps["steps"]
    return "\n".join(
        [
            "Details (all times in ms):",
            f"- conveyor run, {n} steps, each repetition: {steps[f'conveyor_t{n}_all_ms']}",
            f"- sh loop, {n} spawns, each repetition:     {steps[f'sh_t{n}_all_ms']}",
            f"- conveyor run, 1 step, each repetition:   {steps['conveyor_t1_all_ms']}",
            f"- sh loop, 1 spawn, each repetition:       {steps['sh_t1_all_ms']}",
            f"- trigger → first step, each trigger: {trigger['total_all_ms']} (max {trigger['total_max_ms']:.1f})",
            "- trigger breakdown (medians): "
            f"POST answered {trigger['response_ms']:.1f}; "
            f"request → run_created {trigger['to_run_created_ms']:.1f}; "
            f"run_created → job_started {trigger['run_created_to_job_started_ms']:.1f}; "
            f"job_started → step_started {trigger['job_started_to_step_started_ms']:.1f}",
            f"- server RSS after {trigger['triggers'] + trigger_latency.WARMUP} runs: "
            f"{trigger['rss_after_runs_kib'] / 1024:.1f} MiB",
            f"- start → address printed (listening): fresh {footprint['fresh_listening_ms']:.1f}, "
            f"existing {footprint['existing_listening_ms']:.1f}",
            f"- start → ready, each start: fresh {footprint['fresh_ready_all_ms']}, "
            f"existing {footprint['existing_ready_all_ms']}",
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("binary")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    reps, triggers, starts = (2, 4, 3) if args.quick else (5, 20, 10)

    steps = step_overhead.measure(binary, reps)
    trigger = trigger_latency.measure(binary, triggers)
    footprint = server_footprint.measure(binary, starts)

    print(f"Machine: {machine()}")
    print(f"Source: {revision()}\n")
    print(table(steps, trigger, footprint))
    print()
    print(details(steps, trigger, footprint))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": steps, "trigger": trigger, "footprint": footprint}, f, indent=2)


if __name__ == "__main__":
    main()
