#!/usr/bin/env bash
# scripts/start-postgres.sh WORKDIR [PORT]
#
# Starts a throwaway PostgreSQL 15 cluster for the tests, as a plain
# background process (no systemd, no pg_ctlcluster), tuned for speed rather
# than durability:
#   - superuser "postgres", trust auth, UTF8, C.UTF-8 locale
#   - TCP on 127.0.0.1:PORT only; unix socket in WORKDIR/pg/sock
#   - fsync/synchronous_commit/full_page_writes off, max_connections=200
# PORT defaults to a free port picked at random (so several runs can coexist).
#
# Files (all under WORKDIR/pg):
#   data/          the cluster           postgres.log   server output
#   sock/          unix socket dir       initdb.log     initdb output
#   postgres.pid   postmaster PID (read by scripts/stop-services.sh)
#   env.sh         `source` it: exports CERTKEEPER_TEST_POSTGRES_URL
#
# Prints the connection URL on stdout, progress on stderr.
# Exit codes: 0 ready, 1 failed to start (log tail shown), 2 missing binaries.
# Stop it with: scripts/stop-services.sh WORKDIR
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
READY_TIMEOUT_S=20

log() { echo "start-postgres: $*" >&2; }
die() { echo "ERROR: $*" >&2; exit 1; }
missing_dep() { echo "ERROR: $1 not found (install it: sudo scripts/install-deps.sh, or apt-get install -y $2)" >&2; exit 2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# running PID: alive and not a zombie. `kill -0` is not enough: a postmaster
# that died while we are still its parent stays a zombie until we exit.
running() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st:0:1}" != Z ]
}

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ -z "$1" ]; then
  echo "usage: $0 WORKDIR [PORT]" >&2
  exit 1
fi

for b in initdb postgres pg_isready; do
  [ -x "$PGBIN/$b" ] || missing_dep "$PGBIN/$b" postgresql-15
done
command -v ss >/dev/null 2>&1 || missing_dep "ss" iproute2

# --- work dir -----------------------------------------------------------------
mkdir -p "$1"
WORKDIR=$(cd "$1" && pwd)
W=$WORKDIR/pg
DATA=$W/data
SOCK=$W/sock
PIDFILE=$W/postgres.pid

# Refuse to start a second postmaster on the same data dir.
if [ -s "$PIDFILE" ] && running "$(cat "$PIDFILE")"; then
  die "postgres already running for $WORKDIR (pid $(cat "$PIDFILE")); stop it with scripts/stop-services.sh $WORKDIR"
fi

# Unix socket paths are limited to 107 bytes; ".s.PGSQL.NNNNN" needs 15 of them.
[ $(( ${#SOCK} + 15 )) -le 107 ] || die "WORKDIR path too long for a unix socket ($SOCK); use a shorter one"

mkdir -p "$W" "$SOCK"

if [ "$(id -u)" = 0 ]; then
  # postgres refuses to run as root: run it as the "postgres" system user
  # (created by the postgresql-15 package). setpriv execs, so the PID of the
  # background job is the postmaster's own PID.
  command -v setpriv >/dev/null 2>&1 || missing_dep "setpriv" util-linux
  id postgres >/dev/null 2>&1 || missing_dep "user 'postgres'" postgresql-15
  AS=(setpriv --reuid=postgres --regid=postgres --init-groups --reset-env)
  # mktemp -d makes 0700 dirs: the postgres user must be able to traverse
  # WORKDIR (and every parent) to reach its data dir.
  chmod o+x "$WORKDIR"
  chown -R postgres:postgres "$W"
  if ! "${AS[@]}" test -x "$W" || ! "${AS[@]}" test -w "$W"; then
    die "user postgres cannot write $W; a parent directory of $WORKDIR is not traversable by others (chmod o+x it)"
  fi
else
  # Not root: run postgres as ourselves.
  AS=()
fi

# --- pick a port ----------------------------------------------------------------
port_free() { ! ss -H -ltn "sport = :$1" 2>/dev/null | grep -q .; }
pick_port() {
  # Random start below the kernel's ephemeral range (32768+) so we do not
  # compete with outgoing connections; scan upwards from there.
  local p=$(( 20000 + RANDOM % 10000 )) i
  for (( i = 0; i < 500; i++ )); do
    port_free "$p" && { echo "$p"; return 0; }
    p=$(( p + 1 ))
  done
  return 1
}

if [ -n "${2:-}" ]; then
  if ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
    die "PORT must be a number 1-65535, got '$2'"
  fi
  PORT=$2
  port_free "$PORT" || die "port 127.0.0.1:$PORT is already in use"
  attempts=1 # the caller chose the port: do not silently use another one
else
  attempts=5 # another process may grab the port between our check and bind
fi

# --- initdb (once per WORKDIR) ------------------------------------------------
if [ ! -s "$DATA/PG_VERSION" ]; then
  t=$(now_ms)
  # --reset-env clears the environment, so LC_ALL goes in via env(1).
  if ! "${AS[@]}" env LC_ALL=C.UTF-8 "$PGBIN/initdb" -D "$DATA" -U postgres -A trust \
      -E UTF8 --locale=C.UTF-8 --no-sync --no-instructions > "$W/initdb.log" 2>&1; then
    tail -n 20 "$W/initdb.log" >&2
    die "initdb failed (full log: $W/initdb.log)"
  fi
  log "initdb done in $(( $(now_ms) - t )) ms"
fi

# --- start and wait -------------------------------------------------------------
t=$(now_ms)
ready=0
for (( a = 1; a <= attempts; a++ )); do
  if [ $attempts -gt 1 ]; then PORT=$(pick_port) || die "no free TCP port found in 20000-30499"; fi

  # stdin from /dev/null: CI runs us without a stdin. Output goes to the log,
  # not to our stdout, so a caller reading our output does not wait on postgres.
  "${AS[@]}" "$PGBIN/postgres" -D "$DATA" -p "$PORT" -k "$SOCK" \
    -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200 \
    < /dev/null > "$W/postgres.log" 2>&1 &
  pid=$!
  echo "$pid" > "$PIDFILE"

  deadline=$(( $(now_ms) + READY_TIMEOUT_S * 1000 ))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    if "$PGBIN/pg_isready" -q -t 2 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres; then
      ready=1
      break
    fi
    running "$pid" || break # postmaster died: no point waiting
    sleep 0.1
  done
  [ $ready = 1 ] && break

  if ! running "$pid" && grep -q 'could not bind\|Address already in use' "$W/postgres.log" \
      && [ $a -lt $attempts ]; then
    log "port $PORT was taken meanwhile, retrying on another port"
    continue
  fi
  break
done

if [ $ready != 1 ]; then
  if running "$pid"; then
    why="postgres did not become ready on 127.0.0.1:$PORT within ${READY_TIMEOUT_S} s"
    # Do not leave a half-started server behind.
    kill -KILL "$pid" 2>/dev/null || true
  else
    why="postgres exited during startup (port $PORT)"
  fi
  rm -f "$PIDFILE"
  echo "---- last lines of $W/postgres.log ----" >&2
  tail -n 30 "$W/postgres.log" >&2 || true
  echo "----" >&2
  die "$why"
fi

URL="postgres://postgres@127.0.0.1:$PORT/postgres"
cat > "$W/env.sh" <<EOF
# Written by scripts/start-postgres.sh; source it.
# Throwaway cluster: pid $pid, data $DATA, unix socket dir $SOCK
export CERTKEEPER_TEST_POSTGRES_URL=$URL
EOF

log "postgres ready on 127.0.0.1:$PORT in $(( $(now_ms) - t )) ms (pid $pid, env: $W/env.sh)"
echo "$URL"
