"""Server footprint: idle RSS, and start-to-ready time on a fresh and on an existing data directory.

Start-to-ready = from spawning `conveyor serve` until GET /readyz answers 200 (polled every 1 ms
once the server has printed its address). `listening` is when that address line was read.
For reference: `conveyor --version` (process start and exit, nothing else), and the RSS of an idle
`python3 -m http.server`.

    python3 bench/server_footprint.py target/release/conveyor [STARTS]
"""

import subprocess
import sys
import time

from common import Server, clean_env, git_repo, median, ms, rss_kib, tmpdir

IDLE_SECONDS = 3


def start_times(binary, data_dirs):
    """Median (spawn->listening, spawn->ready) in ms, one start per data directory given."""
    listening, ready = [], []
    for data in data_dirs:
        server = Server(binary, data).start()
        server.stop()
        listening.append(ms(server.listening_at - server.spawned_at))
        ready.append(ms(server.ready_at - server.spawned_at))
    return median(listening), median(ready), [round(r, 1) for r in ready]


def idle_rss_kib(argv, seconds=IDLE_SECONDS):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
    try:
        time.sleep(seconds)
        return rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def measure(binary, starts=10):
    result = {"starts": starts}

    version = []
    for _ in range(starts):
        t = time.perf_counter()
        subprocess.run([binary, "--version"], check=True, stdout=subprocess.DEVNULL)
        version.append(ms(time.perf_counter() - t))
    result["version_ms"] = median(version)

    # Fresh: a new, empty data directory each time (database, schema and signing key are created).
    listening, ready, all_ready = start_times(binary, [tmpdir("fresh") for _ in range(starts)])
    result.update(fresh_listening_ms=listening, fresh_ready_ms=ready, fresh_ready_all_ms=all_ready)

    # Idle RSS: one project registered, then a few seconds of nothing.
    data = tmpdir("existing")
    repo = git_repo(steps=1)
    server = Server(binary, data).start()
    try:
        server.add_project("b", repo)
        time.sleep(IDLE_SECONDS)
        result["idle_rss_kib"] = rss_kib(server.proc.pid)
        # Give the data directory some history before it is reused below.
        for _ in range(3):
            run_id = server.api("POST", "/api/v1/projects/b/runs", {"branch": "main"})["run_id"]
            server.wait_run(run_id)
    finally:
        server.stop()

    # Existing: the same data directory (1 project, 3 runs), restarted each time.
    listening, ready, all_ready = start_times(binary, [data] * starts)
    result.update(existing_listening_ms=listening, existing_ready_ms=ready, existing_ready_all_ms=all_ready)

    result["python_http_server_rss_kib"] = idle_rss_kib(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"]
    )
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10), indent=2))
