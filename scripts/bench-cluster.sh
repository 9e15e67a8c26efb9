#!/usr/bin/env bash
# scripts/bench-cluster.sh [--count N] [--nodes 1,2,3] [--kills K] [--concurrency C] [--json]
#
# Several `certkeeper serve` nodes on one throwaway PostgreSQL, on 127.0.0.1:
# issuance throughput through the API with 1, 2 and 3 nodes (local CA), with
# each node's share of the claimed jobs, then the leader killed with SIGKILL
# K times (default 20) and the time until another node leads: min, p50, p90,
# max. A benchmark: it prints figures, it asserts nothing.
#
# PostgreSQL comes from scripts/start-postgres.sh (stopped at exit) unless
# CERTKEEPER_TEST_POSTGRES_URL names a server whose user may create databases.
# Builds the release benchmark binary (certkeeper-bench, crate ck-bench) first
# unless CERTKEEPER_BENCH_BIN names one.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -n "${CERTKEEPER_BENCH_BIN:-}" ]]; then
    bin="$CERTKEEPER_BENCH_BIN"
else
    (cd "$root" && cargo build --release --locked -p ck-bench >&2)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/certkeeper-bench"
fi

url="${CERTKEEPER_TEST_POSTGRES_URL:-}"
if [[ -z "$url" ]]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster.XXXXXX")"
    trap '"$root/scripts/stop-services.sh" "$work" || true; rm -rf "$work"' EXIT
    url="$("$root/scripts/start-postgres.sh" "$work")"
fi

"$bin" cluster --database "$url" "$@"
