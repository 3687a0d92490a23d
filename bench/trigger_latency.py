"""Trigger -> first step started, on `conveyor serve`.

For each trigger: take the wall clock, POST /api/v1/projects/b/runs, wait for the run to finish,
then read the step's `started_at` (recorded by the server when it appends the `step_started`
event, RFC3339 with milliseconds, same machine clock). Latency = started_at - time before POST.

The event log gives a breakdown of the same interval:
  request  -> run_created   (HTTP, git fetch of the mirror, git show, git archive, first append)
  run_created -> job_started   (run scheduling, job slot)
  job_started -> step_started  (workspace preparation: untar the snapshot, secrets, env)
and `response` is when the POST returned to the client.

    python3 bench/trigger_latency.py target/release/conveyor [TRIGGERS]
"""

import sys
import time

from common import Server, git_repo, median, ms, parse_rfc3339, rss_kib, tmpdir

WARMUP = 2


def events_of_run(server, after, run_id):
    """{kind: at} of the run's first events after sequence `after`; also the newest sequence seen."""
    found, last = {}, after
    while True:
        batch = server.api("GET", f"/api/v1/events?after={last}&limit=1000")["events"]
        if not batch:
            return found, last
        for e in batch:
            last = e["seq"]
            if e["event"].get("run_id") == run_id:
                found.setdefault(e["event"]["type"], parse_rfc3339(e["at"]))


def measure(binary, triggers=20):
    repo = git_repo(steps=1)
    server = Server(binary, tmpdir("serve")).start()
    try:
        server.add_project("b", repo)
        seq = 0
        samples = []
        for i in range(WARMUP + triggers):
            sent = time.time()
            run_id = server.api("POST", "/api/v1/projects/b/runs", {"branch": "main"})["run_id"]
            answered = time.time()
            run = server.wait_run(run_id)
            if run["status"] != "success":
                raise RuntimeError(f"run {run_id} ended {run['status']}")
            started = parse_rfc3339(run["jobs"][0]["steps"][0]["started_at"])
            events, seq = events_of_run(server, seq, run_id)
            if i < WARMUP:
                continue
            samples.append(
                {
                    "total": ms(started - sent),
                    "response": ms(answered - sent),
                    "to_run_created": ms(events["run_created"] - sent),
                    "run_created_to_job_started": ms(events["job_started"] - events["run_created"]),
                    "job_started_to_step_started": ms(events["step_started"] - events["job_started"]),
                }
            )
        rss_after = rss_kib(server.proc.pid)
    finally:
        server.stop()

    result = {"triggers": triggers, "rss_after_runs_kib": rss_after}
    for key in samples[0]:
        values = sorted(s[key] for s in samples)
        result[f"{key}_ms"] = median(values)
        result[f"{key}_max_ms"] = values[-1]
    result["total_all_ms"] = [round(s["total"], 1) for s in samples]
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20), indent=2))
