#!/usr/bin/env bash
# Load one server at a fixed rate with oha (crates.io: `cargo install oha --locked`), the load
# test's chat over 32 connections, and report the rate held and the latency percentiles,
# measured from when each request was due (`--latency-correction`), so that a server that falls
# behind is not flattered by the client waiting for it.
#   tools/load/rate.sh PORT REQUESTS_PER_SECOND [SECONDS]      (run from the repository's root)
#   tools/load/rate.sh PORT 0 [SECONDS]                        (no rate: the peak)
set -euo pipefail
port=${1:?usage: tools/load/rate.sh PORT REQUESTS_PER_SECOND [SECONDS]}
rate=${2:?usage: tools/load/rate.sh PORT REQUESTS_PER_SECOND [SECONDS]}
seconds=${3:-8}
# The request and the key, as wrk sends them.
body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" tools/load/chat.lua)
auth=$(sed -n 's/^wrk.headers\["Authorization"\] = "\(.*\)"$/\1/p' tools/load/chat.lua)
if [ -z "$body" ] || [ -z "$auth" ]; then
  echo "tools/load/chat.lua: no body or no Authorization header found" >&2
  exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
args=(-z "${seconds}s" -c 32 --no-tui --output-format json)
if [ "$rate" != 0 ]; then
  args+=(-q "$rate" --latency-correction)
fi
"${OHA:-oha}" "${args[@]}" -m POST -T application/json \
  -H "Authorization: $auth" -d "$body" \
  "http://127.0.0.1:$port/v1/chat/completions" >"$out"
python3 - "$out" "$port" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution", {})
if set(codes) != {"200"}:
    sys.exit(f"not every answer was 200: {codes}")
p = {k: v * 1e3 for k, v in d["latencyPercentiles"].items()}
print(f"port {sys.argv[2]}: {d['summary']['requestsPerSec']:9.0f} req/s  "
      f"p50 {p['p50']:.3f}  p90 {p['p90']:.3f}  p99 {p['p99']:.3f}  p99.9 {p['p99.9']:.3f} ms  {codes}")
PY
