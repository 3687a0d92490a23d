"""Per-step overhead: `conveyor run` of a 1-job pipeline with N trivial steps, against a bare shell
loop spawning the same N `sh -c true` processes (the executor runs each step as `sh -e -c SCRIPT`).
`conveyor` is the default (each step sandboxed by bubblewrap, when the machine has it),
`conveyor_off` the same with `--isolation off`, and `bwrap` a shell loop of N
`bwrap --ro-bind / / --unshare-pid --die-with-parent sh -c true`: what the sandbox alone costs.

Both sides are measured with 1 and 200 steps, so the fixed cost can be separated from the
marginal cost per step: per_step = (t200 - t1) / 199.

    python3 bench/step_overhead.py target/release/conveyor [REPS]
"""

import shutil
import subprocess
import sys
import time

from common import clean_env, median, ms, tmpdir, write_pipeline

STEPS = 200


def time_cmd(argv):
    """Wall time of one command, output discarded; fails loudly if the command fails."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
    return time.perf_counter() - start


def shell_loop(n):
    return ["sh", "-c", f"for i in $(seq {n}); do sh -c true; done"]


def bwrap_loop(n):
    sandbox = "bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --die-with-parent"
    return ["sh", "-c", f"for i in $(seq {n}); do {sandbox} sh -c true; done"]


def measure(binary, reps=5):
    # One project directory (not a git checkout) and one data directory per pipeline size; the
    # data directory is reused across repetitions, as a developer's ~/.local/share/conveyor is.
    commands = {}
    for n in (1, STEPS):
        project, data = tmpdir(f"steps{n}"), tmpdir(f"data{n}")
        write_pipeline(project, n)
        commands[("conveyor", n)] = [binary, "run", project, "--data", data]
        commands[("conveyor_off", n)] = [binary, "run", project, "--data", data, "--isolation", "off"]
        commands[("sh", n)] = shell_loop(n)
        if shutil.which("bwrap"):
            commands[("bwrap", n)] = bwrap_loop(n)

    for argv in commands.values():  # warm-up: page cache, first-run key generation, db creation
        time_cmd(argv)
    samples = {key: [] for key in commands}
    for _ in range(reps):  # interleaved, so a noisy moment hits every variant alike
        for key, argv in commands.items():
            samples[key].append(time_cmd(argv))

    result = {"reps": reps, "steps": STEPS}
    for (who, n), values in samples.items():
        result[f"{who}_t{n}_ms"] = ms(median(values))
        result[f"{who}_t{n}_all_ms"] = [round(ms(v), 1) for v in values]
    for who in sorted({who for who, _ in samples}):
        t1, tn = result[f"{who}_t1_ms"], result[f"{who}_t{STEPS}_ms"]
        result[f"{who}_whole_per_step_ms"] = tn / STEPS
        result[f"{who}_marginal_per_step_ms"] = (tn - t1) / (STEPS - 1)
    result["whole_ratio"] = result[f"conveyor_t{STEPS}_ms"] / result[f"sh_t{STEPS}_ms"]
    result["marginal_ratio"] = result["conveyor_marginal_per_step_ms"] / result["sh_marginal_per_step_ms"]
    result["off_whole_ratio"] = result[f"conveyor_off_t{STEPS}_ms"] / result[f"sh_t{STEPS}_ms"]
    result["off_marginal_ratio"] = (
        result["conveyor_off_marginal_per_step_ms"] / result["sh_marginal_per_step_ms"]
    )
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5), indent=2))
