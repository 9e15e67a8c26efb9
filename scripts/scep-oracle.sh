#!/usr/bin/env bash
# scripts/scep-oracle.sh [--count N] [--debug]
#
# Security finding #4 (issue 18): is the SCEP RA key a padding oracle? Starts
# `certkeeper serve` on 127.0.0.1 with SCEP on (no PKIOperation rate limit, so
# one address may send them all), then runs the `scep_oracle` example twice:
# N envelopes (default 1000) whose RSA key transport block has valid PKCS#1
# v1.5 padding (around a key that does not open the content, as an attacker's
# modified ciphertexts have) and N with invalid padding, in random order; the
# second run names an unsupported content cipher (the case that answered badAlg
# after a good padding and badMessageCheck after a bad one). It prints, per
# group, the answers (HTTP status / pkiStatus / failInfo), the answer sizes and
# the latency percentiles, and a two-sample Kolmogorov–Smirnov test of the
# latencies.
#
# Exits 1 when the groups' answers differ in status, failInfo or size (an
# oracle); timings are reported, not asserted. Release build unless --debug;
# CERTKEEPER_BIN and SCEP_ORACLE_BIN name prebuilt binaries.
set -euo pipefail

count=1000
profile=release
while [[ $# -gt 0 ]]; do
    case "$1" in
        --count) count="$2"; shift 2 ;;
        --debug) profile=debug; shift ;;
        *) echo "usage: $0 [--count N] [--debug]" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}/$profile"
if [[ -z "${CERTKEEPER_BIN:-}" || -z "${SCEP_ORACLE_BIN:-}" ]]; then
    flags=(--locked -p certkeeper --bin certkeeper --example scep_oracle)
    [[ $profile == release ]] && flags+=(--release)
    (cd "$root" && cargo build "${flags[@]}" >&2)
fi
bin="${CERTKEEPER_BIN:-$target/certkeeper}"
oracle="${SCEP_ORACLE_BIN:-$target/examples/scep_oracle}"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

challenge="oracle-$RANDOM$RANDOM"
printf '%s\n' "$challenge" > "$work/scep.secret"
cat > "$work/config.yaml" <<YAML
scep:
  challenge_file: $work/scep.secret
  allowed_suffixes: [devices.test]
  pki_operations_per_minute: 0
YAML
CERTKEEPER_LOG=error "$bin" serve --data-dir "$work/data" --listen 127.0.0.1:0 \
    --config "$work/config.yaml" 2> "$work/server.log" &
server_pid=$!
for _ in $(seq 1 300); do
    [[ -s "$work/data/server.url" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "ERROR: the server stopped" >&2; exit 2; }
    sleep 0.1
done
[[ -s "$work/data/server.url" ]] || { echo "ERROR: the server did not start in 30 s" >&2; exit 2; }
url="$(cat "$work/data/server.url")"
echo "server: $url ($profile build, $(nproc) cores)"

status=0
"$oracle" --url "$url" --count "$count" --challenge "$challenge" || status=1
echo
"$oracle" --url "$url" --count "$count" --challenge "$challenge" --unknown-cipher || status=1
exit "$status"
