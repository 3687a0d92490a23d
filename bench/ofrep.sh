#!/usr/bin/env bash
# OFREP benchmark: wrk -t1 -c32 (keep-alive) against a release `conveyor serve` on a temp data
# dir: a single-flag evaluation, a bulk evaluation of 5 flags and one of 350 flags (a third
# static, a third with a targeting rule, a third with a fractional rollout), every request a
# POST with a JSON context. Prints a markdown table with requests/s and p99, and the server's
# idle RSS. Installs wrk if missing (Debian package).
#
#   bash bench/ofrep.sh                  # 10 s per case
#   bash bench/ofrep.sh 3                # 3 s per case (a smoke test)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
duration="${1:-10}"
if ! command -v wrk >/dev/null; then
    echo "bench: installing wrk..." >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >&2
fi

echo "bench: building conveyor (release)..." >&2
(cd "$root" && cargo build --release -p conveyor >&2)
scratch="$(mktemp -d "${TMPDIR:-/tmp}/conveyor-ofrep-bench-XXXXXX")"
cp "${CARGO_TARGET_DIR:-$root/target}/release/conveyor" "$scratch/conveyor"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

token="bench-admin-token"
git init -q -b main "$scratch/repo"
printf 'name: bench\njobs: {build: {steps: [true]}}\n' >"$scratch/repo/conveyor.yml"
git -C "$scratch/repo" add -A
git -C "$scratch/repo" -c user.name=b -c user.email=b@b commit -q -m init

CONVEYOR_ADMIN_TOKEN="$token" CONVEYOR_LOG=warn "$scratch/conveyor" serve --addr 127.0.0.1:0 \
    --data "$scratch/data" --flag-rate-limit 0 >"$scratch/serve.log" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$scratch/serve.log" 2>/dev/null && break
    sleep 0.1
done
base="$(sed -n 's/^conveyor listening on \([^ ]*\).*/\1/p' "$scratch/serve.log")"
sleep 1
idle_rss_kb="$(awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status")"

api() { curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' "$@"; }
api -X POST "$base/api/v1/projects" -d "{\"name\": \"bench\", \"source\": \"$scratch/repo\"}" >/dev/null

# Definitions: "five" has 5 flags, "big" 350.
python3 - "$scratch" <<'EOF'
import json, sys
def flags(n):
    out = {}
    for i in range(n):
        flag = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
        if i % 3 == 1:
            flag["targeting"] = {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", None]}
        elif i % 3 == 2:
            flag["targeting"] = {"fractional": [["on", 25], ["off", 75]]}
        out[f"flag-{i:03}"] = flag
    return {"flags": out}
for name, n in [("five", 5), ("big", 350)]:
    json.dump(flags(n), open(f"{sys.argv[1]}/{name}.json", "w"))
EOF
keys=()
for env in five big; do
    api -X PUT "$base/api/v1/projects/bench/environments/$env/flags" --data-binary "@$scratch/$env.json" >/dev/null
    keys+=("$(api -X POST "$base/api/v1/projects/bench/environments/$env/flags/keys" -d '{"name": "wrk"}' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')")
done

body='{"context": {"targetingKey": "user-4711", "email": "ada@example.com", "plan": "pro"}}'
cat >"$scratch/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
EOF

run() { # name path key
    local out
    out="$(wrk -t1 -c32 -d"${duration}s" --latency -s "$scratch/post.lua" -H "Authorization: Bearer $3" "$base$2")"
    if echo "$out" | grep -q "Non-2xx"; then
        echo "bench: $1 got errors:" >&2
        echo "$out" >&2
        exit 1
    fi
    local rps p99
    rps="$(echo "$out" | awk '/^Requests\/sec/ {printf "%d", $2}')"
    p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
    echo "| $1 | $rps | $p99 |"
}

echo "| OFREP request (wrk -t1 -c32, ${duration} s) | requests/s | p99 |"
echo "| --- | --- | --- |"
run "single flag (\`/ofrep/v1/evaluate/flags/flag-001\`, targeting rule)" /ofrep/v1/evaluate/flags/flag-001 "${keys[0]}"
run "bulk, 5 flags" /ofrep/v1/evaluate/flags "${keys[0]}"
run "bulk, 350 flags" /ofrep/v1/evaluate/flags "${keys[1]}"
echo
echo "idle RSS after start: $((idle_rss_kb / 1024)) MiB; after the runs: $(($(awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status") / 1024)) MiB"
