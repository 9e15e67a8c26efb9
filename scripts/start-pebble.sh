#!/usr/bin/env bash
# scripts/start-pebble.sh WORKDIR
#
# Starts Pebble (the ACME test CA, Debian package `pebble`) and, unless told
# to use another DNS server, pebble-challtestsrv as its DNS server, all on
# 127.0.0.1 and on free ports, as plain background processes.
#
# Environment (all optional):
#   PEBBLE_DNS                    "challtestsrv" (default): start one, every
#                                 name resolves to 127.0.0.1; or HOST:PORT of
#                                 a running server (e.g. BIND), no challtestsrv
#   PEBBLE_EAB=1                  require External Account Binding (kid-1/kid-2,
#                                 Pebble's public example keys; env.sh exports
#                                 PEBBLE_EAB_KID and PEBBLE_EAB_HMAC)
#   PEBBLE_WFE_NONCEREJECT        % of good nonces rejected (default 0 here;
#                                 Pebble's own default is 5)
#   PEBBLE_CERT_VALIDITY_SECONDS  lifetime of issued certs (Pebble: 5 years)
#   PEBBLE_HTTP_PORT              port Pebble's VA connects to for http-01
#   PEBBLE_TLS_PORT               port it connects to for tls-alpn-01
#                                 (both default to free ports; the ACME client
#                                 under test must listen there on 127.0.0.1)
#
# Files (all under WORKDIR/pebble):
#   tls-ca.pem      CA of Pebble's HTTPS listeners: trust it to talk to Pebble
#   tls.pem/.key    the listeners' certificate, a non-CA leaf signed by tls-ca
#                   (webpki rejects a self-signed CA certificate as a server's)
#   root.pem, intermediate.pem   Pebble's issuing hierarchy, new at each start
#   config.json, pebble.log, challtestsrv.log
#   pebble.pid, challtestsrv.pid (read by scripts/stop-services.sh)
#   env.sh          `source` it: ACME_DIRECTORY_URL, PEBBLE_TLS_CA, ...
#
# Prints the path of env.sh on stdout, progress on stderr.
# Exit codes: 0 ready, 1 failed to start (log tail shown), 2 missing binaries.
# Stop with: scripts/stop-services.sh WORKDIR
set -euo pipefail

READY_TIMEOUT_S=20
ATTEMPTS=3 # a free port can be taken by someone else before we bind it
EAB_KID1=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W
EAB_KID2=b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH

log() { echo "start-pebble: $*" >&2; }
die() { echo "ERROR: $*" >&2; exit 1; }
missing_dep() { echo "ERROR: $1 not found (install it: sudo scripts/install-deps.sh, or apt-get install -y $2)" >&2; exit 2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# running PID: alive and not a zombie (a child that died stays a zombie until we exit).
running() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st:0:1}" != Z ]
}

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 WORKDIR" >&2
  exit 1
fi
for b in pebble:pebble openssl:openssl curl:curl; do
  command -v "${b%%:*}" >/dev/null 2>&1 || missing_dep "${b%%:*}" "${b##*:}"
done
DNS=${PEBBLE_DNS:-challtestsrv}
if [ "$DNS" = challtestsrv ]; then
  command -v pebble-challtestsrv >/dev/null 2>&1 || missing_dep pebble-challtestsrv pebble
elif ! [[ $DNS =~ ^[0-9.]+:[0-9]+$ ]]; then
  die "PEBBLE_DNS must be 'challtestsrv' or IPv4:PORT, got '$DNS'"
fi
NONCE_REJECT=${PEBBLE_WFE_NONCEREJECT:-0}
if ! [[ $NONCE_REJECT =~ ^[0-9]+$ ]] || [ "$NONCE_REJECT" -gt 100 ]; then
  die "PEBBLE_WFE_NONCEREJECT must be 0-100"
fi
VALIDITY=${PEBBLE_CERT_VALIDITY_SECONDS:-}
[ -z "$VALIDITY" ] || [[ $VALIDITY =~ ^[0-9]+$ ]] || die "PEBBLE_CERT_VALIDITY_SECONDS must be a number"

mkdir -p "$1"
WORKDIR=$(cd "$1" && pwd)
W=$WORKDIR/pebble
mkdir -p "$W" "$W/bin"
for name in pebble challtestsrv; do
  if [ -s "$W/$name.pid" ] && running "$(cat "$W/$name.pid")"; then
    die "$name already running for $WORKDIR (pid $(cat "$W/$name.pid")); stop it with scripts/stop-services.sh $WORKDIR"
  fi
done

# Anything started here is killed again unless the whole start succeeds.
started=()
ok=0
cleanup() {
  [ "$ok" = 1 ] && return 0
  local pid
  for pid in "${started[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true # reap it, without bash's "Killed" notice
  done
  rm -f "$W/pebble.pid" "$W/challtestsrv.pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- free ports ---------------------------------------------------------------
# Ask the kernel for a port that is free for TCP, and for UDP too (the DNS
# server needs both); fall back to scanning with ss.
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - <<'EOF'
import socket
for _ in range(100):
    t = socket.socket()
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
else:
    raise SystemExit("no free TCP+UDP port")
EOF
  else
    command -v ss >/dev/null 2>&1 || missing_dep ss iproute2
    local p=$(( 20000 + RANDOM % 10000 )) i
    for (( i = 0; i < 500; i++ )); do
      if ! ss -H -ltun "sport = :$p" 2>/dev/null | grep -q .; then echo "$p"; return 0; fi
      p=$(( p + 1 ))
    done
    return 1
  fi
}

# wait_ready PID WHAT CMD...: poll CMD until it succeeds; fail early if PID dies.
wait_ready() {
  local pid=$1 deadline=$(( $(now_ms) + READY_TIMEOUT_S * 1000 ))
  shift
  while [ "$(now_ms)" -lt "$deadline" ]; do
    "$@" >/dev/null 2>&1 && return 0
    running "$pid" || return 1
    sleep 0.05
  done
  return 1
}

# start NAME LOG PROGRAM ARGS...: start in the background, record the PID.
# The program runs through a symlink under WORKDIR so that its command line
# names WORKDIR: stop-services.sh only signals processes whose command line
# does. env restores SIGINT, which bash leaves ignored for background jobs
# and which stop-services.sh sends.
start() {
  local name=$1 logfile=$2 program=$3
  shift 3
  ln -sfn "$(command -v "$program")" "$W/bin/$program"
  (cd "$W" && exec env --default-signal=INT "$W/bin/$program" "$@" < /dev/null > "$logfile" 2>&1) &
  pid=$!
  started+=("$pid")
  echo "$pid" > "$W/$name.pid"
}

show_log_and_die() {
  echo "---- last lines of $1 ----" >&2
  tail -n 30 "$1" >&2 || true
  echo "----" >&2
  die "$2"
}

CURL=(curl -fsS --noproxy '*' --max-time 5)
T0=$(now_ms)

# --- TLS for Pebble's own listeners -----------------------------------------------
# A small CA plus a leaf for localhost/127.0.0.1. Regenerated at every start:
# it is cheap, and a stale one from an older run could have expired.
cat > "$W/tls-leaf.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
P256=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
{
  openssl req -x509 "${P256[@]}" -days 30 -subj "/CN=certkeeper start-pebble TLS CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$W/tls-ca.key" -out "$W/tls-ca.pem" &&
  openssl req -new "${P256[@]}" -subj "/CN=localhost" -keyout "$W/tls.key" -out "$W/tls.csr" &&
  openssl x509 -req -days 30 -set_serial "0x$(openssl rand -hex 8)" -in "$W/tls.csr" \
    -CA "$W/tls-ca.pem" -CAkey "$W/tls-ca.key" -extfile "$W/tls-leaf.ext" -out "$W/tls.pem"
} > "$W/openssl.log" 2>&1 || show_log_and_die "$W/openssl.log" "could not create the listener certificate"

# --- challtestsrv -----------------------------------------------------------------
CHALL_MGMT=""
if [ "$DNS" = challtestsrv ]; then
  ready=0
  for (( a = 1; a <= ATTEMPTS; a++ )); do
    CDP=$(free_port) || die "no free port"
    CMP=$(free_port) || die "no free port"
    # Every listener is named: challtestsrv's defaults bind all interfaces.
    # -defaultIPv6 "": names resolve to 127.0.0.1 only, where clients listen.
    start challtestsrv "$W/challtestsrv.log" pebble-challtestsrv \
      -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 "127.0.0.1:$CDP" \
      -http01 "" -https01 "" -tlsalpn01 "" -management "127.0.0.1:$CMP"
    CHALL_MGMT=http://127.0.0.1:$CMP
    # Re-setting the default address it already has is a harmless "are you up?".
    if wait_ready "$pid" "${CURL[@]}" -X POST -d '{"ip":"127.0.0.1"}' "$CHALL_MGMT/set-default-ipv4"; then
      ready=1
      break
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ $a -ge $ATTEMPTS ] || ! grep -q 'address already in use' "$W/challtestsrv.log"; then break; fi
    log "challtestsrv found a port taken, retrying"
  done
  [ $ready = 1 ] || show_log_and_die "$W/challtestsrv.log" "pebble-challtestsrv did not start"
  DNS_ADDR=127.0.0.1:$CDP
else
  DNS_ADDR=$DNS
fi

# --- Pebble ---------------------------------------------------------------------
HP=${PEBBLE_HTTP_PORT:-$(free_port)}
TP=${PEBBLE_TLS_PORT:-$(free_port)}
EAB_JSON='"externalAccountBindingRequired": false'
if [ "${PEBBLE_EAB:-0}" = 1 ]; then
  EAB_JSON="\"externalAccountBindingRequired\": true,
    \"externalAccountMACKeys\": { \"kid-1\": \"$EAB_KID1\", \"kid-2\": \"$EAB_KID2\" }"
fi
VALIDITY_JSON=""
[ -z "$VALIDITY" ] || VALIDITY_JSON="\"certificateValidityPeriod\": $VALIDITY,"

ready=0
for (( a = 1; a <= ATTEMPTS; a++ )); do
  LP=$(free_port) || die "no free port"
  MP=$(free_port) || die "no free port"
  cat > "$W/config.json" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$LP",
    "managementListenAddress": "127.0.0.1:$MP",
    "certificate": "$W/tls.pem",
    "privateKey": "$W/tls.key",
    "httpPort": $HP,
    "tlsPort": $TP,
    "ocspResponderURL": "",
    $VALIDITY_JSON
    $EAB_JSON
  }
}
EOF
  # NOSLEEP: no random 0-5 s validation delays; AUTHZREUSE=0: every order
  # really validates.
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=$NONCE_REJECT PEBBLE_AUTHZREUSE=0 \
    start pebble "$W/pebble.log" pebble -config "$W/config.json" -dnsserver "$DNS_ADDR"
  if wait_ready "$pid" "${CURL[@]}" --cacert "$W/tls-ca.pem" -o /dev/null "https://127.0.0.1:$LP/dir"; then
    ready=1
    break
  fi
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ $a -ge $ATTEMPTS ] || ! grep -q 'address already in use' "$W/pebble.log"; then break; fi
  log "pebble found a port taken, retrying"
done
[ $ready = 1 ] || show_log_and_die "$W/pebble.log" "pebble did not start"

# Pebble makes a new issuing hierarchy at every start: fetch this one.
for what in roots/0:root intermediates/0:intermediate; do
  "${CURL[@]}" --cacert "$W/tls-ca.pem" -o "$W/${what##*:}.pem" "https://127.0.0.1:$MP/${what%%:*}" \
    || show_log_and_die "$W/pebble.log" "could not fetch Pebble's ${what%%:*}"
done

cat > "$W/env.sh" <<EOF
# Written by scripts/start-pebble.sh; source it.
export ACME_DIRECTORY_URL=https://127.0.0.1:$LP/dir
export PEBBLE_MGMT_URL=https://127.0.0.1:$MP
# Trust anchor for talking to Pebble (directory and management API):
export PEBBLE_TLS_CA=$W/tls-ca.pem
# Trust anchor and intermediate of the certificates Pebble issues:
export PEBBLE_ISSUER_ROOT=$W/root.pem
export PEBBLE_ISSUER_INTERMEDIATE=$W/intermediate.pem
export PEBBLE_DNS_ADDR=$DNS_ADDR
export CHALLTESTSRV_MGMT=$CHALL_MGMT
# Where ACME clients must serve http-01 and tls-alpn-01 (on 127.0.0.1):
export PEBBLE_HTTP_PORT=$HP
export PEBBLE_TLS_PORT=$TP
# The same trust anchor, under the names lego and certbot (python-requests) read:
export LEGO_CA_CERTIFICATES=$W/tls-ca.pem
export REQUESTS_CA_BUNDLE=$W/tls-ca.pem
EOF
if [ "${PEBBLE_EAB:-0}" = 1 ]; then
  echo "export PEBBLE_EAB_KID=kid-1 PEBBLE_EAB_HMAC=$EAB_KID1" >> "$W/env.sh"
fi

ok=1
log "pebble ready on 127.0.0.1:$LP in $(( $(now_ms) - T0 )) ms (dns $DNS_ADDR, http-01 port $HP, env: $W/env.sh)"
echo "$W/env.sh"
