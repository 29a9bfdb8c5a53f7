#!/usr/bin/env bash
# Load one server with wrk and report, per request, each of its threads' context switches
# (voluntary: it slept; involuntary: it was preempted) and CPU, and wrk's, over the run's middle:
# where a server's cost in scheduling goes, which in-process benches do not see.
#   tools/load/sched.sh PORT [SECONDS]      (run from the repository's root; at least 5 s)
set -euo pipefail
port=${1:?usage: tools/load/sched.sh PORT [SECONDS]}
seconds=${2:-7}
if [ "$seconds" -lt 5 ]; then
  echo "SECONDS: at least 5 (the run's middle is read)" >&2
  exit 1
fi
pid=$(ss -ltnp "sport = :$port" | { grep -o 'pid=[0-9]*' || true; } | cut -d= -f2 | sort -u | head -1)
if [ -z "$pid" ]; then
  echo "nothing listens on port $port" >&2
  exit 1
fi
out=$(mktemp)
before=$(mktemp)
after=$(mktemp)
trap 'rm -f "$out" "$before" "$after"' EXIT
wrk -t1 -c32 -d"${seconds}s" -s tools/load/chat.lua \
  "http://127.0.0.1:$port/v1/chat/completions" >"$out" &
wrk_pid=$!
sleep 1
# One line a thread, by thread id (workers share a name): id, who, name, voluntary and
# involuntary switches, user + system ticks.
snapshot() {
  for who in "$pid:server" "$wrk_pid:wrk"; do
    for task in /proc/"${who%%:*}"/task/*; do
      printf '%s %s %s %s %s\n' "${task##*/}" "${who#*:}" "$(tr ' ' '_' <"$task/comm")" \
        "$(awk '/^(non)?voluntary_ctxt_switches/ {printf "%s ", $2}' "$task/status")" \
        "$(awk '{print $14 + $15}' "$task/stat")"
    done
  done
}
snapshot >"$before"
sleep $((seconds - 2))
snapshot >"$after"
wait "$wrk_pid"
rps=$(awk '/Requests\/sec/ {print $2}' "$out")
if [ -z "$rps" ]; then
  echo "wrk reported no rate:" >&2
  cat "$out" >&2
  exit 1
fi
echo "port $port: $rps req/s; per request, over $((seconds - 2)) s:"
echo "  thread                 voluntary  involuntary  CPU µs"
# Threads there at both ends, matched by id.
join <(sort "$before") <(sort "$after") | awk -v rps="$rps" -v span=$((seconds - 2)) -v hz="$(getconf CLK_TCK)" '
  {
    n = rps * span
    printf "  %-6s %-15s %9.4f  %11.4f  %6.2f\n", $2, $3, ($9 - $4) / n, ($10 - $5) / n, ($11 - $6) / hz / n * 1e6
  }'
