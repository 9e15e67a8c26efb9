#!/usr/bin/env bash
# scripts/bench-acme.sh [N] [--json]
#
# Wall time to issue N single-name certificates from one local Pebble
# (http-01, PEBBLE_VA_NOSLEEP=1, no authorization reuse) with lego, with
# certbot and with certkeeper, side by side; prints a table and the ratios
# "certkeeper vs X" = X's wall time / certkeeper's wall time (> 1: faster).
#
#   lego, certbot  one run per certificate, one after the other (each run
#                  binds 127.0.0.1:$PEBBLE_HTTP_PORT itself, so they cannot
#                  overlap); one account, registered by the first run
#                  (lego) or before the clock starts (certbot)
#   certkeeper     `certkeeper serve` in the background, the ACME issuer
#                  added before the clock starts, then N `cert create --wait`
#                  at once; the clock stops when all of them have returned
#
# One certificate of each tool is checked with `openssl verify` (chain to
# Pebble's root, with the name) as an independent verifier; every run must
# succeed for a tool's figure to count.
#
# N defaults to 50. --json prints only a JSON object on stdout (the table
# goes to stderr); otherwise the last stdout line is "RESULT {json}".
# Environment:
#   BENCH_TOOLS="lego certbot certkeeper"   which tools to run, in this order
#   CERTKEEPER_BIN=path    use this binary instead of `cargo build --release`
#   BENCH_TOOL_TIMEOUT=900 seconds a tool may take for all N certificates
#   BENCH_KEEP=1           keep the work directory (logs, certificates)
# Needs: pebble, openssl, curl (+ lego, certbot, cargo for those tools);
# `sudo scripts/install-deps.sh` installs the Debian packages.
# Exit codes: 0 all issued and verified, 1 a failure, 2 missing tool.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

N=50
JSON=0
for arg in "$@"; do
  case "$arg" in
    --json) JSON=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)
      [[ $arg =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [N] [--json]" >&2; exit 1; }
      N=$arg
      ;;
  esac
done
TOOLS=${BENCH_TOOLS:-lego certbot certkeeper}
TOOL_TIMEOUT=${BENCH_TOOL_TIMEOUT:-900}
EMAIL=bench@example.com

log() { echo "bench-acme: $*" >&2; }
die() { echo "ERROR: $*" >&2; exit 1; }
missing_dep() { echo "ERROR: $1 not found (install it: sudo scripts/install-deps.sh, or apt-get install -y $2)" >&2; exit 2; }
now_ns() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e9 }'; }

for tool in $TOOLS; do
  case "$tool" in
    lego) command -v lego >/dev/null 2>&1 || missing_dep lego lego ;;
    certbot) command -v certbot >/dev/null 2>&1 || missing_dep certbot certbot ;;
    certkeeper)
      [ -n "${CERTKEEPER_BIN:-}" ] || command -v cargo >/dev/null 2>&1 || missing_dep cargo "rustup (https://rustup.rs)"
      command -v python3 >/dev/null 2>&1 || missing_dep python3 python3
      ;;
    *) die "unknown tool '$tool' in BENCH_TOOLS (lego, certbot, certkeeper)" ;;
  esac
done
for b in openssl:openssl curl:curl timeout:coreutils; do
  command -v "${b%%:*}" >/dev/null 2>&1 || missing_dep "${b%%:*}" "${b##*:}"
done

# --- certkeeper binary (before anything runs: a release build takes a while) ---
if [[ " $TOOLS " == *" certkeeper "* ]]; then
  if [ -n "${CERTKEEPER_BIN:-}" ]; then
    CK=$CERTKEEPER_BIN
  else
    log "building certkeeper (cargo build --release -p certkeeper)"
    timeout 3600 cargo build --release -p certkeeper >&2 || die "cargo build --release -p certkeeper failed"
    CK=$REPO/target/release/certkeeper
  fi
  [ -x "$CK" ] || die "$CK is not an executable"
fi

# --- work dir, Pebble, cleanup -------------------------------------------------
BW=$(mktemp -d "${TMPDIR:-/tmp}/bench-acme.XXXXXX")
ck_jobs=()
cleanup() {
  local pid
  for pid in "${ck_jobs[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Stops Pebble, challtestsrv and certkeeper serve: each left a PID file.
  "$REPO/scripts/stop-services.sh" "$BW" || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "work directory kept: $BW"
  else
    rm -rf "$BW"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$REPO/scripts/start-pebble.sh" "$BW" > /dev/null
# shellcheck disable=SC1091
source "$BW/pebble/env.sh"
HP=$PEBBLE_HTTP_PORT

# check_cert TOOL NAME LEAF_PEM CHAIN_PEM: the independent check of one certificate.
check_cert() {
  local out
  if ! out=$(openssl verify -CAfile "$PEBBLE_ISSUER_ROOT" -untrusted "$4" -verify_hostname "$2" "$3" 2>&1); then
    die "$1: the certificate for $2 does not verify against Pebble's root: $out"
  fi
  log "$1: $2 verifies against Pebble's root (openssl verify)"
}

# first_cert FILE > leaf, rest_certs FILE > chain: split a leaf-first PEM bundle.
first_cert() { awk '{ print } /-----END CERTIFICATE-----/ { exit }' "$1"; }
rest_certs() { awk 'seen { print } /-----END CERTIFICATE-----/ { seen = 1 }' "$1"; }

declare -A WALL_NS OK
out_of_time() { [ $(( $(now_ns) - $1 )) -gt $(( TOOL_TIMEOUT * 1000000000 )) ]; }

# fail_run TOOL LOG: show why a run failed, then give up.
fail_run() {
  echo "---- last lines of $2 ----" >&2
  tail -n 20 "$2" >&2 || true
  echo "----" >&2
  die "$1 failed (log: $2; rerun with BENCH_KEEP=1 to keep it)"
}

bench_lego() {
  local d=$BW/lego i t0
  mkdir -p "$d"
  t0=$(now_ns)
  for (( i = 1; i <= N; i++ )); do
    out_of_time "$t0" && die "lego: more than ${TOOL_TIMEOUT} s for $((i - 1)) certificates"
    timeout 120 lego --server "$ACME_DIRECTORY_URL" --accept-tos --email "$EMAIL" --path "$d" \
      -d "lego-$i.bench.test" --http --http.port "127.0.0.1:$HP" run >> "$d/lego.log" 2>&1 \
      || fail_run "lego run for lego-$i.bench.test" "$d/lego.log"
  done
  WALL_NS[lego]=$(( $(now_ns) - t0 ))
  OK[lego]=$(find "$d/certificates" -name 'lego-*.bench.test.crt' ! -name '*.issuer.crt' | wc -l)
  check_cert lego lego-1.bench.test "$d/certificates/lego-1.bench.test.crt" \
    "$d/certificates/lego-1.bench.test.issuer.crt"
}

bench_certbot() {
  local d=$BW/certbot i t0
  local cb=(certbot --non-interactive --config-dir "$d/config" --work-dir "$d/work" --logs-dir "$d/logs"
    --server "$ACME_DIRECTORY_URL")
  mkdir -p "$d"
  timeout 120 "${cb[@]}" register --agree-tos -m "$EMAIL" >> "$d/certbot.log" 2>&1 \
    || fail_run "certbot register" "$d/certbot.log"
  t0=$(now_ns)
  for (( i = 1; i <= N; i++ )); do
    out_of_time "$t0" && die "certbot: more than ${TOOL_TIMEOUT} s for $((i - 1)) certificates"
    timeout 180 "${cb[@]}" certonly --standalone --preferred-challenges http-01 \
      --http-01-address 127.0.0.1 --http-01-port "$HP" -d "cb-$i.bench.test" >> "$d/certbot.log" 2>&1 \
      || fail_run "certbot certonly for cb-$i.bench.test" "$d/certbot.log"
  done
  WALL_NS[certbot]=$(( $(now_ns) - t0 ))
  OK[certbot]=$(find "$d/config/live" -name cert.pem -path '*cb-*.bench.test*' | wc -l)
  check_cert certbot cb-1.bench.test "$d/config/live/cb-1.bench.test/cert.pem" \
    "$d/config/live/cb-1.bench.test/chain.pem"
}

bench_certkeeper() {
  local d=$BW/certkeeper data port url i t0 pid failed=0 wait_s
  data=$d/data
  mkdir -p "$d/out" "$data"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  url=http://127.0.0.1:$port
  # Its command line names $BW (--data-dir), so stop-services.sh stops it;
  # env restores SIGINT, which bash leaves ignored for background jobs.
  # Listeners come from the config file only; the issuer added below names this one.
  printf 'acme_solvers:\n  pebble-http:\n    http01: {listen: "127.0.0.1:%s"}\n' "$HP" > "$d/config.yaml"
  env --default-signal=INT "$CK" serve --data-dir "$data" --listen "127.0.0.1:$port" --config "$d/config.yaml" \
    < /dev/null > "$d/serve.log" 2>&1 &
  echo $! > "$d/certkeeper.pid"
  for (( i = 0; i < 600; i++ )); do
    curl -fs --noproxy '*' --max-time 2 -o /dev/null "$url/health" && break
    kill -0 "$(cat "$d/certkeeper.pid")" 2>/dev/null || fail_run "certkeeper serve" "$d/serve.log"
    sleep 0.05
  done
  curl -fs --noproxy '*' --max-time 2 -o /dev/null "$url/health" || fail_run "certkeeper serve (no /health in 30 s)" "$d/serve.log"

  local ck=("$CK")
  local conn=(--data-dir "$data" --url "$url")
  timeout 120 "${ck[@]}" issuer add acme pebble "${conn[@]}" --directory "$ACME_DIRECTORY_URL" --email "$EMAIL" \
    --ca-bundle "$PEBBLE_TLS_CA" --challenge http-01 --solver pebble-http > "$d/issuer-add.log" 2>&1 \
    || fail_run "certkeeper issuer add acme" "$d/issuer-add.log"

  wait_s=$(( TOOL_TIMEOUT < 300 ? TOOL_TIMEOUT : 300 ))
  t0=$(now_ns)
  ck_jobs=()
  for (( i = 1; i <= N; i++ )); do
    timeout $(( wait_s + 30 )) "${ck[@]}" cert create "ck-$i.bench.test" --issuer pebble --wait --timeout "$wait_s" \
      --json "${conn[@]}" > "$d/out/$i.json" 2> "$d/out/$i.err" &
    ck_jobs+=("$!")
  done
  for (( i = 1; i <= N; i++ )); do
    pid=${ck_jobs[$((i - 1))]}
    if ! wait "$pid" || ! grep -q '"status": *"active"' "$d/out/$i.json"; then
      failed=$((failed + 1))
      [ $failed -gt 1 ] || cat "$d/out/$i.json" "$d/out/$i.err" > "$d/first-failure.log"
    fi
  done
  WALL_NS[certkeeper]=$(( $(now_ns) - t0 ))
  ck_jobs=()
  OK[certkeeper]=$(( N - failed ))
  [ $failed = 0 ] || fail_run "certkeeper: $failed of $N cert create" "$d/first-failure.log"

  local id
  id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$d/out/1.json")
  timeout 60 "${ck[@]}" cert get "$id" --pem "${conn[@]}" > "$d/ck-1.chain.pem" 2> "$d/cert-get.log" \
    || fail_run "certkeeper cert get" "$d/cert-get.log"
  first_cert "$d/ck-1.chain.pem" > "$d/ck-1.leaf.pem"
  rest_certs "$d/ck-1.chain.pem" > "$d/ck-1.issuers.pem"
  check_cert certkeeper ck-1.bench.test "$d/ck-1.leaf.pem" "$d/ck-1.issuers.pem"
}

for tool in $TOOLS; do
  log "$tool: issuing $N certificates"
  "bench_$tool"
  log "$tool: $N certificates in $(secs "${WALL_NS[$tool]}") s"
done

# --- report ---------------------------------------------------------------------
report() {
  local tool wall
  printf '%-11s %5s %10s %9s\n' tool N wall_s certs/s
  for tool in $TOOLS; do
    wall=$(secs "${WALL_NS[$tool]}")
    printf '%-11s %5d %10s %9s\n' "$tool" "$N" "$wall" "$(awk -v n="$N" -v w="$wall" 'BEGIN { printf "%.2f", n / w }')"
  done
  if [ -n "${WALL_NS[certkeeper]:-}" ]; then
    for tool in lego certbot; do
      [ -n "${WALL_NS[$tool]:-}" ] || continue
      printf 'certkeeper vs %-7s %sx (%s wall time / certkeeper wall time)\n' "$tool" \
        "$(awk -v a="${WALL_NS[$tool]}" -v b="${WALL_NS[certkeeper]}" 'BEGIN { printf "%.2f", a / b }')" "$tool"
    done
  fi
}

result_json() {
  local tool sep="" ratios="" wall
  printf '{"n": %d, "tools": {' "$N"
  for tool in $TOOLS; do
    wall=$(secs "${WALL_NS[$tool]}")
    printf '%s"%s": {"wall_s": %s, "certs_per_s": %s, "issued": %d}' "$sep" "$tool" "$wall" \
      "$(awk -v n="$N" -v w="$wall" 'BEGIN { printf "%.3f", n / w }')" "${OK[$tool]}"
    sep=", "
  done
  printf '}, "ratios": {'
  if [ -n "${WALL_NS[certkeeper]:-}" ]; then
    for tool in lego certbot; do
      [ -n "${WALL_NS[$tool]:-}" ] || continue
      ratios+="${ratios:+, }\"certkeeper_vs_$tool\": $(awk -v a="${WALL_NS[$tool]}" -v b="${WALL_NS[certkeeper]}" \
        'BEGIN { printf "%.3f", a / b }')"
    done
  fi
  printf '%s}}\n' "$ratios"
}

if [ $JSON = 1 ]; then
  report >&2
  result_json
else
  report
  echo "RESULT $(result_json)"
fi
