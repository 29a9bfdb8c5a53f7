#!/usr/bin/env bash
# Load one server with wrk and report its requests/s, its own CPU per request (user and system,
# from /proc/<pid>/stat over the run's middle) and wrk's p50/p99.
#   tools/load/cpu.sh PORT [SECONDS]      (run from the repository's root; at least 5 s)
# WRK_PREFIX: command words to run wrk under, e.g. WRK_PREFIX="chrt -b 0" (a batch task, whose
# wake-ups do not preempt the server).
set -euo pipefail
port=${1:?usage: tools/load/cpu.sh PORT [SECONDS]}
seconds=${2:-7}
read -ra prefix <<<"${WRK_PREFIX:-}"
pid=$(ss -ltnp "sport = :$port" | { grep -o 'pid=[0-9]*' || true; } | cut -d= -f2 | sort -u | head -1)
if [ -z "$pid" ]; then
  echo "nothing listens on port $port" >&2
  exit 1
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"${prefix[@]}" wrk -t1 -c32 -d"${seconds}s" --latency -s tools/load/chat.lua \
  "http://127.0.0.1:$port/v1/chat/completions" >"$out" &
wrk_pid=$!
sleep 1
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
sleep $((seconds - 2))
read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
wait "$wrk_pid"
rps=$(awk '/Requests\/sec/ {print $2}' "$out")
p50=$(awk '$1 == "50%" {print $2}' "$out")
p99=$(awk '$1 == "99%" {print $2}' "$out")
if [ -z "$rps" ]; then
  echo "wrk reported no rate:" >&2
  cat "$out" >&2
  exit 1
fi
# Refusals and broken connections are cheaper than answers: counted, they would flatter the rate.
if grep -Eq 'Non-2xx or 3xx responses|Socket errors' "$out"; then
  echo "not every request was answered 200:" >&2
  cat "$out" >&2
  exit 1
fi
ticks=$(getconf CLK_TCK)
python3 -c "
rps, span, hz = $rps, $((seconds - 2)), $ticks
user = ($u2 - $u1) / hz / span / rps * 1e6
system = ($s2 - $s1) / hz / span / rps * 1e6
print(f'port $port: {rps:9.0f} req/s  user {user:5.1f} µs/req  sys {system:5.1f} µs/req  p50 $p50  p99 $p99')"
