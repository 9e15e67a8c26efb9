#!/usr/bin/env bash
# scripts/stop-services.sh WORKDIR
#
# Stops the services that the scripts/start-*.sh scripts started in WORKDIR.
# Each of them records its main process in WORKDIR/<service>/<name>.pid
# (today only pg/postgres.pid).
#
# Per service: SIGINT (for postgres: "fast shutdown", which ends sessions and
# exits cleanly), wait up to 10 s, then SIGKILL. Only PIDs from those files
# are signalled, and only if the process still looks like ours (its command
# line mentions WORKDIR), so a PID reused by an unrelated process is left
# alone. Removes only the PID files; deleting WORKDIR is the caller's job.
#
# Safe to call twice, or on a WORKDIR where nothing was started.
set -euo pipefail

STOP_TIMEOUT_S=10

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 WORKDIR" >&2
  exit 1
fi
[ -d "$1" ] || exit 0 # nothing was ever started there
WORKDIR=$(cd "$1" && pwd)

log() { echo "stop-services: $*" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ours PID: is PID alive and started from this WORKDIR?
ours() {
  local cmdline
  [ -r "/proc/$1/cmdline" ] || return 1
  cmdline=$(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$WORKDIR/"* ]]
}

# A zombie has an empty cmdline and counts as gone (its parent reaps it).
alive() { ours "$1"; }

rc=0
shopt -s nullglob
for pidfile in "$WORKDIR"/*/*.pid; do
  name=$(basename "$pidfile" .pid)
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if ! [[ $pid =~ ^[0-9]+$ ]]; then
    log "$name: ignoring $pidfile (no PID in it)"
    rm -f "$pidfile"
    continue
  fi
  if ! ours "$pid"; then
    # Already gone (or the PID now belongs to someone else): nothing to do.
    rm -f "$pidfile"
    continue
  fi

  kill -INT "$pid" 2>/dev/null || true
  deadline=$(( $(now_ms) + STOP_TIMEOUT_S * 1000 ))
  while alive "$pid" && [ "$(now_ms)" -lt "$deadline" ]; do
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name (pid $pid) did not stop within ${STOP_TIMEOUT_S} s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
    if alive "$pid"; then
      log "ERROR: $name (pid $pid) still running after SIGKILL"
      rc=1
      continue
    fi
  fi
  log "$name (pid $pid) stopped"
  rm -f "$pidfile"
done
exit $rc
