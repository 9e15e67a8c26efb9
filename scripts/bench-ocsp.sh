#!/usr/bin/env bash
# scripts/bench-ocsp.sh [--certs N] [--concurrency C] [--seconds S] [--json]
#
# The local CA's OCSP responder against `openssl ocsp` as a responder, on the
# same certificates, in one run: `certkeeper-bench ocsp` starts `certkeeper
# serve` as a child process, issues N certificates (default 1000, every 10th
# revoked), writes an OpenSSL index.txt with the same serials and starts
# `openssl ocsp -index … -multi 2` signing with the intermediate. It then
# measures, one after the other: (a) certkeeper answering nonce-less requests
# from its cache, (b) certkeeper signing nonce requests fresh, (c) openssl
# answering the nonce requests; responses/s, p50/p99 latency, the ratios
# (a)/(c) and (b)/(c), and the goals (cached ≥ 15000/s, ≥ 20× openssl).
# A benchmark: it prints figures, it asserts nothing about timings.
#
# `openssl ocsp -port` binds every interface, so everything (server, openssl,
# load) runs inside a fresh network namespace with only loopback up. That
# needs root (or CAP_SYS_ADMIN), unshare (util-linux) and ip (iproute2).
#
# Builds the release benchmark binary (certkeeper-bench, crate ck-bench) first
# unless CERTKEEPER_BENCH_BIN names one.
set -euo pipefail

die() { echo "ERROR: $*" >&2; exit 2; }

command -v unshare >/dev/null 2>&1 || die "unshare not found: install util-linux (apt-get install -y util-linux)"
command -v ip >/dev/null 2>&1 || die "ip not found: install iproute2 (apt-get install -y iproute2)"
command -v openssl >/dev/null 2>&1 || die "openssl not found: install it (apt-get install -y openssl)"
if [[ $(id -u) -ne 0 ]]; then
    die "a private network namespace needs root: run it with sudo (openssl ocsp -port binds every interface)"
fi
if ! unshare -n -- true 2>/dev/null; then
    die "unshare -n failed: this environment does not allow new network namespaces (needs CAP_SYS_ADMIN)"
fi

if [[ -n "${CERTKEEPER_BENCH_BIN:-}" ]]; then
    bin="$CERTKEEPER_BENCH_BIN"
else
    root="$(cd "$(dirname "$0")/.." && pwd)"
    (cd "$root" && cargo build --release --locked -p ck-bench >&2)
    bin="${CARGO_TARGET_DIR:-$root/target}/release/certkeeper-bench"
fi
[[ -x "$bin" ]] || die "$bin is not an executable"

exec unshare -n -- bash -c 'ip link set lo up && exec "$@"' bench "$bin" ocsp "$@"
