#!/usr/bin/env bash
# Router benchmark: the same wrk load straight to a static upstream, through nginx (proxy_pass with
# keep-alive upstream connections) and through conveyor-router, with 1 and 2 proxy workers.
# Installs nginx and wrk if missing (Debian packages), builds the router's bench example, prints a
# markdown table.
#
#   bash bench/router.sh                 # 3 interleaved rounds of 10 s per path (about 4 minutes)
#   bash bench/router.sh --duration 2 --rounds 1    # a smoke test
#   bash bench/router.sh --out /tmp/router-table.md
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    echo "bench: installing nginx and wrk..." >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx wrk >&2
fi
for tool in python3 cargo nginx wrk; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

echo "bench: building the router bench binary (release)..." >&2
cargo build --release -p conveyor-router --example router_bench >&2
built="${CARGO_TARGET_DIR:-$root/target}/release/examples/router_bench"

# Measure a private copy: the shared target directory may be rebuilt while the benchmark runs.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/conveyor-router-bench-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
cp "$built" "$scratch/router_bench"

PYTHONDONTWRITEBYTECODE=1 python3 "$root/bench/router.py" --router "$scratch/router_bench" --scratch "$scratch" "$@"
