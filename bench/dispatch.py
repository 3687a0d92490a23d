"""Jobs per second that `conveyor serve` dispatches: N runs of one job with one trivial step,
triggered as fast as the API takes them, round-robin over the servers, until the last one has
finished. Measured from the log: the first `run_created` to the last `run_finished`.

- `sqlite x1`: one server, its store the data directory's SQLite file (the default);
- `postgres x1`: one server on a fresh PostgreSQL database (the local server, over its socket);
- `postgres x2`: two servers on one PostgreSQL database and one data directory, the triggers
  alternating between them (each run is driven by the server it was triggered on, its lease).

Every server runs with the settings it ships with (steps sandboxed when bubblewrap is there,
as many jobs at once as cores).

    python3 bench/dispatch.py BINARY [RUNS] [REPS]
"""

import json
import subprocess
import sys
import threading

from common import Server, git_repo, median, parse_rfc3339, tmpdir

SOCKET = "/var/run/postgresql"


def postgres_database(name):
    subprocess.run(["dropdb", "--if-exists", "--force", "-h", SOCKET, name], check=True,
                   stderr=subprocess.DEVNULL)
    subprocess.run(["createdb", "-h", SOCKET, name], check=True)
    return f"postgres:///{name}?host={SOCKET}"


def one_round(binary, servers_wanted, database, runs):
    data = tmpdir("data")
    extra = ["--database", database] if database else []
    servers = [Server(binary, data, *extra).start() for _ in range(servers_wanted)]
    try:
        repo = git_repo(steps=1)
        servers[0].add_project("b", repo)
        ids, errors = [], []

        def trigger(server, count):
            for _ in range(count):
                try:
                    ids.append(server.api("POST", "/api/v1/projects/b/runs", {"branch": "main"})["run_id"])
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(str(e))

        share = runs // len(servers)
        threads = [threading.Thread(target=trigger, args=(s, share)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"triggers failed: {errors[:3]}")
        finished = [servers[0].wait_run(i, poll=0.05, timeout=300) for i in ids]
        failed = [r["id"] for r in finished if r["status"] != "success"]
        if failed:
            raise RuntimeError(f"runs did not succeed: {failed[:5]}")
        created = [parse_rfc3339(r["created_at"]) for r in finished]
        ended = [parse_rfc3339(r["finished_at"]) for r in finished]
        return len(ids) / (max(ended) - min(created))
    finally:
        for s in servers:
            s.stop()


def measure(binary, runs, reps):
    setups = [("sqlite x1", 1, False), ("postgres x1", 1, True), ("postgres x2", 2, True)]
    samples = {name: [] for name, _, _ in setups}
    for rep in range(reps):  # interleaved, so a noisy moment hits every setup alike
        for name, count, on_postgres in setups:
            database = postgres_database(f"conveyor_dispatch_{rep}") if on_postgres else None
            samples[name].append(one_round(binary, count, database, runs))
    for rep in range(reps):
        subprocess.run(["dropdb", "--if-exists", "--force", "-h", SOCKET, f"conveyor_dispatch_{rep}"], check=True)
    return {
        "runs": runs,
        "reps": reps,
        **{name: {"jobs_per_s": round(median(v), 1), "samples": [round(x, 1) for x in v]} for name, v in samples.items()},
    }


if __name__ == "__main__":
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    print(json.dumps(measure(sys.argv[1], runs, reps), indent=2))
