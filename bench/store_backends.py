"""What the store's backend costs a run: `conveyor run --isolation off` of one job with 1 and 200
trivial steps (each step appends its events through the store), for

- `before`: a binary from before the store went through sqlx's `Any` driver (native SQLite);
- `sqlite`: this binary, its store the data directory's SQLite file (the default);
- `postgres`: this binary, its store a fresh database on the local PostgreSQL server (over its
  socket, `--database postgres:///NAME?host=/var/run/postgresql`);
- `sh`: a bare shell loop spawning the same number of `sh -c true`, the floor.

Interleaved repetitions, medians; the marginal cost per step is (t200 - t1) / 199.

    python3 bench/store_backends.py BEFORE_BINARY BINARY [REPS]
"""

import json
import subprocess
import sys
import time

from common import clean_env, median, ms, tmpdir, write_pipeline

STEPS = 200
SOCKET = "/var/run/postgresql"


def time_cmd(argv):
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
    return time.perf_counter() - start


def postgres_database(name):
    subprocess.run(["dropdb", "--if-exists", "--force", "-h", SOCKET, name], check=True)
    subprocess.run(["createdb", "-h", SOCKET, name], check=True)
    return f"postgres:///{name}?host={SOCKET}"


def measure(before, binary, reps):
    commands = {}
    for n in (1, STEPS):
        project = tmpdir(f"steps{n}")
        write_pipeline(project, n)
        run = ["run", project, "--isolation", "off", "--data"]
        commands[("before", n)] = [before, *run, tmpdir(f"before{n}")]
        commands[("sqlite", n)] = [binary, *run, tmpdir(f"sqlite{n}")]
        database = postgres_database(f"conveyor_bench_{n}")
        commands[("postgres", n)] = [binary, *run, tmpdir(f"postgres{n}"), "--database", database]
        commands[("sh", n)] = ["sh", "-c", f"for i in $(seq {n}); do sh -c true; done"]
    for argv in commands.values():  # warm-up: first-run keys, schema, page cache
        time_cmd(argv)
    samples = {key: [] for key in commands}
    for _ in range(reps):
        for key, argv in commands.items():
            samples[key].append(time_cmd(argv))
    result = {"reps": reps, "steps": STEPS}
    for who in ("before", "sqlite", "postgres", "sh"):
        t1, t200 = median(samples[(who, 1)]), median(samples[(who, STEPS)])
        result[who] = {
            "one_step_ms": round(ms(t1), 2),
            "whole_run_ms": round(ms(t200), 1),
            "per_step_marginal_ms": round(ms(t200 - t1) / (STEPS - 1), 3),
            "whole_run_samples_ms": [round(ms(s), 1) for s in samples[(who, STEPS)]],
        }
    for n in (1, STEPS):
        subprocess.run(["dropdb", "--if-exists", "--force", "-h", SOCKET, f"conveyor_bench_{n}"], check=True)
    return result


if __name__ == "__main__":
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    print(json.dumps(measure(sys.argv[1], sys.argv[2], reps), indent=2))
