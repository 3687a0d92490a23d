#!/usr/bin/env bash
# Conveyor benchmark: builds the release binary, then measures per-step overhead, trigger latency,
# idle memory and start-to-ready time, and prints a markdown table. Needs python3, git, cargo.
#
#   bash bench/run.sh            # full run (about a minute on 2 cores, including the build)
#   bash bench/run.sh --quick    # fewer repetitions, for a smoke test
#   bash bench/run.sh --json out.json
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

for tool in python3 git cargo sh seq; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

echo "bench: building the release binary..." >&2
cargo build --release -p conveyor >&2
built="${CARGO_TARGET_DIR:-$root/target}/release/conveyor"

# Measure a private copy: the shared target directory may be rebuilt while the benchmark runs.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/conveyor-bench-bin-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
cp "$built" "$scratch/conveyor"

echo "bench: measuring..." >&2
PYTHONDONTWRITEBYTECODE=1 python3 "$root/bench/report.py" "$scratch/conveyor" "$@"

echo "bench: delivery under load (blue/green flip, canary steps, rollback)..." >&2
PYTHONDONTWRITEBYTECODE=1 python3 "$root/bench/delivery.py" "$scratch/conveyor"
