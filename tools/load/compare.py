#!/usr/bin/env python3
"""The load test of issue #6 in one command: the example gateway against the bare mock.

Starts the bare mock, the bare mock with fixed extra work per request (--work), the gateway
(tools/load/gateway.toml) and the same gateway without its per-request log line, each on a port
of its own; runs alternating rounds of wrk
(tools/load/cpu.sh: requests/s and each server's own CPU per request) and then of oha at a
fixed rate (tools/load/rate.sh: latency measured from when each request was due); prints the
medians, each server's ratio to the bare mock per round, and the latency it adds; stops the
servers.

    cargo build --release --example gateway
    tools/load/compare.py                       # 5 rounds, 6 s each, work 2 and 3 µs
    tools/load/compare.py --rounds 3 --work 1,2,4 --rate 20000
    tools/load/compare.py --runtime shared      # every server on tokio's shared runtime

Run from the repository's root. Needs wrk (Debian) and, for the latency part, oha
(crates.io: cargo install oha --locked); without oha the latency part is left out. The rate,
unless given, is half the gateway's peak as oha measures it (`rate.sh PORT 0`).
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BARE, GATEWAY, QUIET = "bare mock", "gateway", "gateway, no log line"
CONFIG = "tools/load/gateway.toml"


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=6, help="per run, at least 5")
    parser.add_argument("--work", default="2,3", help="µs of extra work, comma-separated")
    parser.add_argument("--rate", type=int, help="requests/s for the latency part")
    parser.add_argument("--binary", default="target/release/examples/gateway")
    parser.add_argument(
        "--runtime",
        choices=["per-core", "shared"],
        help="every server's runtime (the gateway's `runtime` option; default: its default)",
    )
    parser.add_argument("--first-port", type=int, default=18080)
    args = parser.parse_args()
    if args.seconds < 5:
        parser.error("--seconds: at least 5 (cpu.sh reads the middle of the run)")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    if args.rate is not None and args.rate < 1:
        parser.error("--rate: at least 1 request/s")
    try:
        work = {float(w) for w in args.work.split(",") if w.strip()}
    except ValueError:
        parser.error(f"--work: not a list of numbers: {args.work}")
    if any(not 0 < w <= 1e6 for w in work):
        parser.error("--work: each from 0 (excluded) to 1000000 µs")
    args.work = sorted(work)
    return args


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        return True
    except OSError:
        return False


def wait_for(port, process, name):
    for _ in range(200):
        if process.poll() is not None:
            sys.exit(f"{name} exited at start ({process.returncode})")
        if listening(port):
            return
        time.sleep(0.05)
    sys.exit(f"{name}: nothing listens on port {port}")


def start(args, servers, configs):
    """Starts the servers into `servers` (name -> (port, process)), in the tables' order."""
    port = args.first_port
    plans = [(BARE, ["--bare", *configs["bare"]])]
    plans += [
        (f"bare + {w:g} µs work", ["--bare-work", str(w), *configs["bare"]]) for w in args.work
    ]
    plans += [
        (GATEWAY, ["--config", configs[GATEWAY]]),
        (QUIET, ["--config", configs[QUIET]]),
    ]
    for name, flags in plans:
        # cpu.sh finds its server by the port: another one there would be measured instead.
        if listening(port):
            sys.exit(f"port {port} is taken (--first-port to choose others)")
        process = subprocess.Popen(
            [args.binary, *flags, "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers[name] = (port, process)
        # One at a time: the bare mock's work is timed at its start, on a quiet machine.
        wait_for(port, process, name)
        port += 1


def run(command, pattern):
    """The command's output, matched by `pattern`."""
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8")
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    found = re.search(pattern, done.stdout)
    if found is None:
        sys.exit(f"{' '.join(command)}: output not understood:\n{done.stdout}")
    return found


def rounds(args, servers, measure):
    """`measure(port)` for every server, `args.rounds` times; each round starts one server
    further on, so that none always runs first, after the machine has rested."""
    results = {name: [] for name in servers}
    names = list(servers)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            results[name].append(measure(servers[name][0]))
            print(f"  round {r + 1}, {name}: {results[name][-1]}", file=sys.stderr)
    return results


def throughput(port, seconds):
    m = run(
        ["tools/load/cpu.sh", str(port), str(seconds)],
        r"([\d.]+) req/s\s+user\s+([\d.]+) µs/req\s+sys\s+([\d.]+) µs/req",
    )
    return {"rps": float(m[1]), "user": float(m[2]), "sys": float(m[3])}


def latency(port, rate, seconds):
    """At `rate` requests/s; 0 is the peak."""
    m = run(
        ["tools/load/rate.sh", str(port), str(rate), str(seconds)],
        r"([\d.]+) req/s\s+p50 ([\d.]+)\s+p90 ([\d.]+)\s+p99 ([\d.]+)",
    )
    return {"rps": float(m[1]), "p50": float(m[2]), "p99": float(m[4])}


def spread(values, form):
    return f"{form(statistics.median(values))} ({form(min(values))}–{form(max(values))})"


def main():
    args = arguments()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    servers = {}
    # The log line is the example's, not a layer's: the gateway without it shows what the
    # five layers alone cost. Same file otherwise (top-level keys go before the tables).
    runtime = f'runtime = "{args.runtime}"\n' if args.runtime else ""
    with open(CONFIG, encoding="utf-8") as config:
        gateway_config = config.read()
    files = {
        GATEWAY: runtime + gateway_config,
        QUIET: runtime + "log_requests = false\n" + gateway_config,
        "bare": runtime,
    }
    temporary = {}
    for name, text in files.items():
        temporary[name] = tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="gateway-")
        temporary[name].write(text)
        temporary[name].flush()
    configs = {
        GATEWAY: temporary[GATEWAY].name if runtime else CONFIG,
        QUIET: temporary[QUIET].name,
        "bare": ["--config", temporary["bare"].name] if runtime else [],
    }
    try:
        start(args, servers, configs)
        print(f"throughput: wrk -t1 -c32, {args.rounds} alternating rounds of {args.seconds} s")
        load = rounds(args, servers, lambda port: throughput(port, args.seconds))
        bare = [x["rps"] for x in load[BARE]]
        print("| server | requests/s | against the bare mock, per round | CPU per request, user + system |")
        print("|---|---|---|---|")
        for name, runs in load.items():
            ratios = [x["rps"] / b for x, b in zip(runs, bare)]
            user = statistics.median(x["user"] for x in runs)
            system = statistics.median(x["sys"] for x in runs)
            against = "—" if name == BARE else spread(ratios, lambda v: f"{v:.2f}×")
            print(
                f"| {name} | {spread([x['rps'] for x in runs], lambda v: f'{v / 1000:.1f} k')} "
                f"| {against} | {user:.1f} + {system:.1f} µs |"
            )
        if shutil.which(os.environ.get("OHA", "oha")) is None:
            print("\nlatency: left out, oha is not installed (cargo install oha --locked)")
            return
        rate = args.rate
        if rate is None:
            gateway_port = servers[GATEWAY][0]
            peak = latency(gateway_port, 0, args.seconds)["rps"]
            rate = max(100, int(peak / 2 // 100 * 100))
            print(f"\nthe gateway's peak under oha: {peak / 1000:.1f} k/s; half of it: {rate}/s")
        print(f"\nlatency: oha at {rate} requests/s, {args.rounds} alternating rounds of {args.seconds} s")
        held = rounds(args, servers, lambda port: latency(port, rate, args.seconds))
        print("| server | p50 | p99 | added p50, per round | added p99, per round |")
        print("|---|---|---|---|---|")
        for name, runs in held.items():
            added50 = [x["p50"] - b["p50"] for x, b in zip(runs, held[BARE])]
            added99 = [x["p99"] - b["p99"] for x, b in zip(runs, held[BARE])]
            ms = lambda v: f"{v:.2f} ms"  # noqa: E731
            added = lambda values: "—" if name == BARE else spread(values, lambda v: f"{v:+.2f}")  # noqa: E731
            print(
                f"| {name} | {spread([x['p50'] for x in runs], ms)} | {spread([x['p99'] for x in runs], ms)} "
                f"| {added(added50)} | {added(added99)} |"
            )
    finally:
        for _, process in servers.values():
            process.terminate()
        for _, process in servers.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for file in temporary.values():
            file.close()


if __name__ == "__main__":
    main()
