#!/usr/bin/env bash
# Delivery safety: bad releases under a production canary. Each scenario starts a fresh
# `conveyor serve`, deploys a good release, puts steady load through the environment's router and
# promotes a release that misbehaves on purpose (bench/misbehave.py) with a canary; prints a
# markdown table of outcomes, traffic the bad version got, requests failed by the rollout and
# time to rollback.
#
#   bash bench/delivery-safety.sh --quick            # good, errors, crash at low traffic (~3 min)
#   bash bench/delivery-safety.sh                    # 8 variants × 2 traffic levels (~18 min)
#   bash bench/delivery-safety.sh --variants errors,tail --traffic moderate --json /tmp/safety.json
#   bash bench/delivery-safety.sh --steps 5,25,50 --interval 30s
#   bash bench/delivery-safety.sh --build ...        # cargo build --release -p conveyor first
#
# Measures target/release/conveyor (or $CONVEYOR_BIN), copied first: the shared target directory
# may be rebuilt while the benchmark runs. Needs python3 (standard library only) and git.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [[ "${1:-}" == "--build" ]]; then
    shift
    echo "bench: building conveyor (release)..." >&2
    cargo build --release -p conveyor >&2
fi
for tool in python3 git; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

built="${CONVEYOR_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/conveyor}"
[[ -x "$built" ]] || { echo "bench: no binary at $built (cargo build --release -p conveyor, or --build)" >&2; exit 1; }

scratch="$(mktemp -d "${TMPDIR:-/tmp}/conveyor-safety-bench-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
cp "$built" "$scratch/conveyor"

PYTHONDONTWRITEBYTECODE=1 python3 "$root/bench/delivery_safety.py" "$scratch/conveyor" "$@"
