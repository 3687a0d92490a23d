"""Diagnostic (not part of the table): where the time of one step goes in `conveyor run`.

Runs the 200-step pipeline with CONVEYOR_LOG=debug and uses the timestamps of the SQL statements
sqlx logs to split each step into phases. Each step appends two events (step_started,
step_finished); an append is `SELECT seq, hash FROM chain_head` ... projection statement, then
COMMIT (not logged). So, per step:

  started append   SELECT chain_head -> INSERT INTO steps        (step_started, before its commit)
  executor         INSERT INTO steps -> next SELECT chain_head   (commit, spawn `sh`, wait, readers)
  finished append  SELECT chain_head -> UPDATE steps             (step_finished, before its commit)
  between steps    UPDATE steps      -> next SELECT chain_head   (commit, next step's env/script)

Debug logging itself slows every statement a little, so the total is above the plain run's.

    python3 bench/step_phases.py target/release/conveyor
"""

import datetime
import os
import re
import subprocess
import sys
from collections import defaultdict

from common import clean_env, tmpdir, write_pipeline

LINE = re.compile(r"^(\S+Z)\s+DEBUG sqlx::query: summary=\"([^\"]*)\"")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PHASES = {
    ("SELECT seq, hash", "INSERT INTO steps"): "started append",
    ("INSERT INTO steps", "SELECT seq, hash"): "executor",
    ("SELECT seq, hash", "UPDATE steps SET"): "finished append",
    ("UPDATE steps SET", "SELECT seq, hash"): "between steps",
}


def statements(stderr):
    """(time in seconds, statement summary) of every SQL statement logged."""
    for raw in stderr.splitlines():
        m = LINE.match(ANSI.sub("", raw))
        if m:
            at = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            yield at, m.group(2)


def main(binary, steps=200):
    project, data = tmpdir("phases"), tmpdir("phases-data")
    write_pipeline(project, steps)
    argv = [binary, "run", project, "--data", data]
    subprocess.run(argv, check=True, capture_output=True, env=clean_env())  # warm-up
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=clean_env(CONVEYOR_LOG="debug"))

    # Keep only the statements that delimit phases, then time consecutive pairs.
    marks = [
        (at, key)
        for at, summary in statements(out.stderr)
        for key in ("SELECT seq, hash", "INSERT INTO steps", "UPDATE steps SET")
        if summary.startswith(key)
    ]
    totals = defaultdict(float)
    counts = defaultdict(int)
    for (t0, a), (t1, b) in zip(marks, marks[1:]):
        phase = PHASES.get((a, b))
        if phase:
            totals[phase] += (t1 - t0) * 1000
            counts[phase] += 1
    print(f"{steps} steps, CONVEYOR_LOG=debug; mean per step:")
    for phase in ("started append", "executor", "finished append", "between steps"):
        n = max(counts[phase], 1)
        print(f"  {phase:16s} {totals[phase] / n:6.3f} ms  (n={counts[phase]})")
    print(f"  {'sum':16s} {sum(totals[p] / max(counts[p], 1) for p in totals):6.3f} ms")


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
