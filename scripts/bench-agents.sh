#!/usr/bin/env bash
# scripts/bench-agents.sh [--agents N] [--duration SECONDS] [--json] [--database sqlite|postgres://...]
#
# One control plane under a simulated agent fleet (default 10,000 agents, each
# heartbeating and polling for work every 30 s, spread evenly), on 127.0.0.1:
# `certkeeper-bench agents` starts `certkeeper serve` as a child process, sets
# up one agent-bound certificate per agent (CSR sent, issued), then measures
# the server's CPU (/proc/<pid>/stat) and the poll and heartbeat latencies.
# A benchmark: it prints figures and the goal to compare with, it asserts
# nothing.
#
# Builds the release benchmark binary (certkeeper-bench, crate ck-bench) first
# unless CERTKEEPER_BENCH_BIN names one.
set -euo pipefail

if [[ -n "${CERTKEEPER_BENCH_BIN:-}" ]]; then
    bin="$CERTKEEPER_BENCH_BIN"
else
    root="$(cd "$(dirname "$0")/.." && pwd)"
    (cd "$root" && cargo build --release --locked -p ck-bench >&2)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/certkeeper-bench"
fi

exec "$bin" agents "$@"
